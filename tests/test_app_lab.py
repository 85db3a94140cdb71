"""The shapes-world lab in the served app, with the embedded model: new scenes, answers marked, the running score."""

import html
import json
import re
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from serving import free_port
from test_app_api import BASELINE_HTML, DOWNLOAD, METHOD_HTML, STATUS, compare_args, panel_text

from demo import shapes_lab
from demo.examples import EXAMPLES_DIR, shapes_examples
from demo import layout
from demo.allow_list import EMBEDDED_MODEL_DIR, TINY_MODEL
from demo.model_pool import ModelPool
from demo.texts import EMBEDDED_NOTICE, NOT_A_SCENE_NOTICE
from demo.ui import build_ui, launch
from models.shapes_world import grading

SCORE_HTML = 15  # /compare's output after the model (the third panel's follow)


@pytest.fixture(scope="module")
def served():
    pool = ModelPool([str(EMBEDDED_MODEL_DIR)])
    pool.get(pool.default)
    blocks = build_ui(pool)
    _, url, _ = launch(blocks, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield pool, url
    finally:
        blocks.close()


def marks_in(markup: str) -> list[str]:
    return re.findall(r'class="cd-mark cd-mark-(\w+)"', markup)


def scored_runs(markup: str) -> int:
    found = re.search(r"over (\d+) scored run", markup)
    return int(found.group(1)) if found else 0


def test_a_new_scene_is_answered_marked_against_its_ground_truth_and_scored(served):
    pool, url = served
    client = Client(url, verbose=False)
    image, question, caption = client.predict(api_name="/new_scene")
    assert "Ground truth" in caption and grading.parse_question(question) is not None

    out = client.predict(*compare_args(pool, handle_file(image), question, max_new_tokens=24), api_name="/compare")
    assert out[STATUS].startswith("Done") and "Ground truth:" in out[STATUS]
    for markup in (out[BASELINE_HTML], out[METHOD_HTML]):
        # every answer of the embedded model claims something (yes/no, or shapes): each panel shows its marks, and
        # they are the grading of the text it shows
        marks = marks_in(markup)
        assert marks and set(marks) <= {"correct", "hallucinated", "missed"}
        scene = shapes_lab.draw_scene(int(re.search(r"#(\d+)", caption).group(1)))[0]
        pieces = [html.unescape(p) for p in re.findall(r'data-token="\d+"[^>]*>([^<]*)</span>', markup)]
        pieces = [p.replace("∎", "") for p in pieces]  # the visible end-of-answer mark is an empty piece
        expected = [m for m in grading.grade_answer(scene, question, pieces).marks if m is not None]
        assert marks == expected
    assert scored_runs(out[SCORE_HTML]) == 1 and "<td>Baseline</td>" in out[SCORE_HTML]
    # the JSON download carries the scene and the same marks
    record = json.loads(Path(out[DOWNLOAD]).read_text())["shapes_world"]
    assert record["scene"]["seed"] == scene.seed and record["description"] in caption
    assert [m for m in record["grades"]["baseline"]["marks"] if m] == marks_in(out[BASELINE_HTML])

    # A photo: no ground truth, no marks, the score stays, and the app says the embedded model cannot read it.
    photo = handle_file(str(EXAMPLES_DIR / "cat.jpg"))
    out = client.predict(*compare_args(pool, photo, "describe the image .", max_new_tokens=6), api_name="/compare")
    assert NOT_A_SCENE_NOTICE in out[STATUS] and "Ground truth" not in out[STATUS]
    assert not marks_in(out[BASELINE_HTML]) and not marks_in(out[METHOD_HTML])
    assert scored_runs(out[SCORE_HTML]) == 1


def test_gallery_scenes_are_scored_without_a_draw_and_the_trap_shows(served):
    pool, url = served
    client = Client(url, verbose=False)  # a new session: its own score
    # the first three are partner questions: the truth is "no" each time
    for total, (name, question) in enumerate(shapes_examples()[:3], start=1):
        picture = handle_file(str(EXAMPLES_DIR / name))
        out = client.predict(*compare_args(pool, picture, question, max_new_tokens=4), api_name="/compare")
        assert 'The true answer is "no"' in out[STATUS]
        answer = re.match(r"\s*(yes|no)", panel_text(out[BASELINE_HTML])).group(1)
        assert marks_in(out[BASELINE_HTML])[0] == ("hallucinated" if answer == "yes" else "correct")
        assert scored_runs(out[SCORE_HTML]) == total


def test_the_page_opens_in_sampling_and_each_gallery_scene_splits_the_panels(served):
    """With the embedded model the page opens in sampling (greedy with any other model), and each shapes scene of the
    gallery, run as the page opens (VCD, T = 1, seed 0), gets two different answers: the gallery shows methods at
    work (how the scenes were found: `python -m demo.make_examples --find-differing`)."""
    pool, url = served
    client = Client(url, verbose=False)
    radio = next(c for c in client.config["components"] if c.get("props", {}).get("elem_id") == "cd-decoding")
    assert radio["props"]["value"] == "sampling" == layout.opening_decoding(pool)
    assert layout.opening_decoding(ModelPool([TINY_MODEL])) == "greedy"
    assert "opens in **sampling**" in EMBEDDED_NOTICE
    for name, question in shapes_examples():
        picture = handle_file(str(EXAMPLES_DIR / name))
        out = client.predict(*compare_args(pool, picture, question, max_new_tokens=64, decoding="sampling"),
                             api_name="/compare")
        assert out[STATUS].startswith("Done"), out[STATUS]
        assert panel_text(out[BASELINE_HTML]).strip() != panel_text(out[METHOD_HTML]).strip(), name
