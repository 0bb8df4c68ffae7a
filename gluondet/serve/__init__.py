"""``gluondet serve``: one detector behind an HTTP JSON API, with requests batched across clients.

``app.py`` is the Starlette app (routes, limits, answers), ``batcher.py`` the dynamic batching and
the model's one thread, ``page/index.html`` the page at ``/``. ``run_server`` runs the app under
uvicorn on a socket the caller opened, and stops it gracefully on SIGTERM or Ctrl-C: no new
connections, the requests in flight answered, the batcher drained, then it returns.
"""
import signal
from pathlib import Path

from ..progress import say
from ..runtime import handling_signals
from .app import ServeSettings, create_app, model_document  # noqa: F401  (the package's API)


def run_server(sock, load_detector, settings, source="", grace_s=30):
    """Serve on the listening socket ``sock`` until SIGTERM or SIGINT; returns once everything in
    flight is answered. ``load_detector()`` runs on the model's thread after the server listens;
    what it raises is raised here once the server has stopped."""
    import uvicorn

    class Server(uvicorn.Server):
        async def on_tick(self, counter):
            # a model that did not load stops the server from its main loop: should_exit set while
            # uvicorn starts would skip its shutdown (and the app's), leaving tasks to be cancelled
            return bool(failure) or await super().on_tick(counter)

        async def shutdown(self, sockets=None):
            # said here, on the event loop, not in the signal handler, where it could cut into a print
            if not failure:  # a model that did not load is said by the CLI's error line
                say("gluondet serve: stopping: no new connections; answering the requests in flight")
            await super().shutdown(sockets=sockets)

    failure = []

    def on_ready(detector):
        say(f"gluondet serve: ready: {Path(detector.info.source).name} ({detector.family.name}, "
            f"{len(detector.classes)} classes), max batch {settings.max_batch}, max wait "
            f"{settings.max_wait_ms:g} ms{', token required' if settings.token else ''}")

    def on_load_error(error):
        failure.append(error)  # the main loop's next tick (0.1 s) stops the server

    app = create_app(load_detector, settings, on_ready=on_ready, on_load_error=on_load_error)
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False,
                            timeout_graceful_shutdown=grace_s, server_header=False)
    server = Server(config)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    say(f"gluondet serve: listening on {url} (loading {source})")
    # uvicorn catches both signals for its graceful shutdown, then raises them again for the
    # handlers it found: ours do nothing, so a stop by signal ends here and the command exits 0
    with handling_signals((signal.SIGTERM, signal.SIGINT), _stopped):
        server.run(sockets=[sock])
    if failure:
        raise failure[0]
    batcher = app.state.batcher
    say(f"gluondet serve: stopped; answered {batcher.images} image(s) in {batcher.batches} batch(es)")


def _stopped(signum, frame):
    """The signal uvicorn raises again after its graceful shutdown: nothing left to do."""
