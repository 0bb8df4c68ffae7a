"""The HTTP API of ``gluondet serve``: a Starlette app around one Detector and its Batcher.

- ``POST /detect``: one image as the body (``image/*`` or ``application/octet-stream``), or
  several as ``multipart/form-data`` (every file part is an image) -> ``{"thresh", "images":
  [record, ...]}``, each record in ``gluondet detect --json``'s shape (``predict.image_record``:
  file, width, height, boxes in the image's own pixels; a mask model's boxes carry a COCO RLE
  ``segmentation``).
- ``GET /model``: classes, family, input size, source, versions, the server's settings.
- ``GET /health``: 200 once the model is loaded and the server takes work, else 503 (loading,
  failed, shutting down); both with the queue depth and counts. Open without the token.
- ``GET /``: the page (``page/index.html``) that sends a dropped image and draws the boxes.

Every refusal is one line of JSON, ``{"error": "..."}``, with its status: 401 (``--token`` given
and no ``Authorization: Bearer`` with it), 413 (upload over ``--max-upload-mb``, checked from
Content-Length and again while the body streams in; or more pixels than Pillow's limit), 415
(another content type), 400 (not an image, a truncated one, an empty body, a bad form), 503
(loading, queue full, shutting down), 500 (the model failed: the server goes on). Images are
decoded by ``gluondet.image`` on a few threads of their own, so the event loop only moves bytes.
"""
import asyncio
import concurrent.futures
import contextlib
import hmac
import sys
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..image import ImageReadError, ImageTooLargeError, read_image_bytes
from ..predict import image_record
from ..progress import say
from ..runtime import usable_cpus
from .batcher import Batcher, Busy, Draining, ModelError

PAGE = Path(__file__).with_name("page") / "index.html"
RAW_TYPES = ("application/octet-stream",)  # besides image/*
MULTIPART = "multipart/form-data"


@dataclass
class ServeSettings:
    """What ``gluondet serve``'s options set (their defaults are the CLI's)."""

    thresh: float = 0.5
    max_boxes: int = 100
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64  # images waiting or running; more is 503
    max_upload_mb: float = 20.0
    max_images: int = 32  # file parts in one multipart request
    token: Optional[str] = None

    @property
    def max_upload_bytes(self):
        return int(self.max_upload_mb * 1024 * 1024)


class Refused(Exception):
    """A request answered with ``status`` and the one line ``message``."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, " ".join(str(message).split()), headers


def run_batch(detector, payloads, settings):
    """On the model's thread: records for [(name, image), ...], one forward per batch."""

    images = [image for _, image in payloads]
    # One forward of exactly these images, not padded to max_batch as detect_files pads: a lone
    # request would pay for max_batch images. The SSD graph re-plans its memory when the batch size
    # changes, which cost far less than the padding on the tiny SSD (README, "gluondet serve").
    found = detector.detect(images, thresh=settings.thresh, max_boxes=settings.max_boxes,
                            batch_size=len(images))
    return [image_record(name, image, dets, detector.classes) for (name, image), dets in zip(payloads, found)]


def create_app(load_detector: Callable, settings: ServeSettings, on_ready: Callable = None,
               on_load_error: Callable = None):
    """The ASGI app. ``load_detector()`` is called once, on the model's thread, when the app
    starts; ``on_ready(detector)`` or ``on_load_error(exception)`` are called on the event loop when
    it has returned."""
    batcher = Batcher(lambda det, payloads: run_batch(det, payloads, settings), max_batch=settings.max_batch,
                      max_wait=settings.max_wait_ms / 1000.0, max_queue=settings.max_queue)
    decoder = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, usable_cpus()),
                                                    thread_name_prefix="gluondet-decode")
    page = PAGE.read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        from PIL import Image

        # read_image_bytes refuses these images itself (413); Pillow's warning would only fill the log
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        batcher.start(load_detector)
        watcher = asyncio.get_running_loop().create_task(_watch_load(batcher, on_ready, on_load_error))
        try:
            yield
        finally:
            await batcher.close()  # uvicorn has waited for the requests in flight; this drains the rest
            await watcher
            decoder.shutdown(wait=True)

    async def detect(request):
        _authorize(request, settings)
        _ready(batcher)
        kind = _content_kind(request)
        batcher.check_room(1)  # a full queue is said before the upload is read
        body = await _read_body(request, settings.max_upload_bytes, settings.max_upload_mb)
        uploads = await _uploads(request, body, kind, min(settings.max_images, settings.max_queue))
        loop = asyncio.get_running_loop()
        images = await asyncio.gather(*(loop.run_in_executor(decoder, _decode, name, data) for name, data in uploads))
        records = await batcher.submit(list(zip([name for name, _ in uploads], images)))
        return JSONResponse({"thresh": settings.thresh, "images": records})

    async def model(request):
        _authorize(request, settings)
        _ready(batcher)
        return JSONResponse(model_document(batcher.model, settings))

    async def health(request):
        doc = health_document(batcher, settings)
        return JSONResponse(doc, status_code=200 if doc["status"] == "ready" else 503)

    async def index(request):
        return HTMLResponse(page, headers={"Content-Security-Policy": (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "img-src blob: data:; connect-src 'self'")})

    routes = [Route("/", index, methods=["GET"]), Route("/detect", detect, methods=["POST"]),
              Route("/model", model, methods=["GET"]), Route("/health", health, methods=["GET"])]
    handlers = {Refused: _refused, HTTPException: _http_error, ClientDisconnect: _client_gone,
                ModelError: _model_error, Busy: _unavailable, Draining: _unavailable}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.batcher = batcher
    return app


async def _watch_load(batcher, on_ready, on_load_error):
    try:
        detector = await batcher.wait_loaded()
    except Exception as e:  # noqa: BLE001 (whatever loading raised goes to the CLI, which names it)
        if on_load_error:
            on_load_error(e)
        return
    if on_ready:
        on_ready(detector)


def health_document(batcher, settings):
    """GET /health: whether the server takes work (status), and how much it holds and has done."""
    return {"status": _status(batcher), "model_loaded": batcher.model is not None, "queue_depth": batcher.depth,
            "max_queue": settings.max_queue, "batches": batcher.batches, "images": batcher.images,
            "version": __version__}


def model_document(detector, settings):
    """GET /model: what a client needs to read the answers, and how the server is set."""
    info = detector.info
    doc = {"classes": list(info.classes), "family": info.family, "source": Path(info.source).name,
           "data_shape": info.data_shape, "dtype": detector.dtype, "quantized": info.quantized,
           "version": __version__}
    if not detector.family.fixed_input:  # R-CNNs: the short side and its cap
        doc.update(short=info.short, max_size=info.max_size)
    shown = {k: v for k, v in asdict(settings).items() if k != "token"}
    doc["settings"] = dict(shown, token_required=bool(settings.token))
    return doc


# ----------------------------------------------------------------------------- request checks
def _authorize(request, settings):
    if not settings.token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
        raise Refused(401, "this server needs its token: send Authorization: Bearer TOKEN",
                      {"WWW-Authenticate": "Bearer"})


def _ready(batcher):
    status = _status(batcher)
    if status != "ready":
        why = {"loading": "the model is still loading", "failed": "the model did not load",
               "draining": "the server is shutting down"}[status]
        raise Refused(503, why, {"Retry-After": "1"} if status == "loading" else None)


def _status(batcher):
    if batcher.load_error is not None:
        return "failed"
    if batcher.model is None:
        return "loading"
    return "ready" if batcher.ready else "draining"


def _content_kind(request):
    """'raw' (one image as the body) or 'multipart'; anything else is 415."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media.startswith("image/") or media in RAW_TYPES:
        return "raw"
    if media == MULTIPART:
        return "multipart"
    raise Refused(415, f"Content-Type {media or '(none)'} is not taken: send an image (image/jpeg, image/png, "
                       "..., or application/octet-stream) or several as multipart/form-data")


async def _read_body(request, limit, mb):
    """The body, refused (413) as soon as it is known to be over ``limit`` bytes (``mb`` MiB, as
    given): from its Content-Length before reading, else while it streams in (chunked uploads)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > limit:
            raise Refused(413, f"the upload is {int(declared)} bytes, over --max-upload-mb {mb:g} ({limit} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the upload is over --max-upload-mb {mb:g} ({limit} bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise Refused(400, "the body is empty: send an image")
    return body


async def _uploads(request, body, kind, max_images):
    """[(name, bytes), ...] of the request: the body itself, or each file part of the form."""
    if kind == "raw":
        return [(request.query_params.get("name", "upload"), body)]

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, receive=replay).form(max_files=max_images, max_fields=max_images)
    try:
        uploads = []
        for field, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise Refused(400, f"form field '{field}' is not a file: send images as file parts")
            uploads.append((value.filename or field, await value.read()))
    finally:
        await form.close()
    if not uploads:
        raise Refused(400, "the form holds no file: send images as file parts")
    return uploads


def _decode(name, data):
    try:
        return read_image_bytes(data, name)
    except ImageTooLargeError as e:
        raise Refused(413, str(e)) from None
    except ImageReadError as e:
        raise Refused(400, str(e)) from None


# ----------------------------------------------------------------------------- answers
def _error(status, message, headers=None):
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


async def _refused(request, exc):
    return _error(exc.status, exc.message, exc.headers)


async def _http_error(request, exc):  # Starlette's own: 404, 405, a form it cannot parse (400)
    return _error(exc.status_code, exc.detail, getattr(exc, "headers", None))


async def _client_gone(request, exc):
    say(f"gluondet serve: {request.method} {request.url.path}: the client disconnected mid-upload")
    return Response(status_code=400)  # nobody is there to read it; uvicorn drops it


async def _model_error(request, exc):
    print(f"gluondet serve: the model failed on a batch ({exc}); the server goes on:", file=sys.stderr)
    traceback.print_exception(type(exc.__cause__), exc.__cause__, exc.__cause__.__traceback__, file=sys.stderr)
    return _error(500, f"the model failed: {exc}")


async def _unavailable(request, exc):
    return _error(503, str(exc), {"Retry-After": "1"})
