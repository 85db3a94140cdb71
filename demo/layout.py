"""The page: every component, laid out, and returned as one record (`Components`) for `demo.ui` to wire.

Laid out for a demo in front of an audience: the picture, the question, the method and control menus, Compare, the
status line and the answer panels (two, or three with a control, side by side) fit on one screen at 1366x768 and at
1920x1080 (app.css keeps a long answer inside its panel). The rest is one click away, in accordions that start
closed: each panel's token inspector (a click on a token opens it too), what each branch fed the model, the
parameters, the examples. tests/test_browser.py measures both.

Nothing here reacts to anything; `build_layout` must be called inside a `gr.Blocks` context.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from decoding.methods import METHODS, REGISTRY

from . import render, shapes_lab, texts, views
from .checks import (
    DECODING_MODES,
    DEFAULT_MAX_NEW_TOKENS,
    TEMPERATURE_RANGE,
    TOP_K_RANGE,
    TOP_P_RANGE,
)
from .examples import EXAMPLE_QUESTIONS, gallery_examples
from .images import MODEL_MAX_SIDE
from .model_pool import ModelPool
from .run import CONTROL_SLIDERS, CONTROLS, SLIDERS, RunControl

# A click on a token span selects it: gr.HTML passes the event to Python as a select event with the token index.
SELECT_TOKEN_JS = """
element.addEventListener('click', (event) => {
  const span = event.target.closest('[data-token]');
  if (span) trigger('select', {index: Number(span.dataset.token), value: span.textContent, selected: true});
});
"""


@dataclass(frozen=True)
class Panel:
    """One side's answer heatmap and its token inspector."""

    column: gr.Column
    heading: gr.Markdown
    heatmap: gr.HTML
    inspector: gr.Accordion  # holds the three below; closed until a click on a token or on its header
    token: gr.Dropdown
    attention: gr.Image
    candidates: gr.HTML


@dataclass(frozen=True)
class Components:
    """Every component an event reads or writes."""

    # per session
    control: gr.State  # RunControl: the Stop button's line to the running comparison
    shown: gr.State  # views.ShownRun: the run on the page, for the inspector and the colour modes
    drawn_scene: gr.State  # the shapes-world scene this session drew last
    score: gr.State  # shapes_lab.Scoreboard: the session's running score
    # the request
    tiny_notice: gr.Markdown
    embedded_notice: gr.Markdown
    image: gr.Image
    question: gr.Textbox
    new_scene: gr.Button
    scene_caption: gr.Markdown
    model: gr.Dropdown
    method: gr.Dropdown
    method_groups: dict[str, gr.Group]  # the sliders of each method, shown while it is picked
    sliders: tuple[gr.Slider, ...]  # every method's, in run.SLIDERS order
    control_method: gr.Dropdown  # the third panel's control, or texts.NO_CONTROL
    control_groups: dict[str, gr.Group]  # the sliders of each control, shown while it is picked
    control_sliders: tuple[gr.Slider, ...]  # every control's, in run.CONTROL_SLIDERS order
    decoding_mode: gr.Radio
    sampling_group: gr.Group
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    seed: gr.Number
    max_new_tokens: gr.Slider
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown
    stop_reply: gr.Markdown  # what /stop answers API callers (hidden)
    # the answers
    colour_by: gr.Radio
    legend: gr.HTML
    baseline: Panel
    method_panel: Panel
    control_panel: Panel  # hidden while no control is picked
    branch_images: gr.Gallery
    branch_notes: gr.Markdown
    score_html: gr.HTML
    reset_score: gr.Button
    download: gr.File

    def panel(self, side_name: str) -> Panel:
        return {"baseline": self.baseline, "method": self.method_panel, "control": self.control_panel}[side_name]


def build_layout(pool: ModelPool, max_pixels: int) -> Components:
    with gr.Row(equal_height=False, elem_id="cd-header-row"):
        gr.Markdown(texts.HEADER, elem_id="cd-header")
        model = gr.Dropdown(
            choices=pool.names, value=pool.default, label="Model", interactive=len(pool.names) > 1, scale=0,
            min_width=300, elem_id="cd-model",
        )
    notices = {
        "tiny_notice": gr.Markdown(
            texts.TINY_NOTICE, visible=pool.is_untrained(pool.default), elem_id="cd-notice", elem_classes="cd-notice"
        ),
        "embedded_notice": gr.Markdown(
            texts.EMBEDDED_NOTICE, visible=pool.is_embedded(pool.default), elem_id="cd-embedded-notice",
            elem_classes="cd-notice",
        ),
    }
    if pool.notice:  # the operator's model failed to load at start: say what is served instead
        gr.Markdown(
            texts.FALLBACK_NOTICE.format(notice=pool.notice), elem_id="cd-fallback-notice", elem_classes="cd-notice"
        )
    session = {
        "control": gr.State(RunControl()),
        "shown": gr.State(None),
        "drawn_scene": gr.State(None),
        "score": gr.State(shapes_lab.Scoreboard()),
    }
    # One screen: the picture beside the request; the answer panels right below.
    with gr.Row(equal_height=False, elem_id="cd-request"):
        with gr.Column(scale=2, min_width=300):
            picture = _picture()
        with gr.Column(scale=3, min_width=440):
            request = _request(pool, max_pixels, picture["image"])
    return Components(**notices, **session, model=model, **picture, **request, **_answers())


def _picture() -> dict:
    image = gr.Image(
        label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], height=200, elem_id="cd-image"
    )
    scene_caption = gr.Markdown(shapes_lab.DEFAULT_CAPTION, elem_id="cd-scene-caption")
    new_scene = gr.Button("New shapes-world scene", size="sm", elem_id="cd-new-scene")
    return {"image": image, "scene_caption": scene_caption, "new_scene": new_scene}


def _request(pool: ModelPool, max_pixels: int, image: gr.Image) -> dict:
    """The question, what to decode, Compare and the status line; then, closed, the parameters and the examples."""
    question = gr.Textbox(
        label="Question", placeholder="Ask something about the image", lines=1, max_lines=4,
        elem_id="cd-question",
    )
    with gr.Row(equal_height=True):
        method = gr.Dropdown(
            choices=[(REGISTRY[m].title, m) for m in METHODS], value=METHODS[0], label="Method", scale=3,
            elem_id="cd-method",
        )
        control_method = gr.Dropdown(
            choices=[(texts.NO_CONTROL, texts.NO_CONTROL)] + [(REGISTRY[m].title, m) for m in CONTROLS],
            value=texts.NO_CONTROL, label="Control (third panel)", scale=2, min_width=180, elem_id="cd-control",
        )
        limit = pool.new_token_limit(pool.default)  # the served model's context, less its prompt (MAX_NEW_TOKENS_LIMIT)
        max_new_tokens = gr.Slider(
            1, limit, value=min(DEFAULT_MAX_NEW_TOKENS, limit), step=1, label="max new tokens", scale=2,
            min_width=180, elem_id="cd-max-new-tokens",
        )
    with gr.Row(equal_height=False, elem_id="cd-actions"):
        run = gr.Button("Compare", variant="primary", scale=0, min_width=130, elem_id="cd-run")
        stop = gr.Button("Stop", variant="stop", scale=0, min_width=90, elem_id="cd-stop")
        status = gr.Markdown("", min_height=40, elem_id="cd-status")
    # What /stop answers (for API callers). Not the status line: the run's own stream shows the stop, and a separate
    # reply could land after the run's last update and overwrite "Stopped".
    stop_reply = gr.Markdown(visible=False)
    with gr.Row(equal_height=False):
        with gr.Accordion("Parameters", open=False, elem_id="cd-parameters"):
            settings = _parameters(max_pixels, opening_decoding(pool))
        with gr.Accordion("Examples", open=False, elem_id="cd-examples-accordion"):
            gr.Examples(
                examples=gallery_examples(shapes_first=pool.is_embedded(pool.default)),
                inputs=[image, question],
                label="Example images (each fills in a question too)",
                examples_per_page=12,
                visible_columns=[0],
                elem_id="cd-examples",
            )
            gr.Examples(
                examples=[[q] for q in EXAMPLE_QUESTIONS], inputs=[question], label="Example questions",
                elem_id="cd-example-questions",
            )
    return {
        "question": question, "method": method, "control_method": control_method,
        "max_new_tokens": max_new_tokens, "run": run, "stop": stop, "status": status, "stop_reply": stop_reply,
        **settings,
    }


def opening_decoding(pool: ModelPool) -> str:
    """The decoding mode the page opens in: sampling for the embedded shapes-world model, whose greedy answers the
    methods seldom change (texts.EMBEDDED_DECODING says what the lab measured), greedy for any other model."""
    return "sampling" if pool.is_embedded(pool.default) else "greedy"


def _parameters(max_pixels: int, mode: str) -> dict:
    """The picked method's and control's sliders, how to decode (opening in ``mode``), and the image limits."""
    groups, sliders = {}, []
    for name in METHODS:
        with gr.Group(visible=name == METHODS[0]) as groups[name]:
            gr.Markdown(texts.METHOD_SOURCE.format(source=REGISTRY[name].source), elem_classes="cd-source")
            sliders += [_slider(name, param) for method_name, param in SLIDERS if method_name == name]
    gr.Markdown(texts.CONTROL_INFO, elem_classes="cd-control-info")
    control_groups, control_sliders = {}, []
    for name in CONTROLS:
        with gr.Group(visible=False) as control_groups[name]:
            gr.Markdown(texts.METHOD_SOURCE.format(source=REGISTRY[name].source), elem_classes="cd-source")
            control_sliders += [
                _slider(f"control-{name}", param) for control_name, param in CONTROL_SLIDERS if control_name == name
            ]
    decoding_mode = gr.Radio(choices=list(DECODING_MODES), value=mode, label="Decoding", elem_id="cd-decoding")
    with gr.Group(visible=mode == "sampling") as sampling_group:
        temperature = gr.Slider(*TEMPERATURE_RANGE, value=1.0, step=0.05, label="temperature")
        top_p = gr.Slider(*TOP_P_RANGE, value=1.0, step=0.01, label="top-p")
        top_k = gr.Slider(*TOP_K_RANGE, value=0, step=1, label="top-k (0 = off)")
    seed = gr.Number(value=0, precision=0, label="seed (noise, transforms, sampling)", minimum=0)
    gr.Markdown(texts.IMAGE_LIMITS.format(megapixels=max_pixels / 1e6, max_side=MODEL_MAX_SIDE))
    return {
        "method_groups": groups, "sliders": tuple(sliders), "control_groups": control_groups,
        "control_sliders": tuple(control_sliders), "decoding_mode": decoding_mode, "sampling_group": sampling_group,
        "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
    }


def _slider(method: str, param) -> gr.Slider | gr.Textbox:
    """The control of one method parameter: a slider, or a text box for a text parameter (ICD's instruction)."""
    if param.kind == "text":
        return gr.Textbox(
            value=param.default, label=f"{param.name} (our default wording)", lines=2, max_lines=6,
            max_length=int(param.high), info=texts.PARAM_INFO.format(help=param.help, source=param.source),
            elem_id=f"cd-{method}-{param.name}",
        )
    return gr.Slider(
        minimum=param.low,
        maximum=param.high,
        value=param.default,
        step=1 if param.integer else param.step,
        label=f"{param.name} (paper default {param.default:g})",
        info=texts.PARAM_INFO.format(help=param.help, source=param.source),
        elem_id=f"cd-{method}-{param.name}",
    )


def _answers() -> dict:
    with gr.Row(equal_height=False, elem_id="cd-panels"):
        baseline = _panel("baseline", texts.BASELINE_HEADING)
        method_panel = _panel("method", texts.METHOD_HEADING.format(title=render.method_title(METHODS[0])))
        control_panel = _panel("control", texts.CONTROL_HEADING.format(title=""), visible=False)
    with gr.Accordion("What each branch fed the model", open=False, elem_id="cd-branches"):
        branch_images = gr.Gallery(
            label="The picture each row fed the model", columns=4, rows=1, height=330, fit_columns=False,
            object_fit="contain", allow_preview=True, elem_id="cd-branch-images",
        )
        branch_notes = gr.Markdown(elem_id="cd-branch-notes")
    with gr.Row(equal_height=False):
        colour_by = gr.Radio(
            choices=list(render.COLOUR_MODES), value=render.DEFAULT_COLOUR_MODE, label="Colour tokens by", scale=1,
            elem_id="cd-colour-by",
        )
        legend = gr.HTML(
            render.legend_html(render.colour_scale(None, render.DEFAULT_COLOUR_MODE)), elem_id="cd-legend"
        )
    with gr.Row(equal_height=False):
        score_html = gr.HTML(shapes_lab.Scoreboard().html(), elem_id="cd-score")
        reset_score = gr.Button("Reset score", size="sm", scale=0, min_width=120, elem_id="cd-reset-score")
    download = gr.File(
        label="The whole run as JSON (trace, parameters, model id, seed)", interactive=False, height=80,
        elem_id="cd-download",
    )
    return {
        "colour_by": colour_by, "legend": legend, "baseline": baseline, "method_panel": method_panel,
        "control_panel": control_panel, "branch_images": branch_images, "branch_notes": branch_notes,
        "score_html": score_html, "reset_score": reset_score, "download": download,
    }


def _panel(side_name: str, heading: str, visible: bool = True) -> Panel:
    with gr.Column(scale=1, min_width=320, variant="panel", visible=visible, elem_id=f"cd-{side_name}-panel") as column:
        heading_md = gr.Markdown(heading, elem_classes="cd-panel-heading")
        heatmap = gr.HTML(
            views.empty_heatmap(), js_on_load=SELECT_TOKEN_JS, elem_id=f"cd-{side_name}-answer",
            elem_classes="cd-answer",
        )
        with gr.Accordion("Token inspector", open=False, elem_id=f"cd-{side_name}-inspector") as inspector:
            token = gr.Dropdown(
                choices=[], value=None, label="Inspect token", interactive=True, elem_id=f"cd-{side_name}-token"
            )
            attention = gr.Image(
                label=render.attention_caption(None), interactive=False, height=260,
                elem_id=f"cd-{side_name}-attention",
            )
            candidates = gr.HTML(render.candidates_html(None), elem_id=f"cd-{side_name}-candidates")
    return Panel(column, heading_md, heatmap, inspector, token, attention, candidates)
