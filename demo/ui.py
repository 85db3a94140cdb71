"""The Gradio app: the page of `demo.layout`, its events wired to the plain handlers of `demo.run`, `demo.views` and
`demo.shapes_lab`, and the server settings.

Everything shown comes from `decoding.stream_compare` (one batched run for every panel); this module only maps the
handlers' values onto components.

The API's /compare takes every input by name (``REQUEST_FIELDS``; each method's parameters as ``{method}_{param}``;
the third panel's ``control`` and its parameters as ``control_{control}_{param}``); an input left out keeps the
page's default. With gradio_client::

    from gradio_client import Client, handle_file

    client = Client("http://127.0.0.1:7860/")
    outputs = client.predict(
        image=handle_file("cat.jpg"), question="Is there a dog in the image?", method="vcd", vcd_alpha=1.0,
        vcd_beta=0.1, max_new_tokens=32, control="apc_only", api_name="/compare",
    )
    print(outputs[0])  # the status line; outputs[5] is the run's JSON (``client.view_api()`` lists them all)
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from decoding.methods import METHODS

from . import render, shapes_lab, texts, views, zerogpu
from .checks import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_QUEUE_SIZE, one_line
from .layout import Components, build_layout
from .model_pool import ModelPool
from .run import CONTROL_SLIDERS, CONTROLS, SLIDERS, RunError, RunRequest, Runner, RunUpdate, stop, wait_for_run

log = logging.getLogger(__name__)

CSS = (Path(__file__).resolve().parent / "app.css").read_text(encoding="utf-8")

# /compare's inputs after the session's state, by the names API callers know them by.
REQUEST_FIELDS = (
    "image", "question", "model_name", "method", "decoding_mode", "temperature", "top_p", "top_k", "seed",
    "max_new_tokens", "colour_by",
)


def slider_names(sliders) -> tuple[str, ...]:
    """/compare's names of method parameters (``sliders``: (method, Param) pairs, as ``run.SLIDERS``): by method and
    parameter, so that a method added to the registry renames no other input (they were numbered by position)."""
    return tuple(f"{method}_{param.name}" for method, param in sliders)


SLIDER_NAMES = slider_names(SLIDERS)
# Then the third panel's control and its sliders: last, so that callers sending only the inputs above keep working.
CONTROL_FIELD = "control"
CONTROL_SLIDER_NAMES = tuple(f"control_{name}_{param.name}" for name, param in CONTROL_SLIDERS)


def build_ui(pool: ModelPool, max_pixels: int = DEFAULT_MAX_PIXELS, max_file_size: str | int | None = None):
    """The app for ``pool``'s models, reading uploads from gradio's upload folder."""
    return build_blocks(Runner(pool, get_upload_folder(), max_pixels, max_file_size))


class Blocks(gr.Blocks):
    """gr.Blocks whose refusals of a malformed request are the app's own words.

    Before a handler runs, gradio checks the request in ``Blocks.preprocess_data`` (``validate_inputs``: too few
    input values; ``processing_utils.async_move_files_to_cache``: a file payload it did not store; a menu's
    ``preprocess``: a value not among its choices, for the private handlers of the colour modes and the token
    pickers). Its messages name the server's working directory and its component objects, and quote the value whole;
    the visitor gets ``texts.MALFORMED_REQUEST`` and the detail goes to the log, as one short line (a refusal, not a
    crash).

    ``trailing_defaults`` (API name -> values): inputs an endpoint gained at its end, filled in with these when a
    request leaves them out, so that callers written before them keep working (/compare's control inputs).
    """

    trailing_defaults: dict[str, list] = {}  # replaced per app, never mutated

    async def preprocess_data(self, block_fn, inputs, *args, **kwargs):
        defaults = self.trailing_defaults.get(block_fn.api_name, [])
        missing = len(block_fn.inputs) - len(inputs) if isinstance(inputs, list) else 0
        if 0 < missing <= len(defaults):
            inputs = [*inputs, *defaults[len(defaults) - missing :]]
        try:
            return await super().preprocess_data(block_fn, inputs, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 (whatever gradio refuses, the visitor reads the same)
            log.info("request refused before its handler: %s", one_line(str(error)))
            raise gr.Error(
                texts.MALFORMED_REQUEST, title=texts.MALFORMED_REQUEST_TITLE, print_exception=False
            ) from None

    async def process_api(self, *args, event_data: gr.EventData | None = None, **kwargs):
        """An event's data, as the handlers read it: the app's only reader is the token click, which needs the
        clicked index. Anything else a request sends there (null, a list, a string, NaN, a file payload) would fail
        in gradio before the handler (``gr.SelectData`` indexes it; a file payload is refused with its path echoed),
        with HTTP 500 and a traceback; here it becomes no index, and the click changes nothing."""
        if event_data is not None:
            # The event's JSON as sent (gradio's EventData has no public reader of it whole); None if that changes.
            sent = getattr(event_data, "_data", None)
            index = sent.get("index") if isinstance(sent, dict) else None
            plain = isinstance(index, int) and not isinstance(index, bool)
            event_data = gr.EventData(event_data.target, {"index": index if plain else None, "value": None})
        return await super().process_api(*args, event_data=event_data, **kwargs)


def build_blocks(runner: Runner) -> gr.Blocks:
    with Blocks(title=texts.TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        c = build_layout(runner.pool, runner.max_pixels)
        blocks.trailing_defaults = {"compare": [c.control_method.value, *(s.value for s in c.control_sliders)]}
        _wire_run(c, runner)
        _wire_lab(c, runner)
        _wire_inspector(c)
        _wire_controls(c, runner.pool)
    return blocks


# ---- the comparison ----------------------------------------------------------------------------------------------
def _run_outputs(c: Components) -> list:
    outputs = [c.status, c.shown, c.legend, c.method_panel.heading, c.branch_images, c.branch_notes, c.download]
    for panel in (c.baseline, c.method_panel):
        outputs += [panel.heatmap, panel.token, panel.attention, panel.candidates]
    # the third panel's last, so that the others keep the positions they had before it
    control = c.control_panel
    outputs += [c.model, c.score, c.score_html, control.heading]
    return [*outputs, control.heatmap, control.token, control.attention, control.candidates]


def _show_update(c: Components, update: RunUpdate) -> dict:
    """A run's update as component values; what it leaves out stays as it is."""
    values = {c.status: update.status}
    if update.shown is not None:
        values |= {c.shown: update.shown, c.legend: update.heatmaps.legend}
        values |= {c.baseline.heatmap: update.heatmaps.baseline, c.method_panel.heatmap: update.heatmaps.method}
        values |= {c.control_panel.heatmap: update.heatmaps.control}
    details = update.details
    if details is not None:
        values |= {
            c.model: gr.Dropdown(choices=details.models, value=details.model),
            c.method_panel.heading: details.heading,
            c.branch_images: details.branch_images,
            c.branch_notes: details.branch_notes,
            c.download: details.download,
            c.control_panel.heading: details.control_heading,
        }
        panels = (c.baseline, c.method_panel, c.control_panel)
        for panel, choices in zip(panels, (*details.token_choices, details.control_choices)):
            values |= {
                panel.token: gr.Dropdown(choices=choices, value=None),
                panel.attention: gr.Image(value=None, label=render.attention_caption(None)),
                panel.candidates: render.candidates_html(None),
            }
    if update.score is not None:
        values |= {c.score: update.score, c.score_html: update.score.html()}
    return values


def _declared_seconds(run_control, drawn_scene, score, progress=None, **values) -> int:
    """What a comparison asks ZeroGPU for (``zerogpu.gpu_seconds``), from the same arguments as the run; an operator
    scales it with $CD_GPU_SCALE."""
    control = values.get(CONTROL_FIELD)
    return zerogpu.gpu_seconds(str(values.get("method")), values.get("max_new_tokens"),
                               control if isinstance(control, str) else None,
                               scale=float(os.environ.get("CD_GPU_SCALE", "1") or 1))


def _wire_run(c: Components, runner: Runner) -> None:
    def compare(run_control, drawn_scene, score, progress=gr.Progress(), **values):  # noqa: B008 (gradio's tracker)
        request = RunRequest(
            **{name: values[name] for name in REQUEST_FIELDS}, sliders=tuple(values[n] for n in SLIDER_NAMES),
            control=values[CONTROL_FIELD], control_sliders=tuple(values[n] for n in CONTROL_SLIDER_NAMES),
        )
        updates = runner.run(run_control, request, drawn_scene, score, progress, warn=_model_warning)
        with contextlib.closing(updates):  # the visitor cancelled or left: the run stops at once
            try:
                for update in updates:
                    yield _show_update(c, update)
            except RunError as error:
                # A refusal or a failure the runner has logged already (a failure with its traceback): no second
                # traceback from gradio.
                raise gr.Error(error.message, title=error.title, print_exception=False) from None

    request_inputs = [c.image, c.question, c.model, c.method, c.decoding_mode, c.temperature, c.top_p, c.top_k]
    request_inputs += [c.seed, c.max_new_tokens, c.colour_by]
    # First, at once (not queued): the session's run is marked as waiting, so that Stop can cancel it in the queue.
    waiting = gr.on(
        triggers=[c.run.click, c.question.submit], fn=wait_for_run, inputs=[c.control], queue=False,
        api_visibility="private",
    )
    waiting.then(
        fn=zerogpu.gpu(compare, duration=_declared_seconds),
        inputs=[c.control, c.drawn_scene, c.score],
        inputs_kwargs={
            **dict(zip(REQUEST_FIELDS, request_inputs)), **dict(zip(SLIDER_NAMES, c.sliders)),
            CONTROL_FIELD: c.control_method, **dict(zip(CONTROL_SLIDER_NAMES, c.control_sliders)),
        },
        outputs=_run_outputs(c),
        # the image is read by read_upload, which checks its size before decoding and turns a corrupt file into a
        # clear message (gradio's own preprocessing would fail first with a generic error)
        preprocess=False,
        concurrency_limit=1,  # one model in memory, and the engine switches its attention kernel per run
        concurrency_id="model",
        api_name="compare",
        show_progress_on=[c.status],
    )
    # Not queued: Stop must get through while the run it stops holds the queue's only slot. The small handlers below
    # skip the queue too, so inspecting a finished run never waits behind other visitors' comparisons.
    c.stop.click(stop, inputs=[c.control], outputs=[c.stop_reply], queue=False, api_name="stop")


def _model_warning(notice: str) -> None:
    gr.Warning(notice, title=texts.MODEL_UNAVAILABLE_TITLE)


# ---- the shapes-world lab ----------------------------------------------------------------------------------------
def _wire_lab(c: Components, runner: Runner) -> None:
    def new_scene():
        drawn = runner.new_scene()
        return drawn.path, drawn.question, drawn.scene, drawn.caption

    c.new_scene.click(
        new_scene, outputs=[c.image, c.question, c.drawn_scene, c.scene_caption], queue=False, api_name="new_scene"
    )
    c.image.change(
        lambda payload, drawn: shapes_lab.upload_caption(
            payload, drawn, runner.upload_folder, runner.max_pixels, runner.max_bytes
        ),
        inputs=[c.image, c.drawn_scene],
        outputs=[c.scene_caption],
        preprocess=False,
        queue=False,
        api_visibility="private",
    )

    def reset_score():
        score = shapes_lab.Scoreboard()
        return score, score.html()

    c.reset_score.click(reset_score, outputs=[c.score, c.score_html], queue=False, api_visibility="private")


# ---- the token inspector -----------------------------------------------------------------------------------------
def _wire_inspector(c: Components) -> None:
    heatmaps = [c.legend, c.baseline.heatmap, c.method_panel.heatmap, c.control_panel.heatmap]
    pickers = [c.panel(name).token for name in views.SIDES]
    for side_name in views.SIDES:
        panel = c.panel(side_name)
        other_names = [name for name in views.SIDES if name != side_name]
        others = [c.panel(name).token for name in other_names]
        view_outputs = [*heatmaps, panel.attention, panel.candidates]

        def show(shown, index, colour_by, first, second, side_name=side_name, other_names=other_names):
            picks = dict(zip(other_names, (first, second)))
            return _token_values(views.show_token(shown, side_name, index, picks, colour_by))

        # .input, not .change: a run clearing the picker must not start this handler, whose heatmaps (drawn from the
        # run as it stood) could land after the run's last update and leave the page showing an unfinished answer.
        panel.token.input(
            show,
            inputs=[c.shown, panel.token, c.colour_by, *others],
            outputs=view_outputs,
            api_visibility="private",
            queue=False,
        )

        def click(shown, colour_by, first, second, event: gr.SelectData, side_name=side_name, other_names=other_names):
            choices = views.clicked_token(shown, side_name, event.index)
            if choices is None:
                return [gr.skip()] * (len(heatmaps) + 4)  # the inspector, its picker and the view stay as they are
            picks = dict(zip(other_names, (first, second)))
            view = views.show_token(shown, side_name, event.index, picks, colour_by)
            # the panel's inspector opens on the clicked token (it starts closed, to keep the panels on one screen)
            return (gr.Accordion(open=True), gr.Dropdown(choices=choices, value=event.index), *_token_values(view))

        panel.heatmap.select(
            click,
            inputs=[c.shown, c.colour_by, *others],
            outputs=[panel.inspector, panel.token, *view_outputs],
            api_visibility="private",
            queue=False,
        )

    c.colour_by.change(
        lambda shown, colour_by, b, m, k: _heatmap_values(views.heatmaps(shown, colour_by, (b, m, k))),
        inputs=[c.shown, c.colour_by, *pickers],
        outputs=heatmaps,
        api_visibility="private",
        queue=False,
    )


def _token_values(view: views.TokenView) -> tuple:
    attention = gr.Image(value=view.attention, label=view.attention_caption)
    return (*_heatmap_values(view.heatmaps), attention, view.candidates)


def _heatmap_values(shown: views.Heatmaps) -> tuple[str, str, str, str]:
    return shown.legend, shown.baseline, shown.method, shown.control


# ---- controls that show and hide others ----------------------------------------------------------------------------
def _wire_controls(c: Components, pool: ModelPool) -> None:
    def method_changed(method):
        if method not in METHODS:  # null (which gradio lets through): only a crafted request sends it
            return [gr.skip()] * (len(METHODS) + 1)
        return [gr.Group(visible=method == name) for name in METHODS] + [
            texts.METHOD_HEADING.format(title=render.method_title(method))
        ]

    c.method.change(
        method_changed,
        inputs=[c.method],
        outputs=[*c.method_groups.values(), c.method_panel.heading],
        api_visibility="private",
        queue=False,
    )

    def control_changed(name):
        groups = [gr.Group(visible=name == control) for control in CONTROLS]
        heading = texts.CONTROL_HEADING.format(title=render.method_title(name)) if name in CONTROLS else ""
        return [*groups, gr.Column(visible=name in CONTROLS), heading]

    c.control_method.change(
        control_changed,
        inputs=[c.control_method],
        outputs=[*c.control_groups.values(), c.control_panel.column, c.control_panel.heading],
        api_visibility="private",
        queue=False,
    )
    c.decoding_mode.change(
        lambda mode: gr.Group(visible=mode == "sampling"),
        inputs=[c.decoding_mode],
        outputs=[c.sampling_group],
        api_visibility="private",
        queue=False,
    )
    def model_changed(name, new_tokens):
        limit = pool.new_token_limit(name)  # the slider's range follows the picked model's context
        kept = {"value": min(new_tokens, limit)} if isinstance(new_tokens, (int, float)) else {}
        slider = gr.Slider(maximum=limit, **kept)
        return gr.Markdown(visible=pool.is_untrained(name)), gr.Markdown(visible=pool.is_embedded(name)), slider

    c.model.change(
        model_changed,
        inputs=[c.model, c.max_new_tokens],
        outputs=[c.tiny_notice, c.embedded_notice, c.max_new_tokens],
        api_visibility="private",
        queue=False,
    )


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
        # Visitors read only the app's own messages (gr.Error, shown whatever this says; gradio's refusals of a
        # crafted request become one, in Blocks.preprocess_data): any other exception's text stays in the log.
        show_error=False,
        **kwargs,
    )


__all__ = ["CSS", "Blocks", "build_blocks", "build_ui", "launch"]
