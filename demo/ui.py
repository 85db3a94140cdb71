"""The Gradio app: inputs on the left, the two answers side by side, a token inspector under each.

Everything shown comes from `decoding.stream_compare` (one batched run for both panels) and is drawn by
`demo.render` / `demo.images`; this module only wires components and events.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from gradio.utils import get_upload_folder
from PIL import Image

from decoding.comparison import Comparison, stream_compare
from decoding.methods import METHOD_TITLES, METHODS
from decoding.rules import PARAMS
from models import ModelLoadError
from models.shapes_world import grading, world

from . import render, shapes_lab
from .examples import EXAMPLE_QUESTIONS, gallery_examples
from .images import DEFAULT_MAX_PIXELS, MODEL_MAX_SIDE, attention_overlay, read_upload
from .model_pool import ModelPool

log = logging.getLogger(__name__)

try:  # On Hugging Face Spaces with ZeroGPU, a GPU is attached only while a spaces.GPU function runs.
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn):
        return fn


MAX_NEW_TOKENS_LIMIT = 256
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_MAX_FILE_SIZE = "10mb"
DEFAULT_QUEUE_SIZE = 16
# A question's length is checked against the model's context by the library, after tokenizing it; this cap only keeps
# a visitor from making the server tokenize megabytes first. It is far above any model's context in characters.
MAX_QUESTION_CHARS = 20_000
MAX_SEED = 2**32 - 1
# The decoding controls' ranges; the API is held to them too.
TEMPERATURE_RANGE = (0.05, 2.0)
TOP_P_RANGE = (0.05, 1.0)
TOP_K_RANGE = (0, 200)
# A session's JSON download is replaced by its next run's; files of sessions gone for this long are deleted.
DOWNLOAD_TTL_S = 3600
# Scene pictures drawn for sessions are deleted after this long (gradio keeps its own copy for the page).
SCENE_TTL_S = 3600
# Progress updates go to the browser; CODE's description calls back once per token, so send only visible changes.
PROGRESS_STEP = 0.02

TINY_NOTICE = (
    "⚠️ **Untrained demo model.** This server runs a tiny model with random weights, so that the app starts with "
    "nothing to download: its answers are gibberish and its heatmaps mean nothing. Every control works the same with "
    "a real model: start the app with `--model llava-hf/llava-1.5-7b-hf` (or set `CD_MODELS`)."
)

NOT_A_SCENE_NOTICE = (
    "This picture is not a shapes-world scene: the embedded model only knows its 48 px world of coloured shapes, so "
    "its answers here mean nothing. Press 'New shapes-world scene' or pick a shapes example, or serve a real LVLM."
)

EMBEDDED_NOTICE = (
    "ℹ️ **Embedded shapes-world model.** This server runs a 1.3 M-parameter LLaVA trained only on 48 × 48 pictures "
    "of coloured shapes, in a closed vocabulary (\"is there a star in the image ?\", \"is the circle red ?\", "
    "\"are there exactly two squares ?\", \"is the square left of the circle ?\", \"describe the image .\"). "
    "On photos and free-form questions its answers mean nothing. For real images start the app with a real "
    "vision-language model: `--model llava-hf/llava-1.5-7b-hf` (or set `CD_MODELS`)."
)

HEADER = """# Contrastive decoding lab
Ask a question about an image and compare, side by side, the model's plain answer with its answer under a
training-free contrastive decoding method against hallucination. Both answers come from the same batched run.
Colour the tokens by how much the image supports them, how far the method moved them, or how confident the model was;
click a token to see where the model looked and which candidates each branch preferred."""

CSS = """
.cd-heatmap { line-height: 2.1; white-space: pre-wrap; font-size: 1.05rem; min-height: 3.5em; padding: 0.5em;
  border: 1px solid var(--border-color-primary); border-radius: 6px; background: var(--background-fill-primary); }
.cd-heatmap.cd-empty { color: var(--body-text-color-subdued); font-style: italic; }
.cd-token { cursor: pointer; border-radius: 3px; padding: 0.1em 0; color: var(--body-text-color); }
.cd-token:hover { outline: 1px solid #888; }
.cd-token.cd-changed { text-decoration: underline; text-decoration-thickness: 3px; text-underline-offset: 4px; }
.cd-token.cd-selected { outline: 2px solid #111; outline-offset: 1px; }
.cd-ending { color: var(--body-text-color-subdued); font-size: 0.8em; margin-left: 0.4em; }
.cd-legend { font-size: 0.9rem; line-height: 2; }
.cd-swatch { display: inline-block; min-width: 3.2em; text-align: center; margin-right: 2px; border-radius: 3px;
  border: 1px solid var(--border-color-primary); font-size: 0.8rem; }
.cd-legend-changed { margin-left: 1em; }
.cd-facts { font-size: 0.9rem; margin-bottom: 0.4em; }
.cd-candidates { overflow-x: auto; }
.cd-top { border-collapse: collapse; font-size: 0.85rem; }
.cd-top th, .cd-top td { padding: 1px 8px; border-bottom: 1px solid var(--border-color-primary); text-align: left;
  white-space: pre; }
.cd-top .cd-chosen-prob { color: var(--body-text-color-subdued); font-size: 0.8rem; }
.cd-top td.cd-chosen { font-weight: 700; background: rgba(37, 99, 235, 0.15); }
.cd-piece { font-family: var(--font-mono); }
.cd-token.cd-correct { box-shadow: inset 0 0 0 2px #15803d; }
.cd-token.cd-hallucinated { box-shadow: inset 0 0 0 2px #b91c1c; }
.cd-token.cd-missed { box-shadow: inset 0 0 0 2px #a16207; }
.cd-mark { font-weight: 700; margin: 0 2px 0 1px; }
.cd-mark-correct { color: #15803d; }
.cd-mark-hallucinated { color: #b91c1c; }
.cd-mark-missed { color: #a16207; }
.cd-score { font-size: 0.9rem; }
.cd-score.cd-empty { color: var(--body-text-color-subdued); font-style: italic; }
/* a 48 px shapes-world scene fills the box, its pixels kept sharp; photos are only ever scaled down to fit */
#cd-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""

# A click on a token span selects it: gr.HTML passes the event to Python as a select event with the token index.
SELECT_TOKEN_JS = """
element.addEventListener('click', (event) => {
  const span = event.target.closest('[data-token]');
  if (span) trigger('select', {index: Number(span.dataset.token), value: span.textContent, selected: true});
});
"""


def _with_notice(status: str, notice: str | None) -> str:
    return f"{status} ⚠️ {notice}" if notice else status


def _grades(comparison: Comparison | None, truth) -> dict[str, grading.Grade]:
    """Each side's answer scored against the run's scene: {side name: grade}; empty without a scene."""
    if comparison is None or not isinstance(truth, world.Scene):
        return {}
    return {
        side.name: grading.grade_answer(truth, comparison.question, [token.piece for token in side.tokens])
        for side in render.sides(comparison)
    }


def _remove_expired(folder: Path, pattern: str, ttl_s: float) -> None:
    """Delete the files matching ``pattern`` in ``folder`` that are older than ``ttl_s`` seconds."""
    expired = time.time() - ttl_s
    for old in folder.glob(pattern):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < expired:
                old.unlink()


class StopRequested(Exception):
    """Raised from the progress callback when Stop is pressed during a pre-step (no token has been decoded yet)."""


@dataclass
class RunControl:
    """One browser session's run: the Stop button sets ``stop_requested``, the running comparison polls it."""

    running: bool = False
    stop_requested: bool = False
    download: str | None = None  # this session's last JSON file, removed when the next run writes one


@dataclass(frozen=True)
class Panel:
    """The components of one side: its answer heatmap and its token inspector."""

    heading: gr.Markdown
    heatmap: gr.HTML
    token: gr.Dropdown
    attention: gr.Image
    candidates: gr.HTML


def _number(name: str, value, integer: bool = False, bounds: tuple[float, float] | None = None):
    """A number from a control (the API may send anything: text, None, NaN, huge values); ValueError naming the
    control otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")  # noqa: TRY004 (one type for visitors)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} must be between {_show(bounds[0])} and {_show(bounds[1])}, got {_show(value)}")
    return value


def _show(number) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def _upload_path(payload) -> str | None:
    """The stored file of an image payload. gradio refuses a payload naming a file it did not store; this checks
    again that the file lies in gradio's upload folder, so that no path a visitor writes is ever opened."""
    if payload is None:
        return None
    if not (isinstance(payload, dict) and isinstance(payload.get("path"), str)):
        raise ValueError("The image must be sent as an uploaded file.")  # noqa: TRY004
    path = Path(payload["path"]).resolve()
    if not path.is_relative_to(Path(get_upload_folder()).resolve()):
        raise ValueError("The image must be a file uploaded to this app.")
    return str(path)


def _question(question) -> str:
    if not isinstance(question, str):
        raise ValueError(f"the question must be text, got {type(question).__name__}")  # noqa: TRY004
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(
            f"the question is too long: {len(question)} characters, the limit is {MAX_QUESTION_CHARS}"
        )
    return question


def parse_file_size(size: str | int) -> int:
    """Bytes from "10mb", "500kb", "1gb" or a number of bytes (units of 1024, as gradio counts them)."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    text = str(size).strip().lower().replace(" ", "")
    units = {"gb": 1024**3, "mb": 1024**2, "kb": 1024, "b": 1}
    for unit, factor in units.items():
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * factor
    if text.isdigit():
        return int(text)
    raise ValueError(f"a file size is a number of bytes or a number with kb, mb or gb, got {size!r}")


def release_memory() -> None:
    """After a failed run: collect what its frames held (the rows' KV caches) and give the GPU memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _failure_message(error: Exception) -> tuple[str, str]:
    """(title, message) for an error raised while the model ran."""
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return (
            "Out of memory",
            (
                "The model ran out of memory during this comparison, so it was stopped and its memory freed. "
                "Try again with fewer new tokens, a simpler method, or when the server is less busy."
            ),
        )
    return "Run failed", f"The model failed during the run ({type(error).__name__}: {error}). Please try again."


class ComparisonApp:
    """Builds the Blocks and holds what its event handlers share: the model pool and the download folder."""

    def __init__(self, pool: ModelPool, max_pixels: int = DEFAULT_MAX_PIXELS, max_file_size: str | int | None = None):
        self.pool = pool
        self.max_pixels = max_pixels
        self.max_bytes = parse_file_size(max_file_size) if max_file_size is not None else None
        # How runs ended ("done", "stopped", "closed": the visitor cancelled or left, "refused": bad input, "failed"),
        # and how many are running: for the operator's log and for the tests.
        self.runs: Counter[str] = Counter()
        self.active_runs = 0
        self._runs_lock = threading.Lock()
        # This app's own folder for run downloads; each session keeps one file there, and it goes with the process.
        self._downloads = tempfile.TemporaryDirectory(prefix="cd-lab-runs-")
        self._scenes = tempfile.TemporaryDirectory(prefix="cd-lab-scenes-")
        self.param_specs = [(method, spec) for method in METHODS for spec in PARAMS[method]]

    # ---- event handlers ----------------------------------------------------------------------------------------------
    def run(
        self,
        control: RunControl,
        drawn_scene,
        score: shapes_lab.Scoreboard,
        image,
        question,
        model_name,
        method,
        decoding_mode,
        temperature,
        top_p,
        top_k,
        seed,
        max_new_tokens,
        colour_by,
        progress=gr.Progress(),  # noqa: B008 (gradio finds its progress tracker by this default)
        *param_values,
    ):
        """Stream a comparison: yields every output after each generated token.

        When the picture is a shapes-world scene the app knows (``drawn_scene``, the visitor's last draw, or a gallery
        scene), both answers are marked against its ground truth and the run is added to the session's ``score``.

        Bad input raises gr.Error with a message for the visitor; so does a failure while the model runs (out of
        memory included), after which the run's memory is freed. When the visitor cancels or leaves, gradio closes
        this generator: the comparison stops at once and its rows are dropped.
        """
        try:
            picture = read_upload(_upload_path(image), self.max_pixels, self.max_bytes)
            question = _question(question)
            if not isinstance(method, str) or method not in METHODS:
                raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
            params = {
                spec.name: self._method_param(spec, value)
                for (spec_method, spec), value in zip(self.param_specs, param_values)
                if spec_method == method
            }
            options = self._decoding_options(decoding_mode, temperature, top_p, top_k, seed, max_new_tokens)
            if not isinstance(colour_by, str) or colour_by not in {key for _, key in render.COLOUR_MODES}:
                raise ValueError(f"unknown colour mode {colour_by!r}")
            truth = shapes_lab.known_scene(picture, drawn_scene if isinstance(drawn_scene, world.Scene) else None)
            progress(0.0, desc="loading the model")
            served, model, notice = self.pool.load(model_name)
        except (ValueError, ModelLoadError) as error:
            self._count("refused")
            raise gr.Error(str(error), title="Cannot run this comparison") from None
        if notice:
            gr.Warning(notice, title="Model unavailable")
        elif truth is None and self.pool.is_embedded(served):
            notice = NOT_A_SCENE_NOTICE

        control.running, control.stop_requested = True, False
        last_reported = {"stage": None, "fraction": -1.0}

        def report(stage: str, fraction: float) -> None:
            if control.stop_requested:
                raise StopRequested
            if stage != last_reported["stage"] or fraction - last_reported["fraction"] >= PROGRESS_STEP:
                last_reported.update(stage=stage, fraction=fraction)
                progress(fraction, desc=stage)

        started = time.monotonic()
        first = True
        comparison = None
        outcome, failure = "failed", None
        with self._runs_lock:
            self.active_runs += 1
        stream = stream_compare(
            model, picture, question, method, progress=report, should_stop=lambda: control.stop_requested,
            **options, **params,
        )
        try:
            for comparison in stream:
                if comparison.done:
                    break
                yield self._streaming_update(comparison, colour_by, first, served, truth, notice)
                first = False
            seconds = time.monotonic() - started
            yield self._final_update(control, score, comparison, colour_by, seconds, served, truth, notice)
            outcome = "stopped" if control.stop_requested else "done"
        except StopRequested:
            outcome = "stopped"
            yield {self.status: "Stopped before the first token (during the method's pre-step)."}
        except GeneratorExit:  # the visitor cancelled the job or closed the page: gradio closes this generator
            outcome = "closed"
            raise
        except ValueError as error:  # the library's refusals: an empty or too long question, a bad option
            outcome, failure = "refused", ("Cannot run this comparison", str(error))
        except Exception as error:  # noqa: BLE001 (out of memory, or anything else: the app keeps serving)
            # The traceback as text: a log record holding the exception would keep the run's tensors alive.
            log.warning("run failed: %s", "".join(traceback.format_exception(error)).rstrip())
            failure = _failure_message(error)
        finally:
            stream.close()  # ends the engine's loop now, dropping its rows and their KV caches
            control.running = False
            steps = comparison.steps if comparison is not None else 0
            del stream, comparison, model
            self._count(outcome, active=-1)
            log.info("run %s after %d tokens in %.1f s", outcome, steps, time.monotonic() - started)
        if failure is not None:  # raised here, outside the except block, so the error holds no frame of the run
            if outcome == "failed":
                release_memory()
            title, message = failure
            raise gr.Error(message, title=title)

    def _count(self, outcome: str, active: int = 0) -> None:
        with self._runs_lock:
            self.runs[outcome] += 1
            self.active_runs += active

    @staticmethod
    def _method_param(spec, value):
        """A method's parameter from its slider: in its valid domain (the library's check) and in the slider's range."""
        value = spec.validate(value)
        if not spec.low <= value <= spec.high:
            raise ValueError(f"{spec.name} must be between {spec.low:g} and {spec.high:g} here, got {value:g}")
        return value

    @staticmethod
    def _decoding_options(decoding_mode, temperature, top_p, top_k, seed, max_new_tokens) -> dict:
        if not isinstance(decoding_mode, str) or decoding_mode not in ("greedy", "sampling"):
            raise ValueError(f"decoding must be 'greedy' or 'sampling', got {decoding_mode!r}")
        return {
            "do_sample": decoding_mode == "sampling",
            "temperature": _number("temperature", temperature, bounds=TEMPERATURE_RANGE),
            "top_p": _number("top-p", top_p, bounds=TOP_P_RANGE),
            "top_k": _number("top-k", top_k, integer=True, bounds=TOP_K_RANGE),
            "seed": _number("seed", seed, integer=True, bounds=(0, MAX_SEED)),
            "max_new_tokens": _number("max new tokens", max_new_tokens, integer=True, bounds=(1, MAX_NEW_TOKENS_LIMIT)),
        }

    def _heatmaps(
        self, comparison: Comparison | None, colour_by: str, selected=(None, None), grades: dict | None = None
    ) -> dict:
        """Both heatmaps and the legend; with ``grades`` (see _grades), each answer marked against its scene."""
        scale = render.colour_scale(comparison, colour_by)
        baseline = comparison.baseline if comparison is not None else None
        method_side = comparison.method_side if comparison is not None else None
        marks = {name: grade.marks for name, grade in (grades or {}).items()}
        return {
            self.legend: render.legend_html(scale),
            self.baseline.heatmap: render.heatmap_html(
                baseline, scale, selected[0], "The plain answer goes here.", marks.get("baseline")
            ),
            self.method.heatmap: render.heatmap_html(
                method_side, scale, selected[1], "The method's answer goes here.",
                marks.get(method_side.name) if method_side is not None else None,
            ),
        }

    def _score_update(self, score: shapes_lab.Scoreboard, comparison: Comparison, grades: dict) -> dict:
        """Add a finished run on a known scene (``grades`` not empty) to the session's running score; a stopped run is
        not scored."""
        if grades and not render.was_stopped(comparison):
            method = render.short_method_title(comparison.method)
            score.add({("Baseline" if name == "baseline" else method): grade for name, grade in grades.items()})
        return {self.score: score, self.score_html: score.html()}

    def _streaming_update(
        self,
        comparison: Comparison,
        colour_by: str,
        complete: bool,
        served: str,
        truth: world.Scene | None = None,
        notice: str | None = None,
        grades: dict | None = None,
    ) -> dict:
        """The outputs after a token. ``complete`` adds everything else the run shows (sent on the first token, which
        clears the previous run's, and on the last, so an API caller's final result holds every output).
        ``served``: the model that runs; ``truth``: the scene the answers are marked against, if known; ``notice``:
        what the visitor should know about the model (it failed to load, or the picture is outside its world);
        ``grades``: the answers already scored against ``truth`` (scored here when not given)."""
        update = {
            self.status: _with_notice(render.status_text(comparison), notice),
            self.state: comparison,
            self.truth: truth,
        }
        grades = _grades(comparison, truth) if grades is None else grades
        update.update(self._heatmaps(comparison, colour_by, grades=grades))
        if complete:
            update.update(
                {
                    self.model: gr.Dropdown(choices=self.pool.names, value=served),
                    self.method.heading: f"### {render.method_title(comparison.method)}",
                    self.branch_images: render.image_captions(comparison),
                    self.branch_notes: render.branch_notes(comparison),
                    self.download: None,
                }
            )
            for panel in (self.baseline, self.method):
                update.update(
                    {
                        panel.token: gr.Dropdown(choices=[], value=None),
                        panel.attention: gr.Image(value=None, label=render.attention_caption(None)),
                        panel.candidates: render.candidates_html(None),
                    }
                )
        return update

    def _final_update(
        self,
        control: RunControl,
        score: shapes_lab.Scoreboard,
        comparison: Comparison,
        colour_by: str,
        seconds: float,
        served: str,
        truth: world.Scene | None = None,
        notice: str | None = None,
    ) -> dict:
        """The last update: everything, the download, and the run added to the session's score (answers scored once)."""
        grades = _grades(comparison, truth)
        update = self._streaming_update(comparison, colour_by, True, served, truth, grades=grades)
        status = render.status_text(comparison, seconds)
        if truth is not None:
            status += " " + shapes_lab.truth_text(truth, comparison.question)
        update[self.status] = _with_notice(status, notice)
        update[self.baseline.token] = gr.Dropdown(choices=render.token_choices(comparison.baseline), value=None)
        update[self.method.token] = gr.Dropdown(choices=render.token_choices(comparison.method_side), value=None)
        update[self.download] = self._write_download(control, comparison, truth, grades)
        update.update(self._score_update(score, comparison, grades))
        return update

    def _write_download(
        self, control: RunControl, comparison: Comparison, truth: world.Scene | None = None, grades: dict | None = None
    ) -> str:
        """The run as JSON (the library's record, plus the scene's ground truth and the marks when it is known)."""
        if control.download is not None:
            Path(control.download).unlink(missing_ok=True)
        folder = Path(self._downloads.name)
        _remove_expired(folder, "comparison-*.json", DOWNLOAD_TTL_S)  # left by sessions that have gone
        path = folder / f"comparison-{comparison.method}-{uuid.uuid4().hex}.json"
        record = comparison.to_dict()
        if truth is not None:
            record["shapes_world"] = shapes_lab.ground_truth_record(truth, comparison.question, grades or {})
        path.write_text(json.dumps(record, indent=1), encoding="utf-8")
        control.download = str(path)
        return control.download

    def new_scene(self):
        """Draw a held-out shapes-world scene: its picture and question go to the inputs, the scene to the session."""
        folder = Path(self._scenes.name)
        _remove_expired(folder, "shapes-scene-*.png", SCENE_TTL_S)
        scene, question = shapes_lab.draw_scene(shapes_lab.random_seed())
        path = shapes_lab.write_scene(scene, folder)
        return str(path), question, scene, shapes_lab.scene_caption(scene)

    @staticmethod
    def describe_picture(image, drawn_scene) -> str:
        """The caption under the inputs: the ground truth when the picture is a known shapes-world scene.
        Only a picture of the world's size is decoded (from gradio's upload folder), so photos cost nothing here."""
        try:
            path = _upload_path(image)
            if path is None:
                return shapes_lab.scene_caption(None)
            with Image.open(path) as opened:
                if opened.size != (world.IMAGE_SIZE, world.IMAGE_SIZE):
                    return shapes_lab.scene_caption(None)
                picture = opened.convert("RGB")
        except (ValueError, OSError):
            return shapes_lab.scene_caption(None)
        drawn = drawn_scene if isinstance(drawn_scene, world.Scene) else None
        return shapes_lab.scene_caption(shapes_lab.known_scene(picture, drawn))

    @staticmethod
    def stop(control: RunControl) -> str:
        """Ask this session's running comparison to stop after its current token (nothing to do when none runs)."""
        if not control.running:
            return "No comparison is running."
        control.stop_requested = True
        return "Stopping…"

    def inspect(self, side_name: str):
        """The handler that shows one token of one side: its heatmap mark, attention overlay and candidates."""

        def show(comparison: Comparison | None, truth, index, other_index, colour_by):
            side = None
            if comparison is not None:
                side = comparison.baseline if side_name == "baseline" else comparison.method_side
            token = None
            if side is not None and isinstance(index, int) and 0 <= index < len(side.tokens):
                token = side.tokens[index]
            panel = self.baseline if side_name == "baseline" else self.method
            selected = (index, other_index) if side_name == "baseline" else (other_index, index)
            overlay = None
            if token is not None and token.image_attention and "original" in comparison.images:
                overlay = attention_overlay(comparison.images["original"], token.image_attention["grid"])
            update = self._heatmaps(comparison, colour_by, selected, _grades(comparison, truth))
            update.update(
                {
                    panel.attention: gr.Image(value=overlay, label=render.attention_caption(token)),
                    panel.candidates: render.candidates_html(token),
                }
            )
            return update

        return show

    @staticmethod
    def picker(side_name: str):
        """The handler of a click on a token of one side's heatmap: select that token in the side's picker."""

        def pick(comparison: Comparison | None, event: gr.SelectData):
            side = None
            if comparison is not None:
                side = comparison.baseline if side_name == "baseline" else comparison.method_side
            if side is None or not isinstance(event.index, int) or not 0 <= event.index < len(side.tokens):
                return gr.skip()
            return gr.Dropdown(choices=render.token_choices(side), value=event.index)

        return pick

    # ---- layout ------------------------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        pool = self.pool
        with gr.Blocks(title="Contrastive decoding lab", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
            gr.Markdown(HEADER)
            notice = gr.Markdown(TINY_NOTICE, visible=pool.is_untrained(pool.default), elem_id="cd-notice")
            embedded_notice = gr.Markdown(
                EMBEDDED_NOTICE, visible=pool.is_embedded(pool.default), elem_id="cd-embedded-notice"
            )
            if pool.notice:  # the operator's model failed to load at start: say what is served instead
                gr.Markdown(f"⚠️ {pool.notice}", elem_id="cd-fallback-notice")
            control = gr.State(RunControl())
            self.state = gr.State(None)
            drawn_scene = gr.State(None)  # the shapes-world scene this session drew last
            self.truth = gr.State(None)  # the scene the shown run is marked against (None: no ground truth)
            self.score = gr.State(shapes_lab.Scoreboard())
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    image = gr.Image(
                        label="Image",
                        type="filepath",
                        sources=["upload", "webcam", "clipboard"],
                        height=320,
                        elem_id="cd-image",
                    )
                    question = gr.Textbox(
                        label="Question", placeholder="Ask something about the image", lines=2, elem_id="cd-question"
                    )
                    with gr.Row():
                        new_scene_button = gr.Button(
                            "New shapes-world scene", size="sm", elem_id="cd-new-scene", scale=0, min_width=220
                        )
                        scene_caption = gr.Markdown(shapes_lab.DEFAULT_CAPTION, elem_id="cd-scene-caption")
                    gr.Examples(
                        examples=gallery_examples(shapes_first=pool.is_embedded(pool.default)),
                        inputs=[image, question],
                        label="Example images (each fills in a question too)",
                        examples_per_page=12,
                        visible_columns=[0],
                        elem_id="cd-examples",
                    )
                    gr.Examples(
                        examples=[[q] for q in EXAMPLE_QUESTIONS],
                        inputs=[question],
                        label="Example questions",
                        elem_id="cd-example-questions",
                    )
                with gr.Column(scale=2):
                    self.model = model = gr.Dropdown(
                        choices=pool.names,
                        value=pool.default,
                        label="Model",
                        interactive=len(pool.names) > 1,
                        elem_id="cd-model",
                    )
                    method = gr.Dropdown(
                        choices=[(METHOD_TITLES[m], m) for m in METHODS],
                        value=METHODS[0],
                        label="Method",
                        elem_id="cd-method",
                    )
                    sliders = []
                    groups = {}
                    for name in METHODS:
                        with gr.Group(visible=name == METHODS[0]) as groups[name]:
                            for spec in PARAMS[name]:
                                sliders.append(
                                    gr.Slider(
                                        minimum=spec.low,
                                        maximum=spec.high,
                                        value=spec.default,
                                        step=1 if spec.integer else spec.step,
                                        label=f"{spec.name} (paper default {spec.default:g})",
                                        info=spec.help,
                                        elem_id=f"cd-{name}-{spec.name}",
                                    )
                                )
                    with gr.Accordion("Decoding", open=False):
                        decoding_mode = gr.Radio(
                            choices=["greedy", "sampling"], value="greedy", label="Decoding", elem_id="cd-decoding"
                        )
                        with gr.Group(visible=False) as sampling_group:
                            temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="temperature")
                            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="top-p")
                            top_k = gr.Slider(0, 200, value=0, step=1, label="top-k (0 = off)")
                        seed = gr.Number(value=0, precision=0, label="seed (noise, transforms, sampling)", minimum=0)
                    max_new_tokens = gr.Slider(
                        1, MAX_NEW_TOKENS_LIMIT, value=DEFAULT_MAX_NEW_TOKENS, step=1, label="max new tokens",
                        elem_id="cd-max-new-tokens",
                    )
                    gr.Markdown(
                        f"Images over {self.max_pixels / 1e6:g} megapixels are refused; larger sides than "
                        f"{MODEL_MAX_SIDE} px are scaled down before the model sees them."
                    )
                    with gr.Row():
                        run_button = gr.Button("Compare", variant="primary", elem_id="cd-run")
                        stop_button = gr.Button("Stop", variant="stop", elem_id="cd-stop")
                    self.status = gr.Markdown("", min_height=48, elem_id="cd-status")
                    # What /stop answers (for API callers). Not the status line: the run's own stream shows the stop,
                    # and a separate reply could land after the run's last update and overwrite "Stopped".
                    stop_reply = gr.Markdown(visible=False)
            with gr.Row():
                colour_by = gr.Radio(
                    choices=list(render.COLOUR_MODES),
                    value=render.DEFAULT_COLOUR_MODE,
                    label="Colour tokens by",
                    scale=1,
                    elem_id="cd-colour-by",
                )
                self.legend = gr.HTML(
                    render.legend_html(render.colour_scale(None, render.DEFAULT_COLOUR_MODE)), elem_id="cd-legend"
                )
            with gr.Row(equal_height=False):
                self.baseline = self._panel("baseline", "### Baseline: plain decoding")
                self.method = self._panel("method", f"### {render.method_title(METHODS[0])}")
            with gr.Accordion("What each branch fed the model", open=True):
                self.branch_images = gr.Gallery(
                    label="The picture each row fed the model",
                    columns=4,
                    rows=1,
                    height=330,
                    fit_columns=False,
                    object_fit="contain",
                    allow_preview=True,
                    elem_id="cd-branch-images",
                )
                self.branch_notes = gr.Markdown(elem_id="cd-branch-notes")
            with gr.Row(equal_height=False):
                self.score_html = gr.HTML(shapes_lab.Scoreboard().html(), elem_id="cd-score")
                reset_score = gr.Button("Reset score", size="sm", scale=0, min_width=120, elem_id="cd-reset-score")
            self.download = gr.File(
                label="The whole run as JSON (trace, parameters, model id, seed)", interactive=False, height=80,
                elem_id="cd-download",
            )

            outputs = [
                self.status,
                self.state,
                self.legend,
                self.method.heading,
                self.branch_images,
                self.branch_notes,
                self.download,
            ]
            for panel in (self.baseline, self.method):
                outputs += [panel.heatmap, panel.token, panel.attention, panel.candidates]
            outputs.append(model)  # the model that answered: another one when the picked one failed to load
            outputs += [self.truth, self.score, self.score_html]
            run_inputs = [control, drawn_scene, self.score, image, question, model, method, decoding_mode]
            run_inputs += [temperature, top_p, top_k, seed]
            run_inputs += [max_new_tokens, colour_by, *sliders]
            run_comparison = gpu(self.run)
            # preprocess=False: the image is read by read_upload, which checks its size before decoding and turns a
            # corrupt file into a clear message (gradio's own preprocessing would fail first with a generic error).
            run_button.click(
                run_comparison,
                inputs=run_inputs,
                outputs=outputs,
                preprocess=False,
                concurrency_limit=1,  # one model in memory, and the engine switches its attention kernel per run
                concurrency_id="model",
                api_name="compare",
                show_progress_on=[self.status],
            )
            question.submit(
                run_comparison,
                inputs=run_inputs,
                outputs=outputs,
                preprocess=False,
                concurrency_limit=1,
                concurrency_id="model",
                api_visibility="private",
                show_progress_on=[self.status],
            )
            # Not queued: Stop must get through while the run it stops holds the queue's only slot. The small handlers
            # below skip the queue too, so inspecting a finished run never waits behind other visitors' comparisons.
            stop_button.click(self.stop, inputs=[control], outputs=[stop_reply], queue=False, api_name="stop")
            new_scene_button.click(
                self.new_scene,
                outputs=[image, question, drawn_scene, scene_caption],
                queue=False,
                api_name="new_scene",
            )
            image.change(
                self.describe_picture,
                inputs=[image, drawn_scene],
                outputs=[scene_caption],
                preprocess=False,
                queue=False,
                api_visibility="private",
            )
            reset_score.click(
                lambda: (shapes_lab.Scoreboard(), shapes_lab.Scoreboard().html()),
                outputs=[self.score, self.score_html],
                queue=False,
                api_visibility="private",
            )

            method.change(
                lambda m: [gr.Group(visible=m == name) for name in METHODS] + [f"### {render.method_title(m)}"],
                inputs=[method],
                outputs=[*groups.values(), self.method.heading],
                api_visibility="private",
                queue=False,
            )
            decoding_mode.change(
                lambda mode: gr.Group(visible=mode == "sampling"),
                inputs=[decoding_mode],
                outputs=[sampling_group],
                api_visibility="private",
                queue=False,
            )
            model.change(
                lambda name: (gr.Markdown(visible=pool.is_untrained(name)), gr.Markdown(visible=pool.is_embedded(name))),
                inputs=[model],
                outputs=[notice, embedded_notice],
                api_visibility="private",
                queue=False,
            )
            sides = ((self.baseline, self.method, "baseline"), (self.method, self.baseline, "method"))
            for panel, other, side_name in sides:
                panel.token.change(
                    self.inspect(side_name),
                    inputs=[self.state, self.truth, panel.token, other.token, colour_by],
                    outputs=[
                        self.legend, self.baseline.heatmap, self.method.heatmap, panel.attention, panel.candidates
                    ],
                    api_visibility="private",
                    queue=False,
                )
                panel.heatmap.select(
                    self.picker(side_name),
                    inputs=[self.state],
                    outputs=[panel.token],
                    api_visibility="private",
                    queue=False,
                )
            colour_by.change(
                lambda comparison, truth, colour, b, m: self._heatmaps(comparison, colour, (b, m), _grades(comparison, truth)),
                inputs=[self.state, self.truth, colour_by, self.baseline.token, self.method.token],
                outputs=[self.legend, self.baseline.heatmap, self.method.heatmap],
                api_visibility="private",
                queue=False,
            )
        return blocks

    def _panel(self, side_name: str, heading: str) -> Panel:
        with gr.Column(scale=1, min_width=320, variant="panel"):
            heading_md = gr.Markdown(heading)
            heatmap = gr.HTML(
                render.heatmap_html(None, render.colour_scale(None, render.DEFAULT_COLOUR_MODE), None, "…"),
                js_on_load=SELECT_TOKEN_JS,
                elem_id=f"cd-{side_name}-answer",
            )
            token = gr.Dropdown(
                choices=[], value=None, label="Inspect token", interactive=True, elem_id=f"cd-{side_name}-token"
            )
            attention = gr.Image(
                label=render.attention_caption(None),
                interactive=False,
                height=260,
                elem_id=f"cd-{side_name}-attention",
            )
            candidates = gr.HTML(render.candidates_html(None), elem_id=f"cd-{side_name}-candidates")
        return Panel(heading_md, heatmap, token, attention, candidates)


def build_ui(
    pool: ModelPool, max_pixels: int = DEFAULT_MAX_PIXELS, max_file_size: str | int | None = None
) -> gr.Blocks:
    return ComparisonApp(pool, max_pixels, max_file_size).build()


def launch(
    blocks: gr.Blocks,
    *,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    **kwargs,
):
    """Queue and serve the app (the settings the CLI exposes, plus gradio's own launch keywords)."""
    blocks.queue(max_size=queue_size, default_concurrency_limit=1)
    return blocks.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_file_size,
        css=CSS,
        ssr_mode=False,  # server-side rendering needs Node.js, which a Space or a laptop may not have
        # The app's own errors are gr.Error messages already; this also lets gradio's refusals of a crafted request
        # (a file it did not store, a malformed payload) reach the caller as their message instead of "Error".
        show_error=True,
        **kwargs,
    )


__all__ = ["CSS", "ComparisonApp", "RunControl", "build_ui", "gpu", "launch"]
