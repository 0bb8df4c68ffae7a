"""gluondet serve on the suite's trained tiny SSD: in-process (Starlette's TestClient) and as the
command a user runs (a subprocess on a free loopback port), against ``gluondet detect --json`` on
the same images; every bad request over a real socket; SIGTERM with requests in flight; the page
in headless Chromium.

The subprocess is waited on through its lines (listening, ready, stopping) and its answers, never
through sleeps; ``HANG_GUARD_S`` only stops a hung test.
"""
import base64
import colorsys
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from browser import headless_chromium
from cli_helpers import invoke_cli
from output_lines import OutputLines

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

GLUONDET = str(Path(sys.executable).parent / "gluondet")
HANG_GUARD_S = 300
THRESH = 0.05  # low, so the suite's briefly trained detector gives boxes to compare
TOKEN = "t0ken-for-tests"
UPLOAD_MB = 1


@pytest.fixture(scope="module")
def images(shapes_voc):
    names = (shapes_voc / "ImageSets" / "Main" / "val.txt").read_text().split()[:6]
    return [shapes_voc / "JPEGImages" / f"{name}.jpg" for name in names]


@pytest.fixture(scope="module")
def detect_json(trained_tiny_run, images, tmp_path_factory):
    """{file name: record} of ``gluondet detect --json`` on ``images``: the reference."""
    out = tmp_path_factory.mktemp("detect") / "boxes.json"
    result = invoke_cli(["detect", *images, "--run", trained_tiny_run, "--thresh", THRESH, "--no-draw",
                         "--json", out, "--quiet"])
    assert result.exit_code == 0, (result.output, result.stderr)
    records = {Path(r["file"]).name: r for r in json.loads(out.read_text(encoding="utf-8"))["images"]}
    assert sum(len(r["boxes"]) for r in records.values()) > 0
    return records


def assert_same_boxes(got, want, thresh=THRESH):
    """Same size and the same boxes (class, bbox, score to what a batch of another size may change
    in float32); a box within 1e-3 of the threshold may be on one side only."""
    assert (got["width"], got["height"]) == (want["width"], want["height"])
    for these, those in ((got["boxes"], want["boxes"]), (want["boxes"], got["boxes"])):
        free = list(those)
        for box in these:
            same = [b for b in free if b["class_id"] == box["class_id"]
                    and max(abs(u - v) for u, v in zip(b["bbox"], box["bbox"])) <= 0.05
                    and abs(b["score"] - box["score"]) <= 3e-4]
            if not same:
                assert box["score"] < thresh + 1e-3, (box, those)
                continue
            free.remove(same[0])


# ----------------------------------------------------------------------------- in-process
def test_in_process_answers_equal_detect_json(trained_tiny_run, images, detect_json):
    import threading

    from starlette.testclient import TestClient

    from gluondet.predict import Detector
    from gluondet.serve import ServeSettings, create_app

    ready = threading.Event()
    app = create_app(lambda: Detector.load(trained_tiny_run, max_boxes=100),
                     ServeSettings(thresh=THRESH, max_batch=4),
                     on_ready=lambda d: ready.set(), on_load_error=lambda e: ready.set())
    with TestClient(app) as client:
        assert ready.wait(HANG_GUARD_S) and client.get("/health").json()["status"] == "ready"
        for path in images[:2]:
            answer = client.post(f"/detect?name={path.name}", content=path.read_bytes(),
                                 headers={"content-type": "image/jpeg"})
            assert answer.status_code == 200
            [record] = answer.json()["images"]
            assert record["file"] == path.name
            assert_same_boxes(record, detect_json[path.name])
        assert client.get("/model").json()["classes"] == detect_json_classes(trained_tiny_run)
    served = _served_in_process(trained_tiny_run, images)
    assert [r["file"] for r in served] == [p.name for p in images]
    for record in served:
        assert_same_boxes(record, detect_json[record["file"]])


def detect_json_classes(run):
    return (Path(run) / "classes.txt").read_text(encoding="utf-8").split()


def _served_in_process(source, paths, thresh=THRESH):
    """The records ``POST /detect`` answers for ``paths`` (one multipart request), the app in-process."""
    import threading

    from starlette.testclient import TestClient

    from gluondet.predict import Detector
    from gluondet.serve import ServeSettings, create_app

    ready = threading.Event()
    app = create_app(lambda: Detector.load(source, max_boxes=100), ServeSettings(thresh=thresh, max_batch=4),
                     on_ready=lambda d: ready.set(), on_load_error=lambda e: ready.set())
    with TestClient(app) as client:
        assert ready.wait(HANG_GUARD_S) and client.get("/health").json()["status"] == "ready"
        answer = client.post("/detect", files=[("img", (p.name, p.read_bytes(), "image/jpeg")) for p in paths])
        assert answer.status_code == 200, answer.text
        return answer.json()["images"]


def test_an_export_folder_is_served_with_its_runs_boxes(trained_tiny_run, images, detect_json, tmp_path):
    result = invoke_cli(["export", trained_tiny_run, "--out", tmp_path / "deploy"])
    assert result.exit_code == 0, (result.output, result.stderr)
    for record in _served_in_process(tmp_path / "deploy", images[:3]):
        assert_same_boxes(record, detect_json[record["file"]])


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    """mask_rcnn_tiny after two iterations on generated masked shapes: enough for masks to come out."""
    from gluondet.data.synth import write_shapes_voc

    base = tmp_path_factory.mktemp("serve_masks")
    root = write_shapes_voc(base / "shapes", n_train=3, n_val=3, seed=4, size=96, masks=True)
    run = base / "run"
    result = invoke_cli(["train", "--dataset", root / "coco.yaml", "--model", "mask_rcnn_tiny", "--out", run,
                         "--data-shape", "96", "--epochs", "1", "--max-iters", "2", "--lr-steps", "5",
                         "--num-workers", "0", "--quiet"])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return run, sorted((root / "JPEGImages").glob("*.jpg"))[:2]


def test_a_mask_model_answers_coco_rle_masks_as_detect_json_does(mask_run, tmp_path):
    from pycocotools import mask as mask_utils

    run, paths = mask_run
    out = tmp_path / "masks.json"
    result = invoke_cli(["detect", *paths, "--run", run, "--thresh", "0", "--no-draw", "--json", out, "--quiet"])
    assert result.exit_code == 0, (result.output, result.stderr)
    want = {Path(r["file"]).name: r for r in json.loads(out.read_text(encoding="utf-8"))["images"]}
    served = _served_in_process(run, paths, thresh=0.0)
    assert sum(len(r["boxes"]) for r in served) > 0
    def by_box(boxes):  # the boxes told apart by class, place and score (an untrained model repeats some)
        keys = [(b["class_id"], tuple(b["bbox"]), b["score"]) for b in boxes]
        return {k: b for k, b in zip(keys, boxes) if keys.count(k) == 1}

    compared = 0
    for record in served:
        assert_same_boxes(record, want[record["file"]], thresh=0.0)
        reference = by_box(want[record["file"]]["boxes"])
        for key, box in by_box(record["boxes"]).items():
            pixels = mask_utils.decode(box["segmentation"])  # pycocotools reads what the server wrote
            assert pixels.shape == (record["height"], record["width"])
            if key in reference:  # the same box: the same mask
                assert box["segmentation"] == reference[key]["segmentation"]
                compared += 1
    assert compared > 0


# ----------------------------------------------------------------------------- the command
def _start_server(run, *extra, token=TOKEN):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLUONDET_SERVE_TOKEN": token}
    proc = subprocess.Popen([GLUONDET, "serve", str(run), "--port", "0", "--thresh", str(THRESH), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = OutputLines(proc.stderr, "gluondet serve")
    port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)/",
                         lines.wait_for("listening on", "the line saying where it listens")).group(1))
    lines.wait_for(r"ready: ", "the line saying the model is loaded")
    return proc, lines, port


@pytest.fixture(scope="module")
def server(trained_tiny_run):
    """``gluondet serve RUN --port 0`` with a token, 4-image batches and 1 MiB uploads: (port, lines)."""
    proc, lines, port = _start_server(trained_tiny_run, "--max-batch", "4", "--max-wait-ms", "20",
                                      "--max-upload-mb", str(UPLOAD_MB))
    yield port, lines
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(HANG_GUARD_S) == 0, lines.rest()


def _client(port, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=HANG_GUARD_S)


def test_served_answers_equal_detect_json_under_concurrent_clients(server, images, detect_json):
    from concurrent.futures import ThreadPoolExecutor

    port, _ = server

    def one(path):
        with _client(port) as client:
            answer = client.post("/detect", params={"name": path.name}, content=path.read_bytes(),
                                 headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        return answer.json()["images"][0]

    with ThreadPoolExecutor(len(images)) as pool:
        records = list(pool.map(one, images))
    for path, record in zip(images, records):
        assert record["file"] == path.name
        assert_same_boxes(record, detect_json[path.name])
    with _client(port) as client:
        answer = client.post("/detect", files=[("img", (p.name, p.read_bytes(), "image/jpeg")) for p in images])
        for record in answer.json()["images"]:
            assert_same_boxes(record, detect_json[record["file"]])
        health = client.get("/health").json()
        assert health["status"] == "ready" and health["images"] >= 2 * len(images) and health["queue_depth"] == 0


def test_the_token_guards_detect_and_model_but_not_health(server, images):
    port, _ = server
    for token in (None, "wrong"):
        with _client(port, token) as client:
            for answer in (client.get("/model"), client.post("/detect", content=images[0].read_bytes(),
                                                             headers={"Content-Type": "image/jpeg"})):
                assert answer.status_code == 401 and "needs its token" in answer.json()["error"]
            assert client.get("/health").status_code == 200
    with _client(port) as client:
        assert client.get("/model").json()["family"] == "ssd"


def _raw(port, head, body=b"", close=True):
    """Send ``head`` (the request line and headers, without the blank line) and ``body`` on a new
    connection; with ``close``, read the answer to its end: (status, JSON body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S)
    sock.sendall(head.encode() + f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode() + body)
    if not close:
        return sock
    return _answer(sock)


def _answer(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_bad_requests_over_a_real_socket_are_one_line_each(server, images, tmp_path):
    from PIL import Image

    port, lines = server
    jpeg = images[0].read_bytes()
    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(bomb)  # 400 million pixels in ~400 KB
    cases = [
        (b"hello", "text/plain", 415, "Content-Type text/plain is not taken"),
        (b"plain text, not a picture", "image/jpeg", 400, "upload: not a readable image"),
        (jpeg[: len(jpeg) // 2], "image/jpeg", 400, "upload: truncated or corrupt"),
        (bomb.read_bytes(), "image/png", 413, "upload: refused: "),
    ]
    for body, content_type, status, words in cases:
        head = (f"POST /detect HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n")
        got_status, doc = _raw(port, head, body)
        assert (got_status, list(doc)) == (status, ["error"]) and words in doc["error"], doc
    # over the limit by its Content-Length: answered before a byte of the body is sent
    head = f"POST /detect HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: {50 * 2 ** 20}\r\n"
    status, doc = _raw(port, head)
    assert status == 413 and f"over --max-upload-mb {UPLOAD_MB}" in doc["error"]
    # chunked, no length: refused once the chunks pass the limit (the rest is never sent)
    head = "POST /detect HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n"
    chunk = b"\0" * 65536
    chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * (UPLOAD_MB * 16 + 1)
    status, doc = _raw(port, head, chunks)
    assert status == 413 and "the upload is over --max-upload-mb" in doc["error"]
    # a client that goes away mid-upload: named in the log, and the server goes on
    head = "POST /detect HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 500000\r\n"
    _raw(port, head, jpeg[:1000], close=False).close()
    lines.wait_for("the client disconnected mid-upload", "the line about the client that went away")
    with _client(port) as client:
        assert client.get("/health").json()["status"] == "ready"
        answer = client.post("/detect", content=jpeg, headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200


def test_sigterm_answers_the_requests_in_flight_and_exits_0(trained_tiny_run, images, detect_json):
    proc, lines, port = _start_server(trained_tiny_run, "--max-batch", "4")
    try:
        # two uploads half sent: the server holds them as requests in progress
        body = images[0].read_bytes()
        raw = _raw(port, "POST /detect?name=a.jpg HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                         f"Content-Length: {len(body)}\r\n", body[:1000], close=False)
        form = _multipart([(p.name, p.read_bytes()) for p in images[1:3]])
        multi = _raw(port, "POST /detect HTTP/1.1\r\nHost: t\r\n"
                           "Content-Type: multipart/form-data; boundary=XyZ\r\n"
                           f"Content-Length: {len(form)}\r\n", form[:1000], close=False)
        with _client(port) as client:  # answered after the two were taken in (one queue of connections)
            assert client.get("/health").status_code == 200
        proc.send_signal(signal.SIGTERM)
        lines.wait_for("stopping: no new connections", "the line saying the shutdown began")
        raw.sendall(body[1000:])
        multi.sendall(form[1000:])
        (status_a, doc_a), (status_b, doc_b) = _answer(raw), _answer(multi)
        assert status_a == status_b == 200, (doc_a, doc_b)
        assert_same_boxes(doc_a["images"][0], detect_json[images[0].name])
        assert [r["file"] for r in doc_b["images"]] == [p.name for p in images[1:3]]
        for record in doc_b["images"]:
            assert_same_boxes(record, detect_json[record["file"]])
        assert proc.wait(HANG_GUARD_S) == 0
        assert "stopped; answered 3 image(s)" in lines.rest()
    finally:
        if proc.poll() is None:
            proc.kill()


def _multipart(files, boundary="XyZ"):
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="img"; filename="{name}"\r\n'
             f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


# ----------------------------------------------------------------------------- the page
@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium(loopback=True)
    yield driver
    driver.quit()


def test_the_page_draws_the_boxes_of_a_chosen_and_a_dropped_image(server, images, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port, _ = server
    wait = WebDriverWait(browser, HANG_GUARD_S)
    browser.get(f"http://127.0.0.1:{port}/")
    token_row = browser.find_element(By.ID, "token-row")
    wait.until(lambda d: token_row.is_displayed())  # /model answered 401: the page asks for the token
    browser.find_element(By.ID, "token").send_keys(TOKEN + "\t")
    wait.until(lambda d: "classes" in d.find_element(By.ID, "model").text)

    chooser = browser.find_element(By.ID, "file")
    browser.execute_script("arguments[0].hidden = false", chooser)
    chooser.send_keys(str(images[0]))
    _check_drawing(browser, wait, port, images[0])

    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], arguments[1], {type: "image/jpeg"}));
        document.getElementById("canvas").dataset.state = "idle";
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        """, base64.b64encode(images[1].read_bytes()).decode(), images[1].name)
    _check_drawing(browser, wait, port, images[1])

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert all("401" in e["message"] for e in errors), errors  # the first /model, before the token
    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = [r["params"]["request"]["url"] for r in requests if r["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith((f"http://127.0.0.1:{port}/", "blob:", "data:")) for u in urls), urls


def _check_drawing(browser, wait, port, path):
    """The canvas shows the image with as many boxes as the API gives for it, the last one drawn
    (on top of the others) in its class's colour on its left edge."""
    from selenium.webdriver.common.by import By

    canvas = browser.find_element(By.ID, "canvas")
    wait.until(lambda d: canvas.get_attribute("data-state") in ("done", "error"))
    assert canvas.get_attribute("data-state") == "done", browser.find_element(By.ID, "status").text
    with _client(port) as client:
        answer = client.post("/detect", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
    [record] = answer.json()["images"]
    assert record["boxes"], "the page test needs an image with boxes"
    assert int(canvas.get_attribute("data-boxes")) == len(record["boxes"])
    size = browser.execute_script("return [arguments[0].width, arguments[0].height]", canvas)
    assert size == [record["width"], record["height"]]
    last = record["boxes"][-1]
    x0, y0, _, y1 = last["bbox"]
    pixel = browser.execute_script("return Array.from(arguments[0].getContext('2d').getImageData("
                                   "arguments[1], arguments[2], 1, 1).data)", canvas, int(x0), int((y0 + y1) / 2))
    hue = (last["class_id"] * 137.5) % 360  # the page's colour for the class: hsl(hue, 85%, 45%)
    want = [round(255 * c) for c in colorsys.hls_to_rgb(hue / 360, 0.45, 0.85)]
    assert max(abs(a - b) for a, b in zip(pixel[:3], want)) <= 3, (pixel, want)
