"""The app's handlers without a page: a comparison run (demo.run), the token inspector (demo.views), the scene
lab's handlers (demo.shapes_lab) and the input checks (demo.checks), called with plain values as the page sends them."""

import html
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from PIL import Image

from decoding.comparison import compare
from decoding.methods import get_method
from decoding.sampling import SamplingConfig
from demo import checks, render, shapes_lab, texts, views
from demo.allow_list import EMBEDDED_MODEL_DIR, TINY_LABEL, TINY_MODEL
from demo.examples import EXAMPLES_DIR
from demo.model_pool import ModelPool
from demo.run import CONTROL_SLIDERS, CONTROLS, SLIDERS, RunControl, RunError, Runner, RunRequest, stop
from models.shapes_world import grading

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """A stand-in for gradio's upload folder, holding a photo."""
    folder = tmp_path_factory.mktemp("uploads")
    shutil.copy(EXAMPLES_DIR / "cat.jpg", folder / "cat.jpg")
    return folder


@pytest.fixture(scope="module")
def runner(uploads):
    pool = ModelPool([TINY_MODEL])
    pool.get(pool.default)
    return Runner(pool, uploads, max_pixels=1_000_000)


def request(uploads, **values) -> RunRequest:
    values.setdefault("image", {"path": str(uploads / "cat.jpg")})
    values.setdefault("question", "What is this?")
    values.setdefault("model_name", TINY_LABEL)
    values.setdefault("max_new_tokens", 4)
    return RunRequest(**values)


def tokens_in(markup: str) -> int:
    return markup.count('data-token="')


# ---- a run -----------------------------------------------------------------------------------------------------------
def test_a_run_streams_every_token_and_ends_with_everything(runner, uploads):
    control, done = RunControl(), runner.runs["done"]
    updates = list(runner.run(control, request(uploads, method="ritual")))
    *streamed, final = updates
    assert len(streamed) >= 2 and all(u.status.startswith("Generating") for u in streamed)
    first = streamed[0]
    # the first token clears what the previous run showed: the pickers, the inspector, the download
    assert first.details.token_choices == ([], []) and first.details.download is None
    assert first.details.heading == texts.METHOD_HEADING.format(title=get_method("ritual").title)
    assert all(u.details is None and u.score is None for u in streamed[1:])
    assert [tokens_in(u.heatmaps.method) for u in streamed] == sorted(tokens_in(u.heatmaps.method) for u in streamed)

    comparison = final.shown.comparison
    assert final.status.startswith("Done") and comparison.done and final.shown.marks == {}
    assert tokens_in(final.heatmaps.baseline) == len(comparison.baseline.tokens)
    assert final.details.token_choices == (
        render.token_choices(comparison.baseline), render.token_choices(comparison.method_side)
    )
    assert final.details.model == TINY_LABEL and final.details.models == runner.pool.names
    record = json.loads(Path(final.details.download).read_text())
    assert record["method"] == "ritual" and record["params"] == get_method("ritual").resolve({})
    assert final.score.runs == 0  # a photo: nothing to score
    assert runner.runs["done"] == done + 1 and runner.active_runs == 0 and not control.running
    assert control.download == final.details.download

    # the next run of the session replaces its download
    again = list(runner.run(control, request(uploads)))[-1]
    assert not Path(final.details.download).exists() and Path(again.details.download).exists()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"image": None}, "No image"),
        ({"image": {"path": "/etc/passwd"}}, "uploaded to this app"),
        ({"image": "/etc/passwd"}, "sent as an uploaded file"),
        ({"question": 12345}, "the question must be text"),
        ({"question": "   "}, "question is empty"),
        ({"method": "rm -rf /"}, "unknown method"),
        ({"method": ["vcd"]}, "unknown method"),
        ({"sliders": (1e30,) + RunRequest().sliders[1:]}, "alpha must be between 0 and 5 here"),
        ({"decoding_mode": "beam search"}, "decoding must be 'greedy' or 'sampling'"),
        ({"temperature": math.nan}, "temperature must be a finite number"),
        ({"max_new_tokens": 0}, "max new tokens must be between 1 and 256"),
        ({"colour_by": "loudness"}, "unknown colour mode"),
        ({"model_name": "/etc"}, "unknown model"),
    ],
)
def test_bad_requests_are_refused_with_a_message_before_any_update(runner, uploads, values, message):
    refused = runner.runs["refused"]
    with pytest.raises(RunError, match=message) as error:
        next(runner.run(RunControl(), request(uploads, **values)))
    assert error.value.title == texts.REFUSED_TITLE and runner.runs["refused"] == refused + 1


def test_stop_ends_a_running_comparison_after_its_token(runner, uploads):
    control = RunControl()
    assert stop(control) == texts.NOTHING_TO_STOP
    updates = runner.run(control, request(uploads, method="m3id", max_new_tokens=200))
    next(updates)
    assert control.running and stop(control) == texts.STOPPING
    final = list(updates)[-1]
    assert final.status.startswith("Stopped") and render.was_stopped(final.shown.comparison)
    assert final.shown.comparison.steps < 200 and stop(control) == texts.NOTHING_TO_STOP


def test_stop_while_the_model_loads_ends_the_run_before_its_first_token(runner, uploads):
    """Stop pressed while the model loads (the progress callback says so) is this run's, not nothing to stop."""
    control, stopped = RunControl(), runner.runs["stopped"]
    answers = []

    def progress(fraction, desc=""):
        if desc == texts.LOADING_MODEL:
            answers.append(stop(control))

    updates = list(runner.run(control, request(uploads, method="m3id"), progress=progress))
    assert answers == [texts.STOPPING]
    assert [u.status for u in updates] == [texts.STOPPED_WHILE_LOADING]
    assert runner.runs["stopped"] == stopped + 1 and runner.active_runs == 0
    assert not control.running and not control.stop_requested
    assert list(runner.run(control, request(uploads, method="m3id")))[-1].status.startswith("Done")  # the next runs


def test_a_refused_request_leaves_the_session_with_nothing_running(runner, uploads):
    control = RunControl()
    with pytest.raises(RunError):
        next(runner.run(control, request(uploads, question="   ")))
    assert not control.running and stop(control) == texts.NOTHING_TO_STOP


def test_closing_a_run_stops_it_at_once(runner, uploads):
    closed = runner.runs["closed"]
    updates = runner.run(RunControl(), request(uploads, method="m3id", max_new_tokens=200))
    next(updates)
    updates.close()  # what gradio does when the visitor cancels or leaves
    assert runner.runs["closed"] == closed + 1 and runner.active_runs == 0


def test_a_model_that_fails_to_load_is_replaced_and_the_visitor_warned(uploads, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pool = ModelPool(["org/offline-model", TINY_MODEL], fallback=TINY_MODEL)
    warnings = []
    final = list(Runner(pool, uploads).run(RunControl(), request(uploads, model_name="org/offline-model"),
                                           warn=warnings.append))[-1]
    assert len(warnings) == 1 and "'org/offline-model' could not be loaded" in warnings[0]
    assert final.details.model == TINY_LABEL and warnings[0] in final.status


# ---- the shapes-world lab --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(uploads):
    pool = ModelPool([str(EMBEDDED_MODEL_DIR)])
    pool.get(pool.default)
    return Runner(pool, uploads)


@pytest.mark.parametrize("control", ["none", "pba"])
def test_a_drawn_scene_is_marked_while_streaming_graded_once_and_scored(lab, uploads, control):
    drawn = lab.new_scene()
    assert drawn.caption == shapes_lab.scene_caption(drawn.scene) and Path(drawn.path).is_file()
    uploaded = str(shutil.copy(drawn.path, uploads / Path(drawn.path).name))  # as the page uploads it back
    score = shapes_lab.Scoreboard()
    updates = list(lab.run(RunControl(), request(uploads, image={"path": uploaded}, question=drawn.question,
                                                   model_name=lab.pool.default, max_new_tokens=24, control=control),
                                   drawn.scene, score))
    *streamed, final = updates
    comparison = final.shown.comparison
    for side in render.sides(comparison):
        pieces = [token.piece for token in side.tokens]
        grade = grading.grade_answer(drawn.scene, drawn.question, pieces)
        assert final.shown.marks[side.name] == grade.marks
        assert streamed[-1].shown.marks[side.name] == grade.marks  # the live marks of the last token: the same
    assert "Ground truth:" in final.status and score.runs == 1 and final.score is score
    assert "Baseline" in score.sides and 'class="cd-mark' in final.heatmaps.baseline
    assert set(final.shown.marks) == {side.name for side in render.sides(comparison)}
    assert ("PBA" in score.sides) == (control == "pba") and len(score.sides) == 2 + (control == "pba")
    record = json.loads(Path(final.details.download).read_text())["shapes_world"]
    assert record["scene"]["seed"] == drawn.scene.seed


def _with(method: str, **values) -> tuple:
    """The page's sliders at their defaults but ``values`` for ``method``'s parameters."""
    return tuple(values.get(param.name, param.default) if name == method else param.default
                 for name, param in SLIDERS)


def test_agla_oracle_mask_reads_a_known_scene_and_refuses_a_photo(lab, uploads):
    """AGLA-like's oracle mask (mask 1) needs the picture's ground truth: the app knows it for a drawn or gallery
    scene, and says so for any other picture."""
    drawn = lab.new_scene()
    uploaded = str(shutil.copy(drawn.path, uploads / Path(drawn.path).name))
    oracle = _with("agla", mask=1)
    final = list(lab.run(RunControl(), request(uploads, image={"path": uploaded}, question=drawn.question,
                                               model_name=lab.pool.default, max_new_tokens=2, method="agla",
                                               sliders=oracle), drawn.scene))[-1]
    assert final.status.startswith("Done") and final.shown.comparison.params["mask"] == 1
    with pytest.raises(RunError, match="oracle mask"):
        list(lab.run(RunControl(), request(uploads, model_name=lab.pool.default, max_new_tokens=2, method="agla",
                                           sliders=oracle)))


def test_a_photo_for_the_embedded_model_says_its_answers_mean_nothing(lab, uploads):
    final = list(lab.run(RunControl(), request(uploads, model_name=lab.pool.default, max_new_tokens=2)))[-1]
    assert texts.NOT_A_SCENE_NOTICE in final.status and final.shown.marks == {}


def test_the_caption_names_the_ground_truth_of_a_known_picture_only(uploads):
    drawn = shapes_lab.new_scene(uploads, seed=1_500_000_321)
    caption = shapes_lab.upload_caption({"path": drawn.path}, drawn.scene, uploads)
    assert caption == drawn.caption and "#1500000321" in caption
    assert shapes_lab.upload_caption({"path": drawn.path}, None, uploads) == shapes_lab.DEFAULT_CAPTION
    assert shapes_lab.upload_caption({"path": str(uploads / "cat.jpg")}, drawn.scene, uploads) == (
        shapes_lab.DEFAULT_CAPTION
    )
    for payload in (None, {"path": "/etc/passwd"}, "/etc/passwd"):
        assert shapes_lab.upload_caption(payload, drawn.scene, uploads) == shapes_lab.DEFAULT_CAPTION
    # A file a run would refuse gets the run's own refusal (one file, one answer everywhere).
    assert "no longer on the server" in shapes_lab.upload_caption({"path": str(uploads / "gone.png")}, None, uploads)


# ---- the third panel: a control ----------------------------------------------------------------------------------
def test_a_control_is_decoded_in_a_third_panel_as_the_library_decodes_it(runner, uploads):
    plain = list(runner.run(RunControl(), request(uploads, method="vcd", seed=3)))[-1]
    assert plain.shown.comparison.control_side is None and plain.details.control_heading == ""
    assert plain.details.control_choices == [] and "cd-empty" in plain.heatmaps.control
    assert "APC-only" not in plain.status

    sliders = tuple(0.3 if (name, p.name) == ("apc_only", "beta") else p.default for name, p in CONTROL_SLIDERS)
    updates = list(runner.run(
        RunControl(), request(uploads, method="vcd", seed=3, control="apc_only", control_sliders=sliders)
    ))
    *streamed, final = updates
    assert streamed[0].details.control_heading == texts.CONTROL_HEADING.format(title=get_method("apc_only").title)
    assert all(u.heatmaps.control.count('data-token="') >= 1 for u in streamed)
    comparison = final.shown.comparison
    assert comparison.control == "apc_only" and comparison.control_params == {"beta": 0.3}
    direct = compare(
        runner.pool.get(runner.pool.default), Image.open(uploads / "cat.jpg"), "What is this?", "vcd",
        max_new_tokens=4, seed=3, control="apc_only", control_params={"beta": 0.3},
    )
    assert [t.token_id for t in comparison.control_side.tokens] == [t.token_id for t in direct.control_side.tokens]
    assert comparison.control_side.text == direct.control_side.text
    # the baseline and the method are the same as without the control
    assert comparison.method_side.text == plain.shown.comparison.method_side.text
    assert tokens_in(final.heatmaps.control) == len(comparison.control_side.tokens)
    assert final.details.control_choices == render.token_choices(comparison.control_side)
    assert "APC-only:" in final.status and "(third panel)" in final.details.branch_notes
    record = json.loads(Path(final.details.download).read_text())
    assert record["control"] == "apc_only" and record["control_params"] == {"beta": 0.3}
    assert record["control_side"]["text"] == direct.control_side.text

    # the inspector works on the third panel like on the others
    index = len(comparison.control_side.tokens) - 1
    view = views.show_token(final.shown, "control", index, {"baseline": 0, "method": None}, "confidence")
    assert f"Token {index}:" in view.candidates and view.attention is not None
    assert f'cd-selected" data-token="{index}"' in view.heatmaps.control
    assert 'cd-selected" data-token="0"' in view.heatmaps.baseline
    assert views.clicked_token(final.shown, "control", 0) == final.details.control_choices


@pytest.mark.parametrize(
    "values, message",
    [
        ({"control": "vcd"}, "unknown control 'vcd'"),
        ({"control": 3}, "unknown control 3"),
        ({"control": "olm", "control_sliders": "x"}, "control sliders must be a list"),
        ({"control": "apc_only", "control_sliders": (2.0, 0.2, 0.5)}, "beta must be"),
    ],
)
def test_a_bad_control_is_refused_with_a_message(runner, uploads, values, message):
    with pytest.raises(RunError, match=message):
        next(runner.run(RunControl(), request(uploads, **values)))
    assert checks.control("none", CONTROLS) is None and checks.control("pba", CONTROLS) == "pba"


# ---- the token inspector ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shown(runner, uploads):
    return list(runner.run(RunControl(), request(uploads, method="vcd", max_new_tokens=5)))[-1].shown


def test_picking_a_token_shows_where_it_looked_and_its_candidates(shown):
    answer = shown.comparison.method_side
    index = len(answer.tokens) - 1
    view = views.show_token(shown, "method", index, {"baseline": 0}, "confidence")
    assert view.attention is not None and view.attention_caption.startswith("Where")
    assert f"Token {index}:" in view.candidates and "final" in view.candidates
    assert view.heatmaps.legend.startswith('<div class="cd-legend"><b>confidence')
    assert f'cd-selected" data-token="{index}"' in view.heatmaps.method
    assert 'cd-selected" data-token="0"' in view.heatmaps.baseline  # the other side's pick stays outlined


def test_a_model_whose_image_tokens_have_no_place_in_the_picture_says_so_instead_of_a_map(tmp_path):
    """InstructBLIP's query tokens lie on no grid of the picture: no overlay, a caption saying why, with the share."""
    from models import build_tiny, load_model

    model = load_model(build_tiny("instructblip", tmp_path / "instructblip"))
    comparison = compare(model, Image.new("RGB", (40, 30), "red"), "What is in the image?", "vcd", max_new_tokens=2,
                         ignore_eos=True)
    assert "original" in comparison.images and comparison.method_side.tokens[0].image_attention["grid"] is None
    view = views.show_token(views.ShownRun(comparison), "method", 0, {}, "confidence")
    assert view.attention is None and "Token 0:" in view.candidates
    assert view.attention_caption.startswith("No map of where") and "learned queries" in view.attention_caption
    assert "of its attention is on image tokens" in view.attention_caption


@pytest.mark.parametrize("index", [None, -1, 99, "1"])
def test_a_pick_outside_the_answer_shows_nothing(shown, index):
    view = views.show_token(shown, "baseline", index, {"method": None}, render.DEFAULT_COLOUR_MODE)
    assert view.attention is None and view.candidates == render.candidates_html(None)
    assert view.attention_caption == render.attention_caption(None) and "cd-selected" not in view.heatmaps.baseline
    assert views.clicked_token(shown, "baseline", index) is None


def test_a_click_on_a_token_selects_it_in_the_picker(shown):
    assert views.clicked_token(shown, "baseline", 1) == render.token_choices(shown.comparison.baseline)
    assert views.clicked_token(None, "baseline", 1) is None


def test_before_any_run_the_panels_say_what_goes_there():
    empty = views.heatmaps(None, render.DEFAULT_COLOUR_MODE)
    assert html.escape(texts.BASELINE_EMPTY) in empty.baseline and html.escape(texts.METHOD_EMPTY) in empty.method
    assert texts.PANEL_WAITING in views.empty_heatmap()


# ---- the checks ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, options, message",
    [
        (True, {}, "seed must be a number, got True"),
        ("8", {}, "seed must be a number, got '8'"),
        (None, {}, "seed must be a number, got None"),
        (math.inf, {}, "seed must be a finite number, got inf"),
        (2.5, {"integer": True}, "seed must be a whole number, got 2.5"),
        (-1, {"integer": True, "bounds": (0, 9)}, "seed must be between 0 and 9, got -1"),
        (0.01, {"bounds": (0.05, 2.0)}, "seed must be between 0.05 and 2, got 0.01"),
    ],
)
def test_numbers_from_controls_are_checked_with_the_controls_name(value, options, message):
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        checks.number("seed", value, **options)


def test_checks_give_back_the_values_they_accept():
    assert checks.number("seed", 3.0, integer=True) == 3 and isinstance(checks.number("t", 1), float)
    assert checks.question("Is it?") == "Is it?"
    with pytest.raises(ValueError, match="20000"):
        checks.question("x" * (checks.MAX_QUESTION_CHARS + 1))
    assert checks.max_new_tokens(256.0) == 256
    assert checks.sampling("sampling", 0.7, 0.9, 40, 5) == SamplingConfig(True, 0.7, 0.9, 40, 5)
    assert checks.sampling("greedy", 1, 1, 0, 0) == SamplingConfig()
    with pytest.raises(ValueError, match="top-k must be between 0 and 200"):
        checks.sampling("sampling", 1.0, 1.0, 201, 0)
    alpha = next(param for name, param in SLIDERS if (name, param.name) == ("vcd", "alpha"))
    assert checks.slider_value(alpha, 2) == 2.0
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        checks.slider_value(alpha, -1)


def test_file_sizes_read_like_gradios():
    assert checks.parse_file_size("10mb") == 10 * 2**20 and checks.parse_file_size("500 KB") == 500 * 1024
    assert checks.parse_file_size(2048) == checks.parse_file_size("2048") == checks.parse_file_size("2kb")
    for bad in ("ten mb", "1.5mb", "", True):
        with pytest.raises(ValueError, match="a file size is"):
            checks.parse_file_size(bad)


def test_uploads_are_read_only_from_the_upload_folder(uploads, tmp_path):
    assert checks.upload_path(None, uploads) is None
    assert checks.upload_path({"path": str(uploads / "cat.jpg")}, uploads) == str((uploads / "cat.jpg").resolve())
    for outside in ("/etc/passwd", str(tmp_path / "x.png"), f"{uploads}/../x.png"):
        with pytest.raises(ValueError, match="uploaded to this app"):
            checks.upload_path({"path": outside}, uploads)
    with pytest.raises(ValueError, match="sent as an uploaded file"):
        checks.upload_path({"url": "file:///etc/passwd"}, uploads)


def test_the_command_line_and_the_checks_load_neither_gradio_nor_torch():
    code = (
        "import sys\n"
        "import demo.checks, demo.cli\n"
        "print(sorted(m for m in ('gradio', 'torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
