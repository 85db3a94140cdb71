"""The app under bad input, faults and hostile requests (the app served in-process, tiny model, CPU).

Every refusal must come back as a clear message through the API, and the app must answer the next request. Requests
go through gradio_client like any API caller, or as raw HTTP (what a browser sends) where gradio_client cannot send
them: NaN and infinity (httpx refuses to encode them), payloads naming server files, a page closed mid-run.
"""

import contextlib
import gc
import json
import logging
import math
import re
import struct
import time
import uuid
import weakref
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from PIL import Image
from serving import free_port

from demo.allow_list import TINY_LABEL, TINY_MODEL
from demo.checks import upload_path
from demo.cli import parse_args
from demo.examples import EXAMPLES_DIR
from demo.images import MODEL_MAX_ASPECT, MODEL_MIN_SIDE, read_upload
from demo.model_pool import LoadOptions, ModelPool
from demo.run import CONTROL_SLIDERS, SLIDERS, Runner
from demo.ui import build_blocks, launch
from models import ModelLoadError

MAX_PIXELS = 1_000_000
MAX_FILE_SIZE = "1mb"
OFFLINE_MODEL = "org/offline-model"  # on the allow-list, not in the cache, and the Hub is offline: it cannot load
CAT = EXAMPLES_DIR / "cat.jpg"
SLIDER_NAMES = [(method, param.name) for method, param in SLIDERS]
# /compare's API outputs by position (gr.State is not part of the API).
STATUS, DOWNLOAD, MODEL = 0, 5, 14


@pytest.fixture(scope="module")
def served():
    """The app whose operator allow-listed a model that cannot load (no network): it starts on the fallback."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        pool = ModelPool([OFFLINE_MODEL, TINY_MODEL], fallback=TINY_MODEL)
        notice = pool.start()
        app = Runner(pool, get_upload_folder(), max_pixels=MAX_PIXELS, max_file_size=MAX_FILE_SIZE)
        blocks = build_blocks(app)
        _, url, _ = launch(
            blocks, host="127.0.0.1", port=free_port(), max_file_size=MAX_FILE_SIZE, prevent_thread_lock=True,
            quiet=True,
        )
        try:
            yield {"pool": pool, "app": app, "url": url.rstrip("/"), "client": Client(url, verbose=False),
                   "notice": notice}
        finally:
            blocks.close()


def inputs(image=None, question="What is in the picture?", *, model=TINY_LABEL, method="vcd", decoding="greedy",
           temperature=1.0, top_p=1.0, top_k=0, seed=0, max_new_tokens=2, colour_by="visual_dependence",
           control="none", **sliders):
    """/compare's API inputs in order; ``sliders`` overrides method parameters by "method__name"; the third panel's
    control and its sliders (defaults) come last."""
    values = [param.default for _, param in SLIDERS]
    for key, value in sliders.items():
        values[SLIDER_NAMES.index(tuple(key.split("__")))] = value
    return [image, question, model, method, decoding, temperature, top_p, top_k, seed, max_new_tokens, colour_by,
            *values, control, *(param.default for _, param in CONTROL_SLIDERS)]


def compare(served, *args, **kwargs):
    return served["client"].predict(*inputs(*args, **kwargs), api_name="/compare")


def still_serving(served, seconds: float = 30.0) -> None:
    """A good request right after: answered, and quickly (raw HTTP: gradio_client would also download every image)."""
    started = time.monotonic()
    completed = raw_compare(served["url"], inputs(upload(served["url"], CAT), "Still there?", max_new_tokens=1))
    assert completed["success"], completed
    assert completed["output"]["data"][STATUS].startswith("Done") and time.monotonic() - started < seconds


# ---- raw HTTP: what a browser (or anyone) can send -------------------------------------------------------------------
def fn_index(url: str) -> int:
    config = httpx.get(f"{url}/config").json()
    return next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == "compare")


def upload(url: str, path: Path) -> dict:
    with open(path, "rb") as file:
        stored = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, file)}).json()[0]
    return {"path": stored, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def join(url: str, data: list) -> str:
    """Put a /compare request in the queue as the page does; returns its session. ``data`` may hold NaN."""
    session = uuid.uuid4().hex[:11]
    # None for each gr.State input (the run's control, the drawn scene, the score), which the server keeps
    body = {"data": [None, None, None, *data], "fn_index": fn_index(url), "trigger_id": None, "session_hash": session,
            "event_data": None}
    response = httpx.post(f"{url}/gradio_api/queue/join", content=json.dumps(body),
                          headers={"content-type": "application/json"})
    response.raise_for_status()
    return session


def messages(url: str, session: str):
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                yield json.loads(line[5:])


def raw_compare(url: str, data: list) -> dict:
    """The completed message of a raw request: {"success": ..., "output": {...}}."""
    session = join(url, data)
    for message in messages(url, session):
        if message.get("msg") == "process_completed":
            return message
    raise AssertionError("the stream ended without completing the request")


def test_a_raw_request_without_the_control_inputs_is_served_as_before_them(served):
    """Callers written before the third panel send every input but the control and its sliders: no control."""
    old = inputs(upload(served["url"], CAT), "Still there?", max_new_tokens=1)[: -1 - len(CONTROL_SLIDERS)]
    completed = raw_compare(served["url"], old)
    assert completed["success"], completed
    status = completed["output"]["data"][STATUS]
    assert status.startswith("Done") and "VCD:" in status and "PBA:" not in status  # two sides, no control
    with_control = inputs(upload(served["url"], CAT), "Still there?", max_new_tokens=1, control="pba")
    completed = raw_compare(served["url"], with_control)
    assert "PBA: 1 tokens" in completed["output"]["data"][STATUS]


# ---- files -----------------------------------------------------------------------------------------------------------
def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` but holds almost no data (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def make_file(folder: Path, kind: str) -> Path:
    """A file of each kind a visitor may send."""
    halves = np.zeros((40, 80, 3), np.uint8)  # left half red, right half blue
    halves[:, :40] = (255, 0, 0)
    halves[:, 40:] = (0, 0, 255)
    if kind == "one pixel":
        path = folder / "pixel.png"
        Image.new("RGB", (1, 1), (200, 30, 30)).save(path)
    elif kind == "10000x100 strip":
        path = folder / "strip.png"
        Image.new("RGB", (10_000, 100), (30, 200, 30)).save(path)
    elif kind == "RGBA":
        path = folder / "rgba.png"
        Image.new("RGBA", (64, 48), (255, 0, 0, 0)).save(path)  # fully transparent red: must come out white
    elif kind == "LA":
        path = folder / "la.png"
        Image.new("LA", (64, 48), (0, 0)).save(path)
    elif kind == "palette":
        path = folder / "palette.png"
        image = Image.new("P", (64, 48), 1)
        image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        image.save(path, transparency=0)
    elif kind == "CMYK":
        path = folder / "cmyk.jpg"
        Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(path)  # red in print colours
    elif kind == "16-bit":
        path = folder / "gray16.png"
        ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
        Image.fromarray(ramp).save(path)
        assert Image.open(path).mode.startswith("I;16") or Image.open(path).mode == "I"
    elif kind == "EXIF-rotated":
        path = folder / "rotated.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90° clockwise to display"
        Image.fromarray(halves).save(path, exif=exif, quality=95)
    elif kind == "animated GIF":
        path = folder / "animated.gif"
        frames = [Image.new("RGB", (40, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif kind == "truncated":
        path = folder / "truncated.jpg"
        Image.effect_noise((200, 200), 50).convert("RGB").save(folder / "whole.jpg")
        path.write_bytes((folder / "whole.jpg").read_bytes()[:700])
    elif kind == "not an image":
        path = folder / "notes.png"
        path.write_text("a shopping list, not a picture\n" * 20)
    elif kind == "EPS (never handed to Ghostscript)":
        path = folder / "drawing.eps"
        path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    elif kind == "decompression bomb":
        path = png_header_only(folder / "bomb.png", 200_000, 200_000)
    elif kind == "over the pixel limit":
        path = png_header_only(folder / "huge.png", 2_000, 1_000)
    else:
        raise ValueError(kind)
    return path


# ---- reading pictures of every kind ----------------------------------------------------------------------------------
def test_every_picture_kind_is_read_upright_opaque_and_8_bit(tmp_path):
    def colour(picture, x, y):
        return tuple(int(c) for c in picture.getpixel((x, y)))

    rotated = read_upload(str(make_file(tmp_path, "EXIF-rotated")))
    assert rotated.size == (40, 80)  # 80x40 turned a quarter clockwise, as the EXIF tag says
    top, bottom = colour(rotated, 20, 10), colour(rotated, 20, 70)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # the red half came to the top

    assert colour(read_upload(str(make_file(tmp_path, "RGBA"))), 5, 5) == (255, 255, 255)
    assert colour(read_upload(str(make_file(tmp_path, "LA"))), 5, 5) == (255, 255, 255)
    assert colour(read_upload(str(make_file(tmp_path, "palette"))), 5, 5) == (255, 0, 0)
    cmyk = colour(read_upload(str(make_file(tmp_path, "CMYK"))), 5, 5)
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60

    ramp = read_upload(str(make_file(tmp_path, "16-bit")))
    values = [colour(ramp, x, 10)[0] for x in (0, 32, 63)]
    assert values[0] < 5 and 110 < values[1] < 145 and values[2] > 250  # scaled, not clipped to white

    gif = read_upload(str(make_file(tmp_path, "animated GIF")))
    assert colour(gif, 5, 5)[0] > 200 and colour(gif, 5, 5)[2] < 60  # the first frame (red), not the second

    for kind in ("one pixel", "10000x100 strip"):
        picture = read_upload(str(make_file(tmp_path, kind)))
        assert picture.mode == "RGB" and min(picture.size) >= MODEL_MIN_SIDE
        assert max(picture.size) <= MODEL_MAX_ASPECT * min(picture.size) and max(picture.size) <= 1024


def test_read_upload_refuses_files_over_the_size_limit_and_files_that_are_gone(tmp_path):
    path = tmp_path / "noise.bmp"
    Image.effect_noise((600, 600), 60).convert("RGB").save(path)  # about 1.1 MB
    with pytest.raises(ValueError, match="larger than 1 MB"):
        read_upload(str(path), max_bytes=2**20)
    assert read_upload(str(path), max_bytes=2 * 2**20).size == (600, 600)
    with pytest.raises(ValueError, match="upload the picture again"):
        read_upload(str(tmp_path / "deleted-by-the-cache-cleaner.png"))


# ---- bad input through the API ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, expected",
    [
        ("truncated", "could not be read as an image"),
        ("not an image", "could not be read as an image"),
        ("EPS (never handed to Ghostscript)", "could not be read as an image"),
        ("decompression bomb", r"the limit is 1,000,000 pixels \(1 megapixels\)"),
        ("over the pixel limit", r"2000×1000 = 2,000,000 pixels; the limit is 1,000,000 pixels"),
    ],
)
def test_bad_files_get_a_clear_message_and_the_app_keeps_serving(served, tmp_path, kind, expected):
    with pytest.raises(Exception, match=expected):
        compare(served, handle_file(make_file(tmp_path, kind)))
    still_serving(served)


@pytest.mark.parametrize(
    "kind", ["one pixel", "10000x100 strip", "RGBA", "palette", "CMYK", "16-bit", "EXIF-rotated", "animated GIF"]
)
def test_odd_but_valid_pictures_are_answered(served, tmp_path, kind):
    final = compare(served, handle_file(make_file(tmp_path, kind)), max_new_tokens=2)
    assert final[STATUS].startswith("Done")
    trace = json.loads(Path(final[DOWNLOAD]).read_text())
    assert trace["done"] and trace["baseline"]["tokens"]


LONG_FOR_THE_CONTEXT = "Is there a red circle? " * 400  # about 9,000 characters: more tokens than the context

BAD_REQUESTS = [  # (question, options, the message expected)
    (" \n\t ", {}, "the question is empty"),
    (LONG_FOR_THE_CONTEXT, {}, r"do not fit in the model's context of 2048 tokens: the prompt takes \d+ tokens .*"
     r"shorten the question"),
    ("x" * 25_000, {}, "the question is too long: 25000 characters, the limit is 20000"),
    (12345, {}, "the question must be text"),
    ("Fine?", {"temperature": -1.0}, "temperature must be between 0.05 and 2"),
    ("Fine?", {"temperature": "hot"}, "temperature must be a number, got 'hot'"),
    ("Fine?", {"top_p": 1.5}, "top-p must be between 0.05 and 1"),
    ("Fine?", {"top_k": 2.5}, "top-k must be a whole number"),
    ("Fine?", {"top_k": None}, "top-k must be a number, got None"),
    ("Fine?", {"seed": -1}, "seed must be between 0 and 4294967295, got -1"),
    ("Fine?", {"seed": 2**70}, "seed must be between"),
    ("Fine?", {"max_new_tokens": 0}, "max new tokens must be between 1 and 256"),
    ("Fine?", {"max_new_tokens": 100_000}, "max new tokens must be between 1 and 256"),
    ("Fine?", {"max_new_tokens": "8"}, "max new tokens must be a number"),
    ("Fine?", {"max_new_tokens": [8]}, "max new tokens must be a number"),
    ("Fine?", {"decoding": "beam search"}, "decoding must be 'greedy' or 'sampling'"),
    ("Fine?", {"colour_by": ["visual_dependence"]}, "unknown colour mode"),
    ("Fine?", {"method": "rm -rf /"}, "unknown method"),
    ("Fine?", {"method": {"vcd": 1}}, "unknown method"),
    ("Fine?", {"vcd__alpha": 1e30}, "alpha must be between 0 and 5 here"),
    ("Fine?", {"vcd__alpha": -1}, "alpha must be >= 0"),
    ("Fine?", {"vcd__beta": "0.1"}, "beta must be a number, got '0.1'"),
    ("Fine?", {"vcd__noise_step": 2.5}, "noise_step must be a whole number"),
    ("Fine?", {"vcd__noise_step": 5000}, "noise_step must be <= 999"),
    ("Fine?", {"method": "m3id", "m3id__lam": True}, "lam must be a number, got True"),
    ("Fine?", {"model": "../../etc/passwd"}, "unknown model"),
    ("Fine?", {"model": "/etc"}, "unknown model"),
    ("Fine?", {"model": None}, "unknown model"),
]


def test_bad_questions_and_parameters_get_a_clear_message_and_the_app_keeps_serving(served):
    image = handle_file(CAT)
    wrong = []
    for question, options, expected in BAD_REQUESTS:
        try:
            compare(served, image, question, **options)
            wrong.append((question[:30] if isinstance(question, str) else question, options, "was answered"))
        except Exception as error:  # noqa: BLE001 (gradio_client's AppError carries the app's message)
            if not re.search(expected, str(error)):
                wrong.append((question[:30] if isinstance(question, str) else question, options, str(error)))
    assert not wrong, wrong
    still_serving(served)


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"temperature": math.nan}, "temperature must be a finite number, got nan"),
        ({"top_p": math.inf}, "top-p must be a finite number, got inf"),
        ({"seed": -math.inf}, "seed must be a finite number"),
        ({"max_new_tokens": math.nan}, "max new tokens must be a finite number"),
        ({"vcd__alpha": math.nan}, "alpha must be a finite number, got nan"),
        ({"vcd__beta": math.inf}, "beta must be a finite number, got inf"),
    ],
)
def test_nan_and_infinity_get_a_clear_message(served, options, expected):
    image = upload(served["url"], CAT)
    completed = raw_compare(served["url"], inputs(image, **options))
    assert completed["success"] is False
    assert re.search(expected, completed["output"]["error"])


# ---- safety: nothing a visitor sends is used as a path ---------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
        {"path": "../../../../../../etc/passwd", "meta": {"_type": "gradio.FileData"}},
        {"path": str(CAT), "meta": {"_type": "gradio.FileData"}},  # a real picture, but not one a visitor uploaded
        {"path": "/etc/passwd"},
        "/etc/passwd",
        {"url": "file:///etc/passwd", "path": "file:///etc/passwd", "meta": {"_type": "gradio.FileData"}},
    ],
)
def test_image_payloads_naming_server_files_are_refused(served, payload):
    runs_before = sum(served["app"].runs.values())
    completed = raw_compare(served["url"], inputs(payload))
    assert completed["success"] is False
    error = completed["output"]["error"] or ""
    refusals = r"not uploaded by a user|'meta' field|valid dictionary|sent as an uploaded file|uploaded to this app"
    assert re.search(refusals, error), error
    assert "root:" not in json.dumps(completed)  # nothing of the file comes back
    done = served["app"].runs["done"]
    assert sum(served["app"].runs.values()) - runs_before <= 1 and served["app"].runs["done"] == done
    still_serving(served)


def test_the_handler_itself_opens_only_files_in_gradios_upload_folder(served, tmp_path):
    folder = served["app"].upload_folder
    assert folder == get_upload_folder()
    for outside in ("/etc/passwd", str(CAT), str(tmp_path / "x.png"), f"{folder}/../../etc/passwd"):
        with pytest.raises(ValueError, match="uploaded to this app"):
            upload_path({"path": outside}, folder)
    inside = Path(folder) / "abc" / "photo.png"
    assert upload_path({"path": str(inside)}, folder) == str(inside.resolve())
    with pytest.raises(ValueError, match="sent as an uploaded file"):
        upload_path("/etc/passwd", folder)


def test_uploads_over_the_size_limit_are_refused(served, tmp_path):
    noisy = tmp_path / "noisy.bmp"
    Image.effect_noise((800, 800), 60).convert("RGB").save(noisy)  # about 1.9 MB against this server's 1 MB
    with open(noisy, "rb") as file:
        response = httpx.post(f"{served['url']}/gradio_api/upload", files={"files": (noisy.name, file)})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    with pytest.raises(Exception):  # noqa: B017 (gradio_client's upload error)
        compare(served, handle_file(noisy))
    still_serving(served)


def test_trust_remote_code_is_off_unless_the_operator_turns_it_on(monkeypatch):
    seen = []

    def recording_load_model(source, **options):
        seen.append((source, options["trust_remote_code"]))
        raise ModelLoadError("not loading in this test")

    monkeypatch.setattr("demo.model_pool.load_model", recording_load_model)
    for argv, expected in (([], False), (["--trust-remote-code"], True)):
        args = parse_args(argv)
        assert args.trust_remote_code is expected
        options = LoadOptions(args.quantization, args.device, args.dtype, trust_remote_code=args.trust_remote_code)
        pool = ModelPool(["org/some-model"], options, fallback=TINY_MODEL)
        with pytest.raises(ModelLoadError, match="not loading"):
            pool.get("org/some-model")
    assert seen == [("org/some-model", False), ("org/some-model", True)]


# ---- faults ----------------------------------------------------------------------------------------------------------
def test_a_model_that_cannot_load_at_start_is_replaced_by_the_fallback_with_a_notice(served):
    pool = served["pool"]
    assert served["notice"] and pool.notice == served["notice"]
    assert OFFLINE_MODEL in pool.notice and "offline" in pool.notice and TINY_LABEL in pool.notice
    assert pool.default == TINY_LABEL and pool.loaded == TINY_LABEL
    config = httpx.get(f"{served['url']}/config").json()
    shown = [c["props"].get("value") for c in config["components"] if c["props"].get("elem_id") == "cd-fallback-notice"]
    assert shown and OFFLINE_MODEL in shown[0]


def test_a_model_that_fails_to_load_when_picked_falls_back_to_the_default_and_says_so(served):
    final = compare(served, handle_file(CAT), "Which model answers?", model=OFFLINE_MODEL, max_new_tokens=2)
    assert final[STATUS].startswith("Done")
    assert f"The model '{OFFLINE_MODEL}' could not be loaded" in final[STATUS] and TINY_LABEL in final[STATUS]
    assert final[MODEL]["value"] == TINY_LABEL  # the model picker goes back to the model that answered
    assert json.loads(Path(final[DOWNLOAD]).read_text())["model_id"] == TINY_MODEL
    assert served["pool"].loaded == TINY_LABEL
    still_serving(served)


def test_bad_model_ids_fail_fast_and_the_notice_shows_no_server_path():
    pool = ModelPool(["not a valid id!", "/no/such/folder/model"], fallback=TINY_MODEL)
    for name in pool.names:  # the fallback itself (load, start) is tested above, with the server's pool
        started = time.monotonic()
        with pytest.raises(ModelLoadError, match="nor a valid Hugging Face Hub id|does not exist"):
            pool.get(name)
        assert time.monotonic() - started < 5
    error = ModelLoadError("model folder '/no/such/folder/model' does not exist")
    notice = pool._notice("model", error, TINY_LABEL)
    assert "/no/such/folder" not in notice and "'model' does not exist" in notice


def fail_once(model, make_error, witness: dict, on_call: int = 3):
    """Make ``model``'s forward raise ``make_error()`` on its ``on_call``-th call (the first step after the prefill's
    two chunks), keeping a weak reference to the KV cache the run held then; every other call runs the real forward.
    (The error is made when raised: an exception kept here would keep its traceback, and the run's frames, alive.)"""
    real = model.forward
    calls = {"n": 0}

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            witness["cache"] = weakref.ref(kwargs["cache"])
            witness.get("on_fault", lambda: None)()
            raise make_error()
        return real(*args, **kwargs)

    return forward


def test_out_of_memory_fails_that_request_frees_its_memory_and_the_next_one_works(served, monkeypatch):
    app, model = served["app"], served["pool"].get(TINY_LABEL).model
    freed = []

    def on_fault():  # from here on the server believes it runs on CUDA, so that the app empties its cache
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))

    witness = {"on_fault": on_fault}
    def oom():
        return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model, "forward", fail_once(model, oom, witness))
    failed_before = app.runs["failed"]
    with pytest.raises(Exception, match="ran out of memory during this comparison"):
        compare(served, handle_file(CAT), "Out of memory?", max_new_tokens=8)
    monkeypatch.undo()
    assert app.runs["failed"] == failed_before + 1 and app.active_runs == 0
    assert freed, "torch.cuda.empty_cache was not called"
    assert witness["cache"]() is None, "the failed run's KV cache is still referenced"
    still_serving(served, seconds=10)


def test_any_other_failure_while_running_gets_a_message_and_the_app_keeps_serving(served, monkeypatch):
    model = served["pool"].get(TINY_LABEL).model
    witness = {}
    def kernel_failure():
        return RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")

    monkeypatch.setattr(model, "forward", fail_once(model, kernel_failure, witness))
    with pytest.raises(Exception, match=r"The model failed during the run \(RuntimeError\)") as failed:
        compare(served, handle_file(CAT), "Kernel failure?", max_new_tokens=8)
    assert "CUBLAS" not in str(failed.value)  # the error's text goes to the log only
    monkeypatch.undo()
    gc.collect()
    assert witness["cache"]() is None
    still_serving(served, seconds=10)


def wait_for(condition, seconds: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - started


LONG_RUN = {"method": "m3id", "max_new_tokens": 256}


def closed_runs(caplog) -> list[int]:
    closed = (re.match(r"run closed after (\d+) tokens", record.getMessage()) for record in caplog.records)
    return [int(found.group(1)) for found in closed if found]


def test_cancelling_a_job_closes_the_run_at_once_and_frees_the_slot(served, caplog):
    caplog.set_level(logging.INFO, logger="demo.run")
    app, client = served["app"], served["client"]
    closed = app.runs["closed"]
    job = client.submit(*inputs(handle_file(CAT), "A long answer, please.", **LONG_RUN), api_name="/compare")
    assert next(job)[STATUS].startswith("Generating")  # waits for the run's first token
    job.cancel()
    took = wait_for(lambda: app.runs["closed"] > closed, 10)
    assert app.active_runs == 0 and took < 5
    assert closed_runs(caplog) and closed_runs(caplog)[-1] < 256
    still_serving(served, seconds=10)


def test_closing_the_page_mid_run_closes_the_run_at_once(served, caplog):
    caplog.set_level(logging.INFO, logger="demo.run")
    app, url = served["app"], served["url"]
    closed = app.runs["closed"]
    session = join(url, inputs(upload(url, CAT), "A long answer, please.", **LONG_RUN))
    with contextlib.closing(messages(url, session)) as stream:
        for message in stream:  # read the stream until tokens flow, then hang up like a closed tab
            if message.get("msg") == "process_generating":
                break
    took = wait_for(lambda: app.runs["closed"] > closed, 10)
    assert app.active_runs == 0 and took < 5
    assert closed_runs(caplog)[-1] < 256
    still_serving(served, seconds=10)
