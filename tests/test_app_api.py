"""The app served in-process on a free localhost port, driven through its API with gradio_client (tiny model)."""

import json
import re
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image
from serving import free_port

from decoding.comparison import compare
from demo.allow_list import TINY_MODEL
from demo.examples import EXAMPLES_DIR
from demo.model_pool import ModelPool
from demo.run import CONTROL_SLIDERS, SLIDERS
from demo.ui import build_ui, launch

MAX_PIXELS = 1_000_000  # small, so that the "huge image" case needs no big file
CAT = EXAMPLES_DIR / "cat.jpg"


@pytest.fixture(scope="module")
def served():
    pool = ModelPool([TINY_MODEL])
    pool.get(pool.default)
    blocks = build_ui(pool, max_pixels=MAX_PIXELS)
    _, url, _ = launch(blocks, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield pool, Client(url, verbose=False)
    finally:
        blocks.close()


# The /compare endpoint's inputs in order, with the UI's defaults; the method's sliders follow (all methods' in METHODS
# order; the ones of other methods are ignored), then the third panel's control and its sliders (the controls' own).
def compare_args(pool, image, question, method="vcd", max_new_tokens=10, control="none", **overrides):
    settings = {"decoding": "greedy", "temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": 0}
    settings["colour_by"] = "visual_dependence"
    settings.update(overrides)
    sliders = [param.default for _, param in SLIDERS]
    control_sliders = [param.default for _, param in CONTROL_SLIDERS]
    return [
        image, question, settings.pop("model", pool.default), method, settings["decoding"], settings["temperature"],
        settings["top_p"], settings["top_k"], settings["seed"], max_new_tokens, settings["colour_by"], *sliders,
        control, *control_sliders,
    ]


# Output positions of /compare (gr.State outputs are not part of the API).
STATUS, LEGEND, HEADING, GALLERY, NOTES, DOWNLOAD = range(6)
BASELINE_HTML, BASELINE_TOKEN, BASELINE_ATTENTION, BASELINE_CANDIDATES = range(6, 10)
METHOD_HTML = 10
CONTROL_HEADING, CONTROL_HTML, CONTROL_TOKEN = 16, 17, 18  # after the model and the score


def token_count(markup) -> int:
    return len(re.findall(r'data-token="\d+"', markup)) if isinstance(markup, str) else -1


def panel_text(markup: str) -> str:
    import html

    spans = re.findall(r'data-token="\d+"[^>]*>([^<]*)</span>', markup)
    return "".join(html.unescape(span) for span in spans)


def test_comparison_streams_token_by_token_and_ends_with_both_answers_and_the_trace(served):
    pool, client = served
    job = client.submit(*compare_args(pool, handle_file(CAT), "What is in the picture?", "vcd"), api_name="/compare")
    updates = list(job)
    final = updates[-1]
    intermediate = updates[:-1]
    assert len(intermediate) >= 5
    counts = [token_count(u[METHOD_HTML]) for u in intermediate]
    assert counts == sorted(counts) and counts[0] == 1 and len(set(counts)) >= 5
    assert all(u[STATUS].startswith("Generating") for u in intermediate)
    assert final[STATUS].startswith("Done")

    trace = json.loads(Path(final[DOWNLOAD]).read_text())
    assert trace["model_id"] == TINY_MODEL and trace["method"] == "vcd" and trace["done"]
    assert trace["decoding"]["seed"] == 0 and trace["params"] == {"alpha": 1.0, "beta": 0.1, "noise_step": 500}
    baseline, method_side = trace["baseline"], trace["method_side"]
    assert baseline["text"] and method_side["text"]
    assert token_count(final[BASELINE_HTML]) == len(baseline["tokens"])
    assert token_count(final[METHOD_HTML]) == len(method_side["tokens"])

    # The app renders exactly what the library computes for the same request.
    direct = compare(pool.get(pool.default), Image.open(CAT), "What is in the picture?", "vcd", max_new_tokens=10)
    assert (baseline["text"], method_side["text"]) == (direct.baseline.text, direct.method_side.text)
    from demo.render import answer_piece

    side = direct.method_side
    assert panel_text(final[METHOD_HTML]) == "".join(answer_piece(side, i) for i in range(len(side.tokens)))


def test_method_parameters_and_branch_inputs_reach_the_run(served):
    pool, client = served
    args = compare_args(pool, handle_file(EXAMPLES_DIR / "left_right.png"), "Which side is the circle on?", "savcd", 4)
    names = [(method, param.name) for method, param in SLIDERS]
    args[11 + names.index(("savcd", "gamma"))] = 1.5
    final = client.predict(*args, api_name="/compare")
    trace = json.loads(Path(final[DOWNLOAD]).read_text())
    assert trace["params"] == {"alpha": 1.0, "gamma": 1.5}
    assert trace["branches"]["augmentation"] in final[NOTES]
    captions = [item.get("caption") for item in final[GALLERY]]
    assert captions[0].startswith("original") and any("augmented" in c for c in captions)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no image", "No image"),
        ("empty question", "question is empty"),
        ("corrupt file", "could not be read as an image"),
        ("huge image", "megapixels"),
        ("model not on the allow-list", "unknown model"),
        ("bad parameter", "beta must be"),
    ],
)
def test_bad_input_gets_a_clear_message_and_the_app_keeps_serving(served, tmp_path, case, expected):
    pool, client = served
    image, question, overrides = handle_file(CAT), "What is this?", {}
    if case == "no image":
        image = None
    elif case == "empty question":
        question = "   "
    elif case == "corrupt file":
        corrupt = tmp_path / "photo.jpg"
        corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG" * 20)
        image = handle_file(corrupt)
    elif case == "huge image":
        huge = tmp_path / "huge.png"
        Image.new("RGB", (1200, 1000)).save(huge)
        image = handle_file(huge)
    elif case == "model not on the allow-list":
        overrides["model"] = "/etc"
    args = compare_args(pool, image, question, max_new_tokens=2, **overrides)
    if case == "bad parameter":
        args[11 + 1] = 0.0  # VCD's beta must be in (0, 1]
    with pytest.raises(Exception, match=expected):
        client.predict(*args, api_name="/compare")
    final = client.predict(*compare_args(pool, handle_file(CAT), "Still there?", max_new_tokens=2), api_name="/compare")
    assert final[STATUS].startswith("Done")


def test_stop_ends_the_run_early_and_keeps_what_was_written(served):
    pool, client = served
    job = client.submit(*compare_args(pool, handle_file(CAT), "What is this?", "m3id", 256), api_name="/compare")
    assert next(job)[STATUS].startswith("Generating")  # waits for the run's first token
    assert client.predict(api_name="/stop") == "Stopping…"
    final = job.result()
    trace = json.loads(Path(final[DOWNLOAD]).read_text())
    assert final[STATUS].startswith("Stopped")
    assert "stopped" in {trace["baseline"]["stop_reason"], trace["method_side"]["stop_reason"]}
    assert trace["steps"] < 100
    # Nothing is running now: Stop says so and the next run is not affected.
    assert client.predict(api_name="/stop") == "No comparison is running."
    args = compare_args(pool, handle_file(CAT), "What is this?", max_new_tokens=3)
    final = client.predict(*args, api_name="/compare")
    assert final[STATUS].startswith("Done")


def test_a_control_decodes_a_third_panel_and_old_style_calls_still_work(served):
    pool, client = served
    args = compare_args(pool, handle_file(CAT), "What is in the picture?", "vcd", 5, control="olm")
    names = [(control, param.name) for control, param in CONTROL_SLIDERS]
    args[-len(names) + names.index(("olm", "margin"))] = 0.9
    final = client.predict(*args, api_name="/compare")
    trace = json.loads(Path(final[DOWNLOAD]).read_text())
    assert trace["control"] == "olm" and trace["control_params"] == {"mass": 0.2, "margin": 0.9}
    assert trace["control_side"]["text"] and "OLM:" in final[STATUS]
    assert token_count(final[CONTROL_HTML]) == len(trace["control_side"]["tokens"])
    assert "OLM" in final[CONTROL_HEADING]
    direct = compare(
        pool.get(pool.default), Image.open(CAT), "What is in the picture?", "vcd", max_new_tokens=5, control="olm",
        control_params={"margin": 0.9},
    )
    assert trace["control_side"]["text"] == direct.control_side.text

    # By keyword, and by position without the control's inputs (as before the third panel): gradio_client fills in
    # the trailing inputs' defaults, so no control is decoded.
    keyword = client.predict(
        *compare_args(pool, handle_file(CAT), "What is in the picture?", "vcd", 3)[:11], control="apc_only",
        control_apc_only_beta=0.5, api_name="/compare",
    )
    assert json.loads(Path(keyword[DOWNLOAD]).read_text())["control_params"] == {"beta": 0.5}
    old_style = compare_args(pool, handle_file(CAT), "What is in the picture?", "vcd", 3)[: 11 + len(SLIDERS)]
    final = client.predict(*old_style, api_name="/compare")
    trace = json.loads(Path(final[DOWNLOAD]).read_text())
    assert final[STATUS].startswith("Done") and trace["control"] is None and trace["control_side"] is None
    with pytest.raises(Exception, match="unknown control 'vcd'"):
        args = compare_args(pool, handle_file(CAT), "Hi?", max_new_tokens=2, control="vcd")
        client.predict(*args, api_name="/compare")
