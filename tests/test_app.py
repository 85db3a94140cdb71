"""The web app's parts that need no server: the command line, the allow-list, reading uploads, rendering traces."""

import html
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from decoding.comparison import compare
from decoding.methods import METHODS, REGISTRY, ROW_LABELS
from demo import render
from demo.allow_list import MODELS_ENV, TINY_MODEL, allowed_models, default_model, display_name
from demo.cli import parse_args
from demo.examples import EXAMPLES, EXAMPLES_DIR, gallery_examples, shapes_examples
from demo.images import MODEL_MAX_SIDE, attention_overlay, read_upload
from demo.model_pool import ModelPool


# ---- command line and allow-list ------------------------------------------------------------------------------------
def test_help_documents_every_operator_setting(capsys):
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--host", "--port", "--quantization", "--share", "--max-file-size", "--max-pixels",
                 "--queue-size", MODELS_ENV):
        assert flag in text


def test_help_answers_without_loading_gradio_or_torch():
    """`python app.py --help` reads its defaults from modules that need neither (a wrapper reports what it loaded)."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['app.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('app.py', run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        "print(sorted(m for m in ('gradio', 'torch', 'transformers') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--max-file-size" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_flags_parse_into_launch_settings():
    args = parse_args(["--model", "a/b", "--model", "c/d", "--port", "7999", "--quantization", "4bit", "--share"])
    assert args.models == ["a/b", "c/d"] and args.port == 7999 and args.quantization == "4bit" and args.share
    assert parse_args([]).quantization is None
    with pytest.raises(SystemExit):
        parse_args(["--quantization", "3bit"])


def test_allow_list_comes_from_flags_then_env_then_the_default(tmp_path):
    env = {MODELS_ENV: " org/one, ./local-folder ,org/one,"}
    assert allowed_models(["x/y"], env, tmp_path) == ["x/y"]
    assert allowed_models(None, env, tmp_path) == ["org/one", "./local-folder"]
    assert allowed_models(None, {}, tmp_path) == [TINY_MODEL]


def test_default_model_switches_to_the_embedded_model_once_it_exists(tmp_path):
    assert default_model(tmp_path) == TINY_MODEL
    (tmp_path / "config.json").write_text("{}")
    assert default_model(tmp_path) == str(tmp_path)


def test_only_the_embedded_model_gets_the_shapes_world_notice(tmp_path):
    embedded = tmp_path / "shapes-llava"
    embedded.mkdir()
    pool = ModelPool([str(embedded), TINY_MODEL, "llava-hf/llava-1.5-7b-hf", str(tmp_path / "other")])
    names = dict(zip(["embedded", "tiny", "hub", "other"], pool.names))
    assert pool.is_embedded(names["embedded"], embedded)
    assert not any(pool.is_embedded(names[k], embedded) for k in ("tiny", "hub", "other"))
    assert not pool.is_embedded("not on the list", embedded)


def test_visitors_see_folder_names_not_server_paths(tmp_path):
    assert display_name(str(tmp_path / "my-model")) == "my-model"
    assert display_name("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"
    pool = ModelPool([str(tmp_path / "a" / "m"), str(tmp_path / "b" / "m")])
    assert len(set(pool.names)) == 2 and all(str(tmp_path) not in name for name in pool.names)


def test_a_model_outside_the_allow_list_is_refused_before_any_loading(tmp_path):
    pool = ModelPool(["org/not-loaded"])
    for name in ("/etc", str(tmp_path), "org/other", None, ["org/not-loaded"]):
        with pytest.raises(ValueError, match="unknown model"):
            pool.get(name)
    with pytest.raises(ValueError) as refused:  # a library caller's name is cut short like a visitor's
        pool.get("m" * 100_000)
    assert len(str(refused.value)) < 300


# ---- reading uploads -----------------------------------------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims ``width`` x ``height`` but holds almost no data: decoding it would need the full size."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def test_read_upload_gives_clear_messages_for_bad_files(tmp_path):
    with pytest.raises(ValueError, match="No image"):
        read_upload(None)
    garbage = tmp_path / "photo.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ValueError, match="could not be read as an image"):
        read_upload(str(garbage))
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "whole.jpg")
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:400])
    with pytest.raises(ValueError, match="could not be read as an image"):
        read_upload(str(truncated))


def test_read_upload_refuses_a_huge_image_from_its_header(tmp_path):
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 10_000, 5_000)  # 50 MP: decoding it would take 150 MB
    with pytest.raises(ValueError, match=r"10000×5000 = 50,000,000 pixels; the limit is 24,000,000 pixels"):
        read_upload(str(huge))
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 200_000, 200_000)  # past PIL's own decompression-bomb limit
    with pytest.raises(ValueError, match="40,000,000,000 pixels by its header; the limit is 178,956,970 pixels"):
        read_upload(str(bomb), max_pixels=10**12)
    small = tmp_path / "small.png"
    Image.new("RGB", (400, 300)).save(small)
    with pytest.raises(ValueError, match="400×300 = 120,000 pixels; the limit is 100,000 pixels"):
        read_upload(str(small), max_pixels=100_000)


def test_read_upload_converts_and_scales_down(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGBA", (3000, 1000), (255, 0, 0, 128)).save(path)
    picture = read_upload(str(path))
    assert picture.mode == "RGB" and picture.size == (MODEL_MAX_SIDE, round(MODEL_MAX_SIDE / 3))
    path = tmp_path / "small.jpg"
    Image.new("L", (64, 48), 128).save(path)
    assert read_upload(str(path)).size == (64, 48)


def test_attention_overlay_is_bright_where_attention_is():
    picture = Image.new("RGB", (200, 100), (0, 0, 0))
    grid = np.full((2, 4), 0.01)
    grid[1, 3] = 0.9  # bottom right
    overlay = np.asarray(attention_overlay(picture, grid, side=400), dtype=float)
    assert overlay.shape == (200, 400, 3)
    hot, cold = overlay[150, 350].sum(), overlay[50, 50].sum()
    assert hot > cold + 200
    with pytest.raises(ValueError):
        attention_overlay(picture, [1.0, 2.0])


def test_example_gallery_ships_every_listed_file_with_a_licence():
    assert len(gallery_examples()) == len(EXAMPLES) + len(shapes_examples())
    licences = (EXAMPLES_DIR / "LICENSES.md").read_text()
    total = 0
    for name, question in EXAMPLES:
        assert f"`{name}`" in licences and question.strip()
        with Image.open(EXAMPLES_DIR / name) as image:
            assert max(image.size) <= 512
        total += (EXAMPLES_DIR / name).stat().st_size
    assert total < 600_000


# ---- rendering a real trace ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pool():
    pool = ModelPool([TINY_MODEL])
    pool.get(pool.default)
    return pool


@pytest.fixture(scope="module")
def comparison(tiny_pool):
    image = Image.open(EXAMPLES_DIR / "left_right.png")
    return compare(tiny_pool.get(tiny_pool.default), image, "What is on the left?", "ritual_vcd", max_new_tokens=8)


def _spans(markup: str) -> list[str]:
    return re.findall(r'<span class="cd-token[^"]*" data-token="(\d+)"', markup)


def test_heatmap_has_one_span_per_token_and_marks_changed_and_selected(comparison):
    scale = render.colour_scale(comparison, "visual_dependence")
    side = comparison.method_side
    markup = render.heatmap_html(side, scale, selected=1)
    assert _spans(markup) == [str(i) for i in range(len(side.tokens))]
    changed = re.findall(r'class="cd-token([^"]*)" data-token="(\d+)"', markup)
    assert [("cd-changed" in classes) for classes, _ in changed] == [t.changed for t in side.tokens]
    assert [index for classes, index in changed if "cd-selected" in classes] == ["1"]
    text = html.unescape(re.sub(r"<[^>]+>", "", markup))
    assert all(render.answer_piece(side, i) in text for i in range(len(side.tokens)))


def test_colour_scale_is_shared_and_symmetric(comparison):
    scale = render.colour_scale(comparison, "contrast_shift")
    largest = max(abs(t.contrast_shift) for side in render.sides(comparison) for t in side.tokens)
    assert scale.high == -scale.low == max(largest, render.MIN_DIVERGING_RANGE)
    assert scale.colour(0.0).endswith("0.000)") and scale.colour(None) == "transparent"
    assert scale.colour(scale.high) != scale.colour(scale.low)
    confidence = render.colour_scale(comparison, "confidence")
    assert (confidence.low, confidence.high) == (0.0, 1.0)
    with pytest.raises(ValueError):
        render.colour_scale(comparison, "loudness")


def test_token_text_is_escaped_and_made_visible():
    assert render.visible_piece("") == "∎" and render.visible_piece("a\x07") == "a⟨07⟩"
    from decoding.trace import BranchView, Candidate, SideResult, TokenTrace

    view = BranchView(0.5, [Candidate(1, "<script>", 0.5)])
    token = TokenTrace(0, 1, "<script>", {"original": view}, view, 1, False, 0.2, 0.0)
    side = SideResult("method", "vcd", "<script>", [token], True, "eos")
    markup = render.heatmap_html(side, render.Scale("visual_dependence", -1, 1))
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert "<script>" not in render.candidates_html(token)


def test_a_byte_held_back_mid_answer_is_not_shown_as_the_end():
    from decoding.trace import BranchView, SideResult, TokenTrace

    view = BranchView(0.5, [])
    pieces = ["A", "", " 😀", ""]  # the emoji's first byte adds nothing; the answer ends on EOS
    tokens = [TokenTrace(i, i, piece, {"original": view}, view, 1, False) for i, piece in enumerate(pieces)]
    side = SideResult("method", "vcd", "A 😀", tokens, True, "eos")
    assert [render.answer_piece(side, i) for i in range(4)] == ["A", render.HELD_BYTE, " 😀", "∎"]
    assert [label for label, _ in render.token_choices(side)][1] == f"1: “{render.HELD_BYTE}”"
    assert f">{render.HELD_BYTE}</span>" in render.heatmap_html(side, render.Scale("visual_dependence", -1, 1))
    assert f"“{render.HELD_BYTE}”" in render.candidates_html(tokens[1], render.answer_piece(side, 1))


def test_candidates_show_every_branch_and_the_final_distribution(comparison):
    token = comparison.method_side.tokens[0]
    markup = render.candidates_html(token, method=comparison.method)
    for role in token.branches:
        assert html.escape(REGISTRY[comparison.method].label(role)) in markup
    assert "final" in markup
    chosen_cells = re.findall(r'<td class="cd-chosen">', markup)
    views = [*token.branches.values(), token.final]
    in_top = sum(any(c.token_id == token.token_id for c in view.top) for view in views)
    assert len(chosen_cells) == in_top >= 1


def test_branch_notes_and_images_describe_the_pre_steps(comparison):
    notes = render.branch_notes(comparison)
    assert comparison.branches["transform"]["name"] in notes and "step **500**" in notes
    captions = [caption for _, caption in render.image_captions(comparison)]
    assert captions == [REGISTRY["ritual_vcd"].label(role) for role in comparison.images]
    assert captions[0] == ROW_LABELS["original"] and len(set(captions)) == len(captions)


def test_status_tells_how_each_side_ended(comparison):
    text = render.status_text(comparison, 1.25)
    assert text.startswith(("Done in 1.2 s", "Done in 1.3 s"))
    for side in render.sides(comparison):
        assert f"{len(side.tokens)} tokens ({side.stop_reason})" in text


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_a_title(method):
    assert render.method_title(method) == REGISTRY[method].title != method


def test_every_method_shows_its_source_and_each_defaults_source():
    from demo.ui import build_ui

    pool = ModelPool([TINY_MODEL])
    pool.get(pool.default)
    config = build_ui(pool).get_config_file()
    texts = [
        str(c.get("props", {}).get(key, "")) for c in config["components"] for key in ("value", "info", "label")
    ]
    for name, record in REGISTRY.items():
        assert any(record.source in t for t in texts), name
        for param in record.params:
            assert any(param.help in t and param.source in t for t in texts), (name, param.name)
    kinds = {c.get("props", {}).get("elem_id"): c.get("type") for c in config["components"]}
    assert kinds["cd-icd-instruction"] == "textbox" and kinds["cd-icd-alpha"] == "slider"


# ---- every method runs on the embedded model, and says what it did in its own words ---------------------------------
@pytest.fixture(scope="module")
def embedded_runner(tmp_path_factory):
    """The app's runner serving the embedded model, as the page serves it, with a shapes-world scene uploaded."""
    from demo.allow_list import EMBEDDED_MODEL_DIR
    from demo.run import Runner

    uploads = tmp_path_factory.mktemp("uploads")
    name, question = shapes_examples()[0]
    shutil.copy(EXAMPLES_DIR / name, uploads / "scene.png")
    pool = ModelPool([str(EMBEDDED_MODEL_DIR)])
    pool.get(pool.default)
    return Runner(pool, uploads, max_pixels=1_000_000), {"path": str(uploads / "scene.png")}, question


@pytest.mark.parametrize(("method", "folder"), [("ecd", "detector"), ("dcd", "projectors"), ("vti", "directions")])
def test_ecd_and_dcd_run_on_the_embedded_model_in_the_app_naming_no_server_path(embedded_runner, method, folder):
    """Their weights ship in the model's folder; the pool names the model by its display name, and the JSON download
    names the weights' folder by that name too."""
    from demo.run import SLIDERS, RunControl, RunRequest

    runner, image, question = embedded_runner
    request = RunRequest(image=image, question=question, model_name=runner.pool.default, method=method,
                         max_new_tokens=2, sliders=tuple(param.default for _, param in SLIDERS))
    final = list(runner.run(RunControl(), request))[-1]
    text = Path(final.details.download).read_text()
    record = json.loads(text)
    assert record["method"] == method and record["method_side"]["tokens"] and record["model_id"] == "shapes-llava"
    assert record["branches"][folder] == f"shapes-llava/{method}"
    for server_path in (str(Path(__file__).resolve().parent.parent), str(Path.home())):
        assert server_path not in text and server_path not in final.details.branch_notes


def test_every_contrast_row_is_named_in_words_by_its_record():
    for name, record in REGISTRY.items():
        for role in ("original", "distorted", *record.contrast_roles):
            label = record.label(role)
            assert label and label != role and "_" not in label, (name, role)
        assert record.label("original").startswith("original"), name  # the inspector's first column, in every panel


def test_vacode_s_note_says_it_picks_by_a_distance_not_by_asking_the_model(tiny_pool):
    image = Image.open(EXAMPLES_DIR / "left_right.png")
    run = compare(tiny_pool.get(tiny_pool.default), image, "What is on the left?", "vacode", max_new_tokens=1)
    notes = render.branch_notes(run)
    assert f"**{run.branches['augmentation']}**" in notes and "farthest (L2)" in notes
    assert "chose" not in notes and "Its answer" not in notes and "(empty)" not in notes


def test_a_control_beside_dola_takes_the_layer_colour_mode_too(tiny_pool):
    image = Image.open(EXAMPLES_DIR / "left_right.png")
    run = compare(tiny_pool.get(tiny_pool.default), image, "What is on the left?", "dola", max_new_tokens=3,
                  control="apc_only")
    scale = render.colour_scale(run, "first_top_layer")
    for side in render.sides(run):
        assert all(token.early_exit is not None for token in side.tokens), side.name
        assert render.NOT_RECORDED["first_top_layer"] not in render.heatmap_html(side, scale), side.name


def test_icd_s_instruction_from_the_page_reaches_the_contrast_row_or_is_refused_clearly(tiny_pool, tmp_path):
    from demo.run import SLIDERS, RunControl, RunError, RunRequest, Runner

    shutil.copy(EXAMPLES_DIR / "cat.jpg", tmp_path / "cat.jpg")
    runner = Runner(tiny_pool, tmp_path, max_pixels=1_000_000)
    index = [(method, param.name) for method, param in SLIDERS].index(("icd", "instruction"))

    def run(text):
        sliders = [param.default for _, param in SLIDERS]
        sliders[index] = text
        request = RunRequest(image={"path": str(tmp_path / "cat.jpg")}, question="What is this?",
                             model_name=tiny_pool.default, method="icd", max_new_tokens=2, sliders=tuple(sliders))
        return list(runner.run(RunControl(), request))[-1]

    given = "Look anywhere but at the picture."
    record = json.loads(Path(run(given).details.download).read_text())
    assert record["params"]["instruction"] == record["branches"]["instruction"] == given
    for bad, message in [("x" * 1_000_000, "instruction is too long: 1000000 characters"), ("", "instruction is empty"),
                         ("Be vague.\x07", "ICD's instruction holds a character that is not text"),
                         (["a", "list"], "instruction must be text"), (10**400, "instruction must be text")]:
        with pytest.raises(RunError) as refused:
            run(bad)
        assert message in refused.value.message and len(refused.value.message) < 300, refused.value.message
