"""gluondet serve without a network model: the Batcher on toy batches, and the HTTP app in-process
(Starlette's TestClient) around a stand-in detector whose answer is known: one box around the
dark pixels of a generated picture. The real detector is served in tests/integration/test_serve_cli.py.
"""
import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from gluondet.predict import Detections, ModelInfo  # noqa: E402
from gluondet.serve import ServeSettings, create_app  # noqa: E402
from gluondet.serve.batcher import Batcher, Busy, Draining, ModelError  # noqa: E402

HANG_GUARD_S = 120  # waits on events end long before this; it only stops a hung test
PNG = {"content-type": "image/png"}


# ----------------------------------------------------------------------------- the batcher
def _toy_batcher(gate=None, fail_on=None, **kwargs):
    """A Batcher whose model doubles numbers; the sizes of its batches and its threads are kept.
    ``gate`` (a threading.Event) holds the first batch until set; ``fail_on`` fails a batch holding it."""
    seen = {"sizes": [], "threads": set()}

    def load():
        seen["threads"].add(threading.get_ident())
        return "toy model"

    def run(model, payloads):
        assert model == "toy model"
        seen["threads"].add(threading.get_ident())
        seen["sizes"].append(len(payloads))
        if gate is not None and len(seen["sizes"]) == 1:
            assert gate.wait(HANG_GUARD_S)
        if fail_on in payloads:
            raise ValueError(f"planted failure on {fail_on}")
        return [2 * p for p in payloads]

    return Batcher(run, **kwargs), load, seen


async def _until(condition):
    """Let the event loop run until ``condition()`` holds (each turn is an event, not a clock)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_requests_are_batched_across_clients_up_to_max_batch():
    async def scenario():
        gate = threading.Event()
        batcher, load, seen = _toy_batcher(gate, max_batch=4, max_wait=0, max_queue=64)
        batcher.start(load)
        await batcher.wait_loaded()
        first = asyncio.ensure_future(batcher.submit([1]))
        await _until(lambda: seen["sizes"] == [1])  # the model is busy with the first request
        others = [asyncio.ensure_future(batcher.submit([10 * k + 1, 10 * k + 2, 10 * k + 3])) for k in range(3)]
        await _until(lambda: batcher.depth == 10)
        gate.set()
        answers = await asyncio.gather(first, *others)
        await batcher.close()
        return answers, seen

    answers, seen = asyncio.run(scenario())
    assert answers == [[2], [2, 4, 6], [22, 24, 26], [42, 44, 46]]
    assert seen["sizes"] == [1, 4, 4, 1]  # the 9 that waited, in batches of at most 4
    [model_thread] = seen["threads"]  # loaded and run on one thread, not the event loop's
    assert model_thread != threading.get_ident()


def test_a_lone_batch_leaves_after_max_wait_without_filling():
    async def scenario():
        batcher, load, seen = _toy_batcher(max_batch=8, max_wait=0.01)
        batcher.start(load)
        answer = await batcher.submit([1, 2, 3])
        await batcher.close()
        return answer, seen

    answer, seen = asyncio.run(scenario())
    assert answer == [2, 4, 6] and seen["sizes"] == [3]


def test_a_model_error_fails_its_batch_only_and_the_batcher_goes_on():
    async def scenario():
        batcher, load, seen = _toy_batcher(fail_on=13, max_batch=2, max_wait=0)
        batcher.start(load)
        await batcher.wait_loaded()
        with pytest.raises(ModelError, match="ValueError: planted failure on 13") as failed:
            await batcher.submit([13])
        assert isinstance(failed.value.__cause__, ValueError)
        answer = await batcher.submit([5])
        await batcher.close()
        return answer

    assert asyncio.run(scenario()) == [10]


def test_a_full_queue_is_busy_and_close_drains_what_was_submitted():
    async def scenario():
        gate = threading.Event()
        batcher, load, seen = _toy_batcher(gate, max_batch=2, max_wait=0, max_queue=3)
        batcher.start(load)
        await batcher.wait_loaded()
        running = asyncio.ensure_future(batcher.submit([1]))
        await _until(lambda: seen["sizes"] == [1])
        waiting = asyncio.ensure_future(batcher.submit([2, 3]))
        await _until(lambda: batcher.depth == 3)
        with pytest.raises(Busy, match="max-queue 3"):
            await batcher.submit([4])
        closing = asyncio.ensure_future(batcher.close())
        await _until(lambda: not batcher.ready)
        with pytest.raises(Draining, match="shutting down"):
            await batcher.submit([5])
        gate.set()
        await closing
        return await running, await waiting

    assert asyncio.run(scenario()) == ([2], [4, 6])


def test_a_request_that_went_away_is_left_out_of_the_next_batch():
    async def scenario():
        gate = threading.Event()
        batcher, load, seen = _toy_batcher(gate, max_batch=8, max_wait=0)
        batcher.start(load)
        await batcher.wait_loaded()
        first = asyncio.ensure_future(batcher.submit([1]))
        await _until(lambda: seen["sizes"] == [1])
        gone = asyncio.ensure_future(batcher.submit([2, 3]))
        kept = asyncio.ensure_future(batcher.submit([4]))
        await _until(lambda: batcher.depth == 4)
        gone.cancel()  # its client disconnected
        gate.set()
        answers = await first, await kept
        await batcher.close()
        return answers, seen

    answers, seen = asyncio.run(scenario())
    assert answers == ([2], [8]) and seen["sizes"] == [1, 1]


# ----------------------------------------------------------------------------- the app
class DarkBoxDetector:
    """A stand-in detector: one box, class 'thing', around the pixels darker than mid-grey.
    A picture 13 pixels wide makes it fail, as a model error would."""

    def __init__(self):
        from gluondet.families import get_family

        self.info = ModelInfo(classes=["thing"], family="ssd", data_shape=64, source="/somewhere/stub-run")
        self.family = get_family("ssd")
        self.classes, self.dtype, self.batches = self.info.classes, "float32", []

    def detect(self, images, thresh=0.5, max_boxes=100, batch_size=None):
        self.batches.append(len(images))
        if any(image.shape[1] == 13 for image in images):
            raise RuntimeError("planted model failure")
        found = []
        for image in images:
            ys, xs = np.nonzero(image.min(axis=2) < 128)
            box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
            found.append(Detections(boxes=box, class_ids=np.array([0]), scores=np.array([0.9], np.float32)))
        return found


def _picture(box, size=(80, 60), fmt="PNG"):
    """An encoded white picture of ``size`` (w, h) with a black rectangle ``box`` (x0, y0, x1, y1)."""
    pixels = np.full((size[1], size[0], 3), 255, np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 0
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def serve_app():
    """``serve_app(settings=None, load=None)``: a TestClient of the app around DarkBoxDetector,
    started (lifespan) and ready; the detector is ``client.detector``."""
    clients = []

    def make(settings=None, load=None):
        detector = DarkBoxDetector()
        ready = threading.Event()
        app = create_app(load or (lambda: detector), settings or ServeSettings(),
                         on_ready=lambda d: ready.set(), on_load_error=lambda e: ready.set())
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        assert ready.wait(HANG_GUARD_S)
        client.detector, client.app_under_test = detector, app
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _record(box, name, size=(80, 60)):
    return {"file": name, "width": size[0], "height": size[1],
            "boxes": [{"class": "thing", "class_id": 0, "score": 0.9, "bbox": [float(v) for v in box]}]}


def test_one_image_and_several_are_answered_in_detect_json_records(serve_app):
    client = serve_app()
    one = client.post("/detect?name=a.png", content=_picture((10, 5, 30, 25)), headers=PNG)
    assert one.status_code == 200
    assert one.json() == {"thresh": 0.5, "images": [_record((10, 5, 30, 25), "a.png")]}
    raw = client.post("/detect", content=_picture((1, 2, 3, 4)),
                      headers={"content-type": "application/octet-stream"})
    assert raw.json()["images"] == [_record((1, 2, 3, 4), "upload")]
    files = [("x", ("b.png", _picture((40, 30, 70, 50)), "image/png")),
             ("y", ("c.jpg", _picture((0, 0, 20, 20), size=(50, 40), fmt="JPEG"), "image/jpeg"))]
    several = client.post("/detect", files=files)
    assert several.status_code == 200
    assert several.json()["images"] == [_record((40, 30, 70, 50), "b.png"),
                                        _record((0, 0, 20, 20), "c.jpg", (50, 40))]


def test_a_photo_is_answered_in_the_pixels_a_viewer_shows(serve_app):
    # stored 80x60 with EXIF orientation 6 (turn 90 degrees clockwise): seen as 60x80
    stored = np.full((60, 80, 3), 255, np.uint8)
    stored[0:10, 0:20] = 0  # top left of the stored grid: top right once turned
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(buf, format="JPEG", exif=exif, quality=100)
    client = serve_app()
    answer = client.post("/detect", content=buf.getvalue(), headers={"content-type": "image/jpeg"}).json()
    [record] = answer["images"]
    assert (record["width"], record["height"]) == (60, 80)
    assert record["boxes"][0]["bbox"] == pytest.approx([50, 0, 60, 20], abs=1)


def test_model_health_and_the_page(serve_app):
    client = serve_app(ServeSettings(thresh=0.25, max_batch=4, token="s3cret"))
    model = client.get("/model", headers={"authorization": "Bearer s3cret"}).json()
    assert model["classes"] == ["thing"] and model["family"] == "ssd" and model["data_shape"] == 64
    assert model["source"] == "stub-run"  # the folder's name, not where it is on the server's disk
    assert model["settings"]["thresh"] == 0.25 and model["settings"]["token_required"] is True
    assert "s3cret" not in client.get("/model", headers={"authorization": "Bearer s3cret"}).text
    health = client.get("/health")  # open without the token
    assert health.status_code == 200 and health.json()["status"] == "ready" and health.json()["queue_depth"] == 0
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "default-src 'none'" in page.headers[
        "content-security-policy"]
    assert "http" not in page.text.split("<script>")[1]  # no CDN, no other host


@pytest.mark.parametrize("headers, status, words", [
    ({}, 401, "needs its token"),
    ({"authorization": "Bearer wrong"}, 401, "needs its token"),
    ({"authorization": "Basic s3cret"}, 401, "needs its token"),
    ({"authorization": "Bearer s3cret"}, 200, None),
])
def test_the_token_guards_detect_and_model(serve_app, headers, status, words):
    client = serve_app(ServeSettings(token="s3cret"))
    for answer in (client.post("/detect", content=_picture((1, 1, 5, 5)), headers=dict(headers, **{
            "content-type": "image/png"})), client.get("/model", headers=headers)):
        assert answer.status_code == status
        if words:
            assert words in answer.json()["error"] and answer.headers["www-authenticate"] == "Bearer"


def _truncated_png():
    data = _picture((5, 5, 50, 40))
    return data[: len(data) - 40]


@pytest.mark.parametrize("content, content_type, status, words", [
    (b"hello", "text/plain", 415, "Content-Type text/plain is not taken"),
    (b"{}", "application/json", 415, "application/json"),
    (b"GIF89a nonsense", "image/gif", 400, "upload: not a readable image"),
    (b"not an image at all", "application/octet-stream", 400, "not a readable image"),
    (_truncated_png(), "image/png", 400, "upload: truncated or corrupt"),
    (b"", "image/png", 400, "the body is empty"),
])
def test_bad_uploads_are_one_line_each(serve_app, content, content_type, status, words):
    client = serve_app()
    answer = client.post("/detect", content=content, headers={"content-type": content_type})
    assert answer.status_code == status
    error = answer.json()
    assert set(error) == {"error"} and words in error["error"] and "\n" not in error["error"]
    assert client.get("/health").json()["status"] == "ready"


def test_bad_forms_are_one_line_each(serve_app):
    client = serve_app(ServeSettings(max_images=2))
    one = [("a", ("a.png", _picture((1, 1, 4, 4)), "image/png"))]
    answer = client.post("/detect", data={"note": "hi"}, files=one)
    assert answer.status_code == 400 and "form field 'note' is not a file" in answer.json()["error"]
    too_many = [(k, (f"{k}.png", _picture((1, 1, 4, 4)), "image/png")) for k in "abc"]
    answer = client.post("/detect", files=too_many)
    assert answer.status_code == 400 and "Maximum number of files is 2" in answer.json()["error"]
    bad_part = [("a", ("a.png", _picture((1, 1, 4, 4)), "image/png")), ("b", ("b.png", b"junk", "image/png"))]
    answer = client.post("/detect", files=bad_part)
    assert answer.status_code == 400 and answer.json()["error"].startswith("b.png: not a readable image")
    empty_form = {"content-type": "multipart/form-data; boundary=x"}
    answer = client.post("/detect", content=b"--x--\r\n", headers=empty_form)
    assert answer.status_code == 400 and "no file" in answer.json()["error"]
    answer = client.post("/detect", content=b"", headers={"content-type": "multipart/form-data"})
    assert answer.status_code == 400
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/detect").status_code == 405


def test_oversized_uploads_are_refused_as_they_arrive(serve_app, monkeypatch):
    client = serve_app(ServeSettings(max_upload_mb=0.01))  # 10,485 bytes
    big = b"\0" * 20_000
    answer = client.post("/detect", content=big, headers=PNG)
    assert answer.status_code == 413
    assert "the upload is 20000 bytes, over --max-upload-mb 0.01" in answer.json()["error"]

    def chunks():  # no Content-Length: chunked, refused once past the limit while it streams
        for _ in range(100):
            yield b"\0" * 1000

    answer = client.post("/detect", content=chunks(), headers=PNG)
    assert answer.status_code == 413 and "over --max-upload-mb 0.01 (10485 bytes)" in answer.json()["error"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # a bomb: a small file of many pixels
    answer = client.post("/detect", content=_picture((1, 1, 2, 2), size=(100, 50)), headers=PNG)
    assert answer.status_code == 413 and "upload: refused: 100x50 pixels is over" in answer.json()["error"]


def test_a_model_error_is_500_and_the_server_goes_on(serve_app, capsys):
    client = serve_app()
    answer = client.post("/detect", content=_picture((1, 1, 5, 5), size=(13, 20)), headers=PNG)
    assert answer.status_code == 500
    assert answer.json() == {"error": "the model failed: RuntimeError: planted model failure"}
    assert "planted model failure" in capsys.readouterr().err  # the traceback, for whoever runs it
    again = client.post("/detect", content=_picture((2, 2, 6, 6)), headers=PNG)
    assert again.status_code == 200 and client.get("/health").json()["status"] == "ready"


def test_a_client_that_disconnects_mid_upload_is_let_go(serve_app, capsys):
    client = serve_app()
    app = client.app_under_test
    sent = []

    async def upload_then_vanish():
        messages = iter([{"type": "http.request", "body": b"\x89PNG\r\n", "more_body": True},
                         {"type": "http.disconnect"}])

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/detect", "raw_path": b"/detect", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"image/png"), (b"content-length", b"5000")],
                 "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 80), "state": {}, "app": app}
        await app(scope, receive, send)

    client.portal.call(upload_then_vanish)
    assert sent[0]["status"] == 400
    assert "the client disconnected mid-upload" in capsys.readouterr().err
    assert client.post("/detect", content=_picture((1, 1, 5, 5)), headers=PNG).status_code == 200


def test_while_loading_and_after_a_failed_load_the_server_says_so(serve_app):
    release = threading.Event()
    detector = DarkBoxDetector()

    def slow_load():
        assert release.wait(HANG_GUARD_S)
        return detector

    app = create_app(slow_load, ServeSettings())
    with TestClient(app) as client:
        assert client.get("/health").status_code == 503 and client.get("/health").json()["status"] == "loading"
        answer = client.post("/detect", content=_picture((1, 1, 5, 5)), headers=PNG)
        assert answer.status_code == 503 and answer.json() == {"error": "the model is still loading"}
        assert answer.headers["retry-after"] == "1"
        release.set()
        client.portal.call(app.state.batcher.wait_loaded)  # on the app's own event loop
        assert client.get("/health").json()["status"] == "ready"

    failures = []

    def broken_load():
        raise FileNotFoundError("best.params")

    done = threading.Event()
    app = create_app(broken_load, ServeSettings(), on_load_error=lambda e: (failures.append(e), done.set()))
    with TestClient(app) as client:
        assert done.wait(HANG_GUARD_S)
        assert client.get("/health").json()["status"] == "failed"
        answer = client.post("/detect", content=_picture((1, 1, 5, 5)), headers=PNG)
        assert answer.status_code == 503 and answer.json() == {"error": "the model did not load"}
    assert isinstance(failures[0], FileNotFoundError)


# ----------------------------------------------------------------------------- the command
def _serve_cli(args, env=None):
    from click.testing import CliRunner

    from gluondet.cli import main

    return CliRunner(mix_stderr=False).invoke(main, ["serve", *map(str, args)], env=env)


@pytest.mark.parametrize("flags, words", [
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
    (["--max-wait-ms", "-1"], "--max-wait-ms must be 0 or more"),
    (["--max-batch", "16", "--max-queue", "8"], "--max-queue 8 is less than --max-batch 16"),
    (["--thresh", "2"], "--thresh must be in [0, 1]"),
])
def test_flags_that_cannot_serve_are_one_line(tmp_path, flags, words):
    result = _serve_cli([tmp_path, *flags])
    assert result.exit_code == 2 and words in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_port_in_use_is_one_line_before_anything_loads(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _serve_cli([tmp_path, "--port", port])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"gluondet: error: --host 127.0.0.1 --port {port}: cannot listen there "
                                     "(Address already in use)")


def test_a_folder_that_does_not_load_stops_the_server_with_one_line(tmp_path):
    result = _serve_cli([tmp_path, "--port", "0"])
    assert result.exit_code == 2, (result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert "listening on http://127.0.0.1:" in lines[0]
    assert lines[-1].startswith(f"gluondet: error: {tmp_path}") and "Traceback" not in result.stderr


def test_a_full_queue_is_503_before_the_upload_is_read(serve_app):
    from concurrent.futures import ThreadPoolExecutor

    started, gate = threading.Event(), threading.Event()
    detector = DarkBoxDetector()
    plain_detect = detector.detect

    def held_detect(images, **kwargs):
        started.set()
        assert gate.wait(HANG_GUARD_S)
        return plain_detect(images, **kwargs)

    detector.detect = held_detect
    client = serve_app(ServeSettings(max_batch=1, max_queue=1), load=lambda: detector)
    png = {"content": _picture((1, 1, 5, 5)), "headers": {"content-type": "image/png"}}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/detect", **png)
        assert started.wait(HANG_GUARD_S)  # the model holds the one image the queue may hold
        busy = client.post("/detect", **png)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json() == {"error": "1 image(s) are waiting already (--max-queue 1)"}
        assert client.get("/health").json()["queue_depth"] == 1
        gate.set()
        assert first.result().status_code == 200


def test_a_model_that_fails_at_once_stops_the_server_in_order(capfd):
    """Loading that fails while uvicorn is still starting (an empty folder fails in microseconds):
    the server shuts down through uvicorn's shutdown and lifespan, and the error comes out."""
    import socket

    from gluondet.errors import GluondetError
    from gluondet.serve import run_server

    def load():
        raise GluondetError("nowhere: no config.yaml")

    for _ in range(5):  # the failure lands at a different point of the start each time
        sock = socket.create_server(("127.0.0.1", 0))
        with pytest.raises(GluondetError, match="nowhere: no config.yaml"):
            run_server(sock, load, ServeSettings(), source="nowhere")
        err = capfd.readouterr().err
        assert "listening on http://127.0.0.1:" in err
        assert "Traceback" not in err and "destroyed" not in err and "stopping" not in err
