"""One comparison of the app, as plain Python: the visitor's request checked, the model loaded, both answers streamed
from `decoding.stream_compare`, the run written as JSON and, on a known shapes-world scene, marked and scored.

No gradio here: `demo.ui` hands in the values of the page's controls and maps each `RunUpdate` onto the components,
so every step runs without a page. Refusals and failures are `RunError`, whose message is for the visitor.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from decoding import agla
from decoding.comparison import Comparison, stream_compare
from decoding.methods import REGISTRY, Param, get_method
from decoding.sampling import SamplingConfig
from models import FamilyAdapter, ModelLoadError
from models.shapes_world import world

from . import checks, render, shapes_lab, texts, views
from .images import read_upload
from .model_pool import QUESTION_ROOM, ModelPool

log = logging.getLogger(__name__)

# Every method's parameter sliders, in the order /compare takes them after its other inputs.
SLIDERS: tuple[tuple[str, Param], ...] = tuple((name, p) for name, method in REGISTRY.items() for p in method.params)
# The controls a third panel may decode, and their sliders (after the control menu, at the end of /compare's inputs).
CONTROLS: tuple[str, ...] = tuple(name for name, record in REGISTRY.items() if record.kind == "control")
CONTROL_SLIDERS: tuple[tuple[str, Param], ...] = tuple((name, p) for name in CONTROLS for p in REGISTRY[name].params)
# A session's JSON download is replaced by its next run's; files of sessions gone for this long are deleted.
DOWNLOAD_TTL_S = 3600
# Progress updates go to the browser; CODE's description calls back once per token, so send only visible changes.
PROGRESS_STEP = 0.02


ProgressFn = Callable[..., None]  # progress(fraction, desc=...), as gradio's gr.Progress is called


class RunError(Exception):
    """A run refused or failed: ``title`` and ``message`` are for the visitor."""

    def __init__(self, title: str, message: str):
        super().__init__(message)
        self.title, self.message = title, message


class StopRequested(Exception):
    """Raised from the progress callback when Stop is pressed during a pre-step (no token has been decoded yet)."""


@dataclass
class RunControl:
    """One browser session's run: the Stop button sets ``stop_requested``, the running comparison polls it, and a
    run that was still waiting in the queue (``waiting``, set by the page's Compare before the run joins the queue)
    ends as soon as it starts."""

    running: bool = False
    stop_requested: bool = False
    waiting: bool = False
    download: str | None = None  # this session's last JSON file, removed when the next run writes one


@dataclass(frozen=True)
class RunRequest:
    """The values of /compare's inputs, as sent (the API may send anything in each)."""

    image: Any = None
    question: Any = ""
    model_name: Any = None
    method: Any = "vcd"
    decoding_mode: Any = "greedy"
    temperature: Any = 1.0
    top_p: Any = 1.0
    top_k: Any = 0
    seed: Any = 0
    max_new_tokens: Any = checks.DEFAULT_MAX_NEW_TOKENS
    colour_by: Any = render.DEFAULT_COLOUR_MODE
    sliders: tuple = tuple(param.default for _, param in SLIDERS)  # in SLIDERS order
    control: Any = texts.NO_CONTROL  # the third panel's control (a CONTROLS name), or none
    control_sliders: tuple = tuple(param.default for _, param in CONTROL_SLIDERS)  # in CONTROL_SLIDERS order


@dataclass(frozen=True)
class RunSettings:
    """A request, checked: what the run decodes, and the scene its answers are marked against (if known)."""

    picture: Image.Image
    question: str
    method: str
    params: dict[str, Any]
    sampling: SamplingConfig
    max_new_tokens: int
    colour_by: str
    truth: world.Scene | None
    control: str | None = None
    control_params: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunDetails:
    """What a run shows besides its answers. Sent with the first token, clearing what the previous run left in the
    inspector and the download, and with the last."""

    model: str  # the model that answered: another one when the picked one failed to load
    models: list[str]  # the allow-list now (a fallback may have joined it)
    heading: str
    branch_images: list
    branch_notes: str
    token_choices: tuple[list, list] = ([], [])  # the pickers' choices (baseline, method): filled at the end
    download: str | None = None
    control_heading: str = ""  # the third panel's, when a control is decoded
    control_choices: list = field(default_factory=list)  # its picker's choices: filled at the end


@dataclass(frozen=True)
class RunUpdate:
    """What changes on the page after a token; None: unchanged."""

    status: str
    shown: views.ShownRun | None = None
    heatmaps: views.Heatmaps | None = None
    details: RunDetails | None = None
    score: shapes_lab.Scoreboard | None = None  # the session's score, after the run's last token


@dataclass
class _Run:
    """A run under way: its settings, the model that answers and what the visitor should know about it."""

    settings: RunSettings
    served: str
    model: FamilyAdapter
    fallback: str | None  # the picked model failed to load (``served`` answers instead): why
    notice: str | None  # that, or that the picture is outside the embedded model's world
    live: dict[str, shapes_lab.LiveMarks] = field(default_factory=dict)  # per side, on a known scene

    def marks(self, comparison: Comparison) -> dict[str, tuple[str | None, ...]]:
        """Each side's marks so far, grading only its new tokens."""
        marks = {}
        for answer in render.sides(comparison):
            if answer.name in self.live:
                live = self.live[answer.name]
                marks[answer.name] = live.extend(token.piece for token in answer.tokens[len(live) :])
        return marks


def check_request(
    request: RunRequest, drawn_scene, *, upload_folder: str | Path, max_pixels: int, max_bytes: int | None
) -> RunSettings:
    """The request's values checked, in the order of the page's controls; ValueError for the first bad one."""
    picture = read_upload(checks.upload_path(request.image, upload_folder), max_pixels, max_bytes)
    question = checks.question(request.question)
    method = get_method(checks.choice("method", request.method, REGISTRY))
    params = {
        param.name: checks.slider_value(param, value)
        for (name, param), value in zip(SLIDERS, request.sliders)
        if name == method.name
    }
    sampling = checks.sampling(request.decoding_mode, request.temperature, request.top_p, request.top_k, request.seed)
    max_new_tokens = checks.max_new_tokens(request.max_new_tokens)
    colour_by = checks.choice("colour mode", request.colour_by, render.COLOUR_KEYS)
    truth = shapes_lab.known_scene(picture, drawn_scene if isinstance(drawn_scene, world.Scene) else None)
    control = checks.control(request.control, CONTROLS, texts.NO_CONTROL)
    control_params = None
    if control is not None:
        control_params = {
            param.name: checks.slider_value(param, value)
            for (name, param), value in zip(CONTROL_SLIDERS, _values(request.control_sliders, "control sliders"))
            if name == control
        }
    return RunSettings(
        picture, question, method.name, params, sampling, max_new_tokens, colour_by, truth, control, control_params
    )


def _values(values, name: str) -> tuple:
    if not isinstance(values, (tuple, list)):
        raise ValueError(f"the {name} must be a list of numbers, got {checks.shown(values)}")  # noqa: TRY004
    return tuple(values)


def wait_for_run(control: RunControl) -> None:
    """The page's Compare, before its run joins the queue: until the run starts, Stop cancels it (gradio's queue
    tells the app nothing of a waiting run)."""
    control.waiting = True
    if not control.running:  # a click while a run goes on leaves that run's Stop alone
        control.stop_requested = False


def stop(control: RunControl) -> str:
    """Ask this session's running comparison to stop after its current token, or its waiting one not to run
    (nothing to do when neither)."""
    if control.running:
        control.stop_requested = True
        return texts.STOPPING
    if control.waiting:
        control.stop_requested = True
        return texts.CANCELLING_WAITING
    return texts.NOTHING_TO_STOP


def release_memory() -> None:
    """After a failed run: collect what its frames held (the rows' KV caches) and give the GPU memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def failure_message(error: Exception) -> tuple[str, str]:
    """(title, message) for an error raised while the model ran."""
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return texts.OUT_OF_MEMORY_TITLE, texts.OUT_OF_MEMORY
    return texts.RUN_FAILED_TITLE, texts.RUN_FAILED.format(kind=type(error).__name__)


def with_notice(status: str, notice: str | None) -> str:
    return texts.WITH_NOTICE.format(status=status, notice=notice) if notice else status


class Runner:
    """Runs the comparisons of every session and holds what they share: the model pool, the upload limits, the run
    counters and the folders of downloads and drawn scenes."""

    def __init__(
        self,
        pool: ModelPool,
        upload_folder: str | Path,
        max_pixels: int = checks.DEFAULT_MAX_PIXELS,
        max_file_size: str | int | None = None,
    ):
        self.pool = pool
        self.upload_folder = upload_folder  # the only folder a visitor's image is read from
        self.max_pixels = max_pixels
        self.max_bytes = checks.parse_file_size(max_file_size) if max_file_size is not None else None
        # How runs ended ("done", "stopped", "closed": the visitor cancelled or left, "refused": bad input, "failed",
        # "cancelled": stopped while waiting in the queue),
        # and how many are running: for the operator's log and for the tests.
        self.runs: Counter[str] = Counter()
        self.active_runs = 0
        self._runs_lock = threading.Lock()
        # This app's own folders; each session keeps one download there, and they go with the process.
        self._downloads = tempfile.TemporaryDirectory(prefix="cd-lab-runs-")
        self._scenes = tempfile.TemporaryDirectory(prefix="cd-lab-scenes-")

    def new_scene(self) -> shapes_lab.DrawnScene:
        return shapes_lab.new_scene(Path(self._scenes.name))

    def run(
        self,
        control: RunControl,
        request: RunRequest,
        drawn_scene=None,
        score: shapes_lab.Scoreboard | None = None,
        progress: ProgressFn = lambda *args, **kwargs: None,
        warn: Callable[[str], None] = lambda notice: None,
    ) -> Iterator[RunUpdate]:
        """Stream a comparison: an update after each generated token, the last one complete.

        When the picture is a shapes-world scene the app knows (``drawn_scene``, the visitor's last draw, or a gallery
        scene), both answers are marked against its ground truth and the run is added to the session's ``score``.
        ``warn`` gets the notice of a model that failed to load (another one answers). Bad input raises RunError
        before the first update; so does a failure while the model runs (out of memory included), after which the
        run's memory is freed. Closing this generator (the visitor cancelled or left) stops the comparison at once.
        A run the visitor stopped while it waited in the queue ends here, with a status saying so.
        """
        cancelled, control.waiting = control.waiting and control.stop_requested and not control.running, False
        if cancelled:
            self._count("cancelled")
            log.info("run cancelled: Stop was pressed while it waited in the queue")
            yield RunUpdate(texts.CANCELLED_WAITING)
            return
        control.running, control.stop_requested = True, False  # from here Stop means this run, its loading included
        try:
            run = self._start(request, drawn_scene, progress)
        except BaseException:
            control.running = False
            raise
        if run.fallback:
            warn(run.fallback)
        if control.stop_requested:  # pressed while the model loaded: no token decoded, no run counted as active
            control.running = control.stop_requested = False
            self._count("stopped")
            log.info("run stopped while its model loaded")
            yield RunUpdate(texts.STOPPED_WHILE_LOADING)
            return
        yield from self._stream(control, run, score if score is not None else shapes_lab.Scoreboard(), progress)

    def _start(self, request: RunRequest, drawn_scene, progress: ProgressFn) -> _Run:
        try:
            settings = check_request(
                request, drawn_scene, upload_folder=self.upload_folder, max_pixels=self.max_pixels,
                max_bytes=self.max_bytes,
            )
            progress(0.0, desc=texts.LOADING_MODEL)
            served, model, fallback = self.pool.load(checks.choice("model", request.model_name, self.pool.names))
            limit = self.pool.new_token_limit(served)
            if settings.max_new_tokens > limit:
                raise ValueError(texts.TOO_MANY_NEW_TOKENS.format(
                    asked=settings.max_new_tokens, limit=limit, context=model.max_length, room=QUESTION_ROOM
                ))
        except (ValueError, ModelLoadError) as error:
            self._count("refused")
            log.info("run refused: %s", error)  # one line: a refusal is no crash
            raise RunError(texts.REFUSED_TITLE, str(error)) from None
        notice = fallback
        if notice is None and settings.truth is None and self.pool.is_embedded(served):
            notice = texts.NOT_A_SCENE_NOTICE
        run = _Run(settings, served, model, fallback, notice)
        if settings.truth is not None:
            agla.remember_scenes([settings.truth])  # its ground truth, for AGLA-like's oracle mask
            run.live = {name: shapes_lab.LiveMarks(settings.truth, settings.question) for name in views.SIDES}
            if settings.control is None:
                del run.live["control"]
        return run

    def _stream(
        self, control: RunControl, run: _Run, score: shapes_lab.Scoreboard, progress: ProgressFn
    ) -> Iterator[RunUpdate]:
        settings = run.settings
        started = time.monotonic()
        comparison, outcome, failure = None, "failed", None
        self._count(active=1)
        stream = stream_compare(
            run.model, settings.picture, settings.question, settings.method, sampling=settings.sampling,
            max_new_tokens=settings.max_new_tokens, progress=_reporter(control, progress),
            should_stop=lambda: control.stop_requested, control=settings.control,
            control_params=settings.control_params, **settings.params,
        )
        try:
            first = True
            for comparison in stream:
                if comparison.done:
                    break
                yield self._token_update(run, comparison, first)
                first = False
            yield self._final_update(control, run, comparison, score, time.monotonic() - started)
            outcome = "stopped" if control.stop_requested else "done"
        except StopRequested:
            outcome = "stopped"
            yield RunUpdate(texts.STOPPED_IN_PRE_STEP)
        except GeneratorExit:  # the visitor cancelled the job or closed the page
            outcome = "closed"
            raise
        except ValueError as error:  # the library's refusals: an empty or too long question, a bad option
            outcome, failure = "refused", (texts.REFUSED_TITLE, str(error))
            log.info("run refused: %s", error)
        except Exception as error:  # noqa: BLE001 (out of memory, or anything else: the app keeps serving)
            # The traceback as text: a log record holding the exception would keep the run's tensors alive.
            log.warning("run failed: %s", "".join(traceback.format_exception(error)).rstrip())
            failure = failure_message(error)
        finally:
            stream.close()  # ends the engine's loop now, dropping its rows and their KV caches
            control.running = control.stop_requested = False  # a Stop meant this run, not the session's next one
            steps = comparison.steps if comparison is not None else 0
            del stream, comparison, run
            self._count(outcome, active=-1)
            log.info("run %s after %d tokens in %.1f s", outcome, steps, time.monotonic() - started)
        if failure is not None:  # raised here, outside the except block, so the error holds no frame of the run
            if outcome == "failed":
                release_memory()
            raise RunError(*failure)

    def _token_update(self, run: _Run, comparison: Comparison, first: bool) -> RunUpdate:
        """After a token: the status and both answers, marked as far as they go; ``first`` also clears what the
        previous run showed."""
        shown = views.ShownRun(comparison, run.marks(comparison))
        return RunUpdate(
            with_notice(render.status_text(comparison), run.notice),
            shown,
            views.heatmaps(shown, run.settings.colour_by),
            self._details(run, comparison) if first else None,
        )

    def _final_update(
        self, control: RunControl, run: _Run, comparison: Comparison, score: shapes_lab.Scoreboard, seconds: float
    ) -> RunUpdate:
        """The last update: everything, the download, and the run added to the session's score (graded once)."""
        truth, question = run.settings.truth, comparison.question
        grades = {}
        if truth is not None:
            pieces = {answer.name: [t.piece for t in answer.tokens] for answer in render.sides(comparison)}
            grades = shapes_lab.grade_sides(truth, question, pieces)
        shown = views.ShownRun(comparison, {name: grade.marks for name, grade in grades.items()})
        status = render.status_text(comparison, seconds)
        if truth is not None:
            status += " " + shapes_lab.truth_text(truth, question)
        if grades and not render.was_stopped(comparison):
            titles = {answer.name: render.side_title(comparison, answer) for answer in render.sides(comparison)}
            titles["baseline"] = "Baseline"
            score.add({titles[name]: grade for name, grade in grades.items()})
        choices = (render.token_choices(comparison.baseline), render.token_choices(comparison.method_side))
        download = self._write_download(control, comparison, truth, grades)
        return RunUpdate(
            with_notice(status, run.notice),
            shown,
            views.heatmaps(shown, run.settings.colour_by),
            self._details(run, comparison, choices, download, render.token_choices(comparison.control_side)),
            score,
        )

    def _details(
        self, run: _Run, comparison: Comparison, choices=([], []), download: str | None = None, control_choices=()
    ) -> RunDetails:
        control_heading = ""
        if comparison.control is not None:
            control_heading = texts.CONTROL_HEADING.format(title=render.method_title(comparison.control))
        return RunDetails(
            run.served,
            self.pool.names,
            texts.METHOD_HEADING.format(title=render.method_title(comparison.method)),
            render.image_captions(comparison),
            render.branch_notes(comparison),
            choices,
            download,
            control_heading,
            list(control_choices),
        )

    def _write_download(
        self, control: RunControl, comparison: Comparison, truth: world.Scene | None, grades: Mapping
    ) -> str:
        """The run as JSON (the library's record, plus the scene's ground truth and the marks when it is known)."""
        if control.download is not None:
            Path(control.download).unlink(missing_ok=True)
        folder = Path(self._downloads.name)
        shapes_lab.remove_expired(folder, "comparison-*.json", DOWNLOAD_TTL_S)  # left by sessions that have gone
        path = folder / f"comparison-{comparison.method}-{uuid.uuid4().hex}.json"
        record = comparison.to_dict()
        if truth is not None:
            record["shapes_world"] = shapes_lab.ground_truth_record(truth, comparison.question, dict(grades))
        path.write_text(json.dumps(record, indent=1), encoding="utf-8")
        control.download = str(path)
        return control.download

    def _count(self, outcome: str | None = None, active: int = 0) -> None:
        with self._runs_lock:
            if outcome is not None:
                self.runs[outcome] += 1
            self.active_runs += active


def _reporter(control: RunControl, progress: ProgressFn) -> Callable[[str, float], None]:
    """The library's progress callback for the slow pre-steps: passes visible changes on, and ends the pre-step
    when Stop is pressed."""
    last = {"stage": None, "fraction": -1.0}

    def report(stage: str, fraction: float) -> None:
        if control.stop_requested:
            raise StopRequested
        if stage != last["stage"] or fraction - last["fraction"] >= PROGRESS_STEP:
            last.update(stage=stage, fraction=fraction)
            progress(fraction, desc=stage)

    return report
