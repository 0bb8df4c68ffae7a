"""gluondet serve: a trained run or an export folder behind an HTTP JSON API (gluondet.serve)."""
import socket
from pathlib import Path

import click

from ..errors import GluondetError
from ..extras import install_line
from ..ranges import check_ranges
from .detect import _resolve_thresh
from .options import box_options, dtype_option, which_option

# Seconds uvicorn waits on SIGTERM for the requests in flight before it cancels them: a batch of the
# largest model on a CPU takes seconds, an upload from a slow client longer.
GRACE_S = 30


@click.command(name="serve")
@click.argument("source", type=click.Path(exists=True), metavar="RUN|EXPORT_DIR")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens it to the network (use --token there).")
@click.option("--port", default=8080, show_default=True, type=int,
              help="Port to listen on; 0 takes a free one (the 'listening on' line names it).")
@click.option("--max-batch", type=int, metavar="N",
              help="At most this many images per forward pass, gathered across requests "
                   "[default: 8 on GPUs; 1 on CPUs, where a forward of 8 images costs 8 of one "
                   "and batching only stalled the pipeline (README, 'gluondet serve')].")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=float,
              help="How long the first image of a batch waits for others to join it.")
@click.option("--max-queue", default=64, show_default=True, type=int,
              help="Images waiting or running at most; more is answered 503 (try again).")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=float,
              help="Largest request body (all its images); a larger one is answered 413 unread.")
@click.option("--token", envvar="GLUONDET_SERVE_TOKEN", metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' on /detect and /model (401 without); "
                   "also read from $GLUONDET_SERVE_TOKEN, which other users cannot see in ps.")
@click.option("--ctx", default="cpu", show_default=True, metavar="DEVICES",
              help="Devices, e.g. cpu or gpu0,gpu1: each batch is spread over them.")
@which_option()
@box_options("Answer with boxes")
@dtype_option
def serve(source, host, port, max_batch, max_wait_ms, max_queue, max_upload_mb, token, ctx, which, thresh,
          max_boxes, dtype):
    """Serve a trained run (or an export folder) over HTTP: POST /detect, GET /model, /health, and a
    page at / to try it.

    \b
    Examples:
      gluondet serve runs/helmet_voc-ssd_512_vgg16_atrous        # http://127.0.0.1:8080/
      curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg http://127.0.0.1:8080/detect
      curl -F a=@one.jpg -F b=@two.png http://127.0.0.1:8080/detect   # several images at once
      GLUONDET_SERVE_TOKEN=s3cret gluondet serve deploy/ --host 0.0.0.0 --max-batch 16

    Answers carry each image's boxes in its own pixels, in gluondet detect --json's shape. Requests
    are batched across clients (--max-batch, --max-wait-ms); SIGTERM or Ctrl-C stops taking new
    connections, answers what is in flight and exits 0.
    """
    from ..runtime import parse_ctx_spec

    if max_batch is None:
        max_batch = 8 if any(kind == "gpu" for kind, _ in parse_ctx_spec(ctx)) else 1
    check_ranges({"port": port, "max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue,
                  "max_upload_mb": max_upload_mb, "max_boxes": max_boxes,
                  "thresh": None if thresh == "best" else thresh})
    if max_queue < max_batch:
        raise GluondetError(f"--max-queue {max_queue} is less than --max-batch {max_batch}: no batch could fill")
    source = Path(source)
    thresh = _resolve_thresh(thresh, source, source.parent if source.is_file() else source, which)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise GluondetError(f"gluondet serve needs the serve extra ({e.name} is missing): "
                            f"{install_line('serve')}") from None
    sock = _listen(host, port)  # before MXNet loads: a port in use is said at once, and clients queue

    from ..runtime import configure_engine, make_contexts

    configure_engine(ctx)
    contexts = make_contexts(ctx)
    # GluonCV's data package switches Pillow to accept truncated files when it is imported; import it
    # now, before any upload is decoded, rather than while the model loads beside the decoding threads
    import gluoncv.data  # noqa: F401

    from ..serve import ServeSettings, run_server

    settings = ServeSettings(thresh=thresh, max_boxes=max_boxes, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             max_queue=max_queue, max_upload_mb=max_upload_mb, token=token or None)

    def load():
        from ..predict import Detector

        detector = Detector.load(source, ctx=contexts, which=which, max_boxes=max_boxes)
        detector.set_dtype(dtype)
        return detector

    run_server(sock, load, settings, source=source, grace_s=GRACE_S)


def _listen(host, port):
    """A listening socket on (host, port); in use or not ours is one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise GluondetError(f"--host {host}: not an address to listen on ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise GluondetError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    return sock
