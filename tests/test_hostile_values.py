"""Hostile values: whatever a visitor sends as a number, a name or an event is checked before anything formats it,
through raw HTTP to gradio's queue and routes (what a page or a script can send) and through gradio_client.

1. an integer of 400 digits, NaN, infinity, text, a bool, a list or null in every method's and control's slider,
   temperature, top-p, top-k, seed and max new tokens: refused naming the control (the library's own check, and the
   ZeroGPU duration estimate, take them too); 2. a token click's event data may be anything; 3. the private handlers
   (colour mode, token picker) answer a value not among their choices in the app's words; 4. every echoed name is cut
   short, in the reply and in the log; 5. Stop cancels a run that waits in the queue, and so do cancelling an API job
   and closing the tab.
"""

import contextlib
import functools
import json
import logging
import math
import threading
import time

import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from serving import fn_index as find_fn
from serving import free_port, join, new_session, queue_messages, raw_call, upload

import demo.run
from demo import texts, zerogpu
from demo.allow_list import EMBEDDED_MODEL_DIR
from demo.examples import EXAMPLES_DIR
from demo.model_pool import ModelPool
from demo.run import CONTROL_SLIDERS, SLIDERS, Runner
from demo.ui import build_blocks, launch
from decoding.methods import REGISTRY, get_method

CAT = EXAMPLES_DIR / "cat.jpg"  # for gradio_client
SCENE = EXAMPLES_DIR / "shapes-1600000138.png"  # for raw HTTP: 48 px, read at once, so that a refusal costs little
STATUS = 0
HUGE = 10**400  # valid JSON; no float holds it
MILLION = "x" * 1_000_000
ECHO_BOUND = 400  # characters: a refusal quoting a million-character name must stay far below
LOG_BOUND = 1_000
# What else a visitor may send for a number; each must be refused naming the control.
FILE_PAYLOAD = {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}  # gradio's own check refuses it, echoing
NOT_NUMBERS = (HUGE, -HUGE, math.nan, math.inf, -math.inf, "1", MILLION, True, None, [1], {"value": 1})
NUMBER_SLIDERS = [(method, param) for method, param in SLIDERS if getattr(param, "kind", None) != "text"]
fn_index = functools.cache(find_fn)  # the served config is large: read it once per dependency


@pytest.fixture(scope="module")
def served():
    pool = ModelPool([str(EMBEDDED_MODEL_DIR)])
    pool.start()
    runner = Runner(pool, get_upload_folder(), max_pixels=1_000_000, max_file_size="1mb")
    blocks = build_blocks(runner)
    _, url, _ = launch(blocks, host="127.0.0.1", port=free_port(), max_file_size="1mb", prevent_thread_lock=True,
                       quiet=True)
    url = url.rstrip("/")
    try:
        yield {"runner": runner, "url": url, "client": Client(url, verbose=False), "scene": upload(url, SCENE)}
    finally:
        blocks.close()


def inputs(image=None, *, method="vcd", model="shapes-llava", decoding="greedy", temperature=1.0, top_p=1.0,
           top_k=0, seed=0, max_new_tokens=2, colour_by="visual_dependence", slider=None, control=texts.NO_CONTROL,
           control_slider=None):
    """/compare's inputs in order; ``slider`` / ``control_slider``: ((method, name), value) overriding a default."""
    sliders = [param.default for _, param in SLIDERS]
    if slider is not None:
        sliders[[(m, param.name) for m, param in SLIDERS].index(slider[0])] = slider[1]
    controls = [param.default for _, param in CONTROL_SLIDERS]
    if control_slider is not None:
        controls[[(m, param.name) for m, param in CONTROL_SLIDERS].index(control_slider[0])] = control_slider[1]
    return [image, "is there a square in the image ?", model, method, decoding, temperature, top_p, top_k, seed,
            max_new_tokens, colour_by, *sliders, control, *controls]


def raw_compare(url: str, data: list, session: str | None = None) -> dict:
    return raw_call(url, fn_index(url, "compare"), [None, None, None, *data], session=session)


def refusal(served, data: list) -> str:
    reply = raw_compare(served["url"], data)
    assert reply["success"] is False, reply
    return reply["output"]["error"]


def no_traceback(capfd) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err and "OverflowError" not in err, err[-2000:]


# ---- class 1: numbers --------------------------------------------------------------------------------------------
def test_a_huge_integer_in_every_slider_is_refused_naming_it(served, capfd):
    capfd.readouterr()
    runner = served["runner"]
    refused = runner.runs["refused"]
    cases = [({"method": method, "slider": ((method, param.name), HUGE)}, param.name)
             for method, param in NUMBER_SLIDERS]
    cases += [({"control": control, "control_slider": ((control, param.name), HUGE)}, param.name)
              for control, param in CONTROL_SLIDERS]
    cases += [({key: HUGE}, name) for key, name in (("temperature", "temperature"), ("top_p", "top-p"),
                                                    ("top_k", "top-k"), ("seed", "seed"),
                                                    ("max_new_tokens", "max new tokens"))]
    wrong = []
    for options, name in cases:
        message = refusal(served, inputs(served["scene"], **options))
        if not message.startswith(f"{name} must be a finite number") or len(message) > ECHO_BOUND:
            wrong.append((options.get("method") or options.get("control") or options, message))
    assert not wrong, wrong
    assert runner.runs["refused"] == refused + len(cases)  # each one refused, none failed
    no_traceback(capfd)


@pytest.mark.parametrize("where", ["temperature", "max_new_tokens", "vcd alpha", "pai first_layer",
                                   "apc_only beta"])
def test_anything_that_is_not_a_finite_number_is_refused_naming_the_control(served, capfd, where):
    capfd.readouterr()
    name = {"top_p": "top-p", "max_new_tokens": "max new tokens"}.get(where, where.split()[-1])
    for value in NOT_NUMBERS:
        if " " not in where:
            options = {where: value}
        elif where.startswith("apc_only"):
            options = {"control": "apc_only", "control_slider": (("apc_only", "beta"), value)}
        else:
            method, param = where.split()
            options = {"method": method, "slider": ((method, param), value)}
        message = refusal(served, inputs(served["scene"], **options))
        assert message.startswith(f"{name} must be a"), (value if value is not MILLION else "MILLION", message)
        assert len(message) < ECHO_BOUND and "x" * 100 not in message
    no_traceback(capfd)


def test_gradio_client_gets_the_same_refusal_for_a_huge_integer(served):
    with pytest.raises(Exception, match="first_layer must be a finite number"):  # noqa: PT011 (AppError)
        served["client"].predict(
            *inputs(handle_file(str(CAT)), method="pai", slider=(("pai", "first_layer"), HUGE)), api_name="/compare"
        )
    with pytest.raises(Exception, match="seed must be a finite number"):  # noqa: PT011
        served["client"].predict(*inputs(handle_file(str(CAT)), seed=HUGE), api_name="/compare")


@pytest.mark.parametrize("method", [name for name, record in REGISTRY.items() if record.params])
def test_the_library_refuses_a_huge_integer_as_not_finite(method):
    for param in get_method(method).params:
        if not param.integer and getattr(param, "kind", None) != "text":
            with pytest.raises(ValueError, match=f"{param.name} must be finite"):
                get_method(method).resolve({param.name: HUGE})


def test_the_zerogpu_duration_counts_any_unreadable_max_new_tokens_as_the_largest_request():
    largest = zerogpu.gpu_seconds("vcd", "not a number")
    for value in (HUGE, -HUGE, math.inf, math.nan, MILLION, None, True):
        assert zerogpu.gpu_seconds("vcd", value) == largest
    assert zerogpu.gpu_seconds("vcd", 8) < largest


# ---- class 2: a token click's event data ---------------------------------------------------------------------------
def test_a_token_click_with_malformed_event_data_changes_nothing(served, capfd):
    url = served["url"]
    session = new_session()
    assert raw_compare(url, inputs(served["scene"]), session)["success"]  # the session shows a run
    click = fn_index(url, trigger=("cd-baseline-answer", "select"))
    data = [None, "visual_dependence", None, None]  # the shown run (state), the colour mode, the other pickers
    capfd.readouterr()
    for event in (None, {}, [0], "0", math.nan, {"index": math.nan}, {"index": [0, 1]}, {"index": True},
                  {"index": "0"}, {"index": HUGE}, {"index": -1}, {"index": 10**9},
                  {"index": None, "value": FILE_PAYLOAD}, [FILE_PAYLOAD], FILE_PAYLOAD):
        reply = raw_call(url, click, data, queued=False, session=session, event_data=event)
        assert reply["status"] == 200 and reply["success"], (event, reply)
        assert not any(isinstance(v, dict) and v.get("open") for v in reply["output"]["data"])  # nothing opened
    no_traceback(capfd)
    # a well-formed click still opens the inspector on its token (whatever its value holds)
    for value in ("yes", FILE_PAYLOAD):
        reply = raw_call(url, click, data, queued=False, session=session, event_data={"index": 0, "value": value})
        assert reply["success"] and reply["output"]["data"][0].get("open") is True
    no_traceback(capfd)


# ---- class 3: gradio's refusals of a private handler's value ---------------------------------------------------------
@pytest.mark.parametrize("trigger, data", [
    (("cd-colour-by", "change"), [None, "bogus", None, None, None]),
    (("cd-colour-by", "change"), [None, MILLION, None, None, None]),
    (("cd-baseline-token", "input"), [None, "bogus", "visual_dependence", None, None]),
    (("cd-baseline-token", "input"), [None, 3, "visual_dependence", None, None]),  # no run: the picker has no choices
    (("cd-method", "change"), ["bogus"]),
])
def test_a_private_handler_refuses_a_value_not_among_its_choices_in_the_apps_words(served, capfd, caplog, trigger,
                                                                                    data):
    caplog.set_level(logging.INFO, logger="demo.ui")
    capfd.readouterr()
    reply = raw_call(served["url"], fn_index(served["url"], trigger=trigger), data, queued=False)
    assert reply["success"] is False and reply["output"]["error"] == texts.MALFORMED_REQUEST
    assert "list of choices" not in json.dumps(reply) and "class" not in json.dumps(reply)
    no_traceback(capfd)
    logged = [r.getMessage() for r in caplog.records if "refused before its handler" in r.getMessage()]
    assert logged and "list of choices" in logged[-1] and len(logged[-1]) < LOG_BOUND  # the detail, cut short


@pytest.mark.parametrize("trigger, data", [
    (("cd-colour-by", "change"), [None, None, None, None, None]),
    (("cd-baseline-token", "input"), [None, None, None, None, None]),
    (("cd-method", "change"), [None]),
])
def test_a_private_handler_takes_null_which_gradio_lets_through(served, capfd, trigger, data):
    capfd.readouterr()
    reply = raw_call(served["url"], fn_index(served["url"], trigger=trigger), data, queued=False)
    assert reply["status"] == 200 and reply["success"], reply
    no_traceback(capfd)


# ---- class 4: echoes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["method", "model", "control", "colour_by", "decoding"])
def test_a_million_character_name_is_echoed_cut_short_in_the_reply_and_the_log(served, caplog, field):
    caplog.set_level(logging.INFO, logger="demo")
    message = refusal(served, inputs(served["scene"], **{field: MILLION + "\x1b[2J\x00"}))
    assert message.startswith("unknown ") or message.startswith("decoding must be"), message[:200]
    assert len(message) < ECHO_BOUND and "x" * 100 not in message and "\x1b" not in message
    assert all(len(r.getMessage()) < LOG_BOUND for r in caplog.records)
    with pytest.raises(Exception) as refused:  # noqa: PT011 (gradio_client's AppError carries the message)
        served["client"].predict(*inputs(handle_file(str(CAT)), **{field: MILLION}), api_name="/compare")
    assert len(str(refused.value)) < ECHO_BOUND + 200 and "x" * 100 not in str(refused.value)


# ---- class 5: Stop, cancel and a closed tab cancel a run waiting in the queue ----------------------------------------
@pytest.fixture
def holding(monkeypatch):
    """Every run holds the queue's only slot until released, then it is refused ("released")."""
    release = threading.Event()

    def hold(*args, **kwargs):
        release.wait(60)
        raise ValueError("released")
        yield  # a generator, as stream_compare is

    monkeypatch.setattr(demo.run, "stream_compare", hold)
    yield release
    release.set()


@pytest.fixture
def slot_held(served, holding):
    """A run of another session in front of the queue, holding its only slot until released."""
    release = holding
    runner = served["runner"]
    first = served["client"].submit(*inputs(handle_file(str(CAT))), api_name="/compare")
    wait_for(lambda: runner.active_runs == 1, 30)
    yield release
    release.set()
    with contextlib.suppress(Exception):
        first.result(timeout=30)


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.02)


def runs_after_release(served, release) -> int:
    """Release the run in front, then send a request that joins the queue after the waiting one: how many runs
    reached the model besides those two (1 when the waiting one was not cancelled)."""
    runner = served["runner"]
    before = runner.runs["refused"] + runner.runs["done"]
    release.set()
    wait_for(lambda: runner.active_runs == 0, 30)
    assert raw_compare(served["url"], inputs(None))["success"] is False  # refused for its missing image: it ran after
    return runner.runs["refused"] + runner.runs["done"] - before - 2


def test_stop_cancels_the_sessions_run_waiting_in_the_queue(served, slot_held):
    url, runner = served["url"], served["runner"]
    session = new_session()
    cancelled = runner.runs["cancelled"]
    # The page's Compare: the run is marked waiting, then joins the queue behind the one holding the slot.
    marked = raw_call(url, fn_index(url, trigger=("cd-run", "click")), [None], queued=False, session=session)
    assert marked["success"], marked
    join(url, fn_index(url, "compare"), [None, None, None, *inputs(served["scene"])], session)
    stream = queue_messages(url, session)
    assert next(m for m in stream if m.get("msg") == "estimation")["rank"] >= 0  # waiting
    reply = raw_call(url, fn_index(url, "stop"), [None], queued=False, session=session)
    assert reply["output"]["data"][0] == texts.CANCELLING_WAITING
    assert runs_after_release(served, slot_held) == 0
    completed = next(m for m in stream if m.get("msg") == "process_completed")
    stream.close()
    assert completed["success"] and completed["output"]["data"][STATUS] == texts.CANCELLED_WAITING
    assert runner.runs["cancelled"] == cancelled + 1
    # the session's next Compare runs as usual (here: reaches the model, which the fixture's stand-in refuses)
    raw_call(url, fn_index(url, trigger=("cd-run", "click")), [None], queued=False, session=session)
    assert raw_compare(url, inputs(served["scene"]), session)["output"]["error"] == "released"


def test_cancelling_an_api_job_waiting_in_the_queue_drops_it(served, slot_held):
    job = Client(served["url"], verbose=False).submit(*inputs(handle_file(str(CAT))), api_name="/compare")
    wait_for(lambda: job.status().code.name == "IN_QUEUE", 30)
    job.cancel()
    assert runs_after_release(served, slot_held) == 0


def test_closing_the_tab_drops_its_run_waiting_in_the_queue(served, slot_held):
    url = served["url"]
    session = new_session()
    join(url, fn_index(url, "compare"), [None, None, None, *inputs(served["scene"])], session)
    with contextlib.closing(queue_messages(url, session)) as stream:
        next(m for m in stream if m.get("msg") == "estimation")  # waiting; then the tab closes
    time.sleep(0.5)  # the server notices the closed stream at its next check
    assert runs_after_release(served, slot_held) == 0


def test_a_stop_meant_for_the_running_run_leaves_the_sessions_next_run_alone(served, holding):
    url, runner = served["url"], served["runner"]
    session = new_session()
    mark, compare = fn_index(url, trigger=("cd-run", "click")), fn_index(url, "compare")
    data = [None, None, None, *inputs(served["scene"])]
    raw_call(url, mark, [None], queued=False, session=session)
    join(url, compare, data, session)
    stream = queue_messages(url, session)
    wait_for(lambda: runner.active_runs == 1, 30)
    assert raw_call(url, fn_index(url, "stop"), [None], queued=False, session=session)["output"]["data"][0] == (
        texts.STOPPING)
    raw_call(url, mark, [None], queued=False, session=session)  # Compare again at once: the next run waits
    join(url, compare, data, session)
    holding.set()
    completed = []
    for message in stream:
        if message.get("msg") == "process_completed":
            completed.append(message)
            if len(completed) == 2:
                break
    stream.close()
    assert [m["output"].get("error") for m in completed] == ["released", "released"]  # both reached the model


@pytest.mark.parametrize("value", [10**300, 1e300, -(10**40)])
def test_a_huge_whole_number_with_bounds_is_refused_without_writing_it_whole(value):
    from demo import checks

    with pytest.raises(ValueError) as refusal:
        checks.number("seed", value, integer=True, bounds=(0, 2**31 - 1))
    assert "seed" in str(refusal.value) and len(str(refusal.value)) <= checks.ECHO_LIMIT + 100, str(refusal.value)
