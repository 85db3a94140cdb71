"""What the page shows of a run, as plain values: the heatmaps with their legend, and the token inspector.

These are the handlers of the page's small events (a token picked or clicked, another colour mode); no gradio here:
`demo.ui` maps their results onto the components.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from PIL import Image

from decoding.comparison import Comparison
from decoding.trace import SideResult, TokenTrace

from . import render, texts
from .images import attention_overlay

SIDES = ("baseline", "method", "control")  # the panels, left to right; the control's only when one is decoded


@dataclass(frozen=True)
class ShownRun:
    """The run on the page, kept in the session: its comparison and, on a known scene, each side's marks."""

    comparison: Comparison
    marks: dict[str, tuple[str | None, ...]] = field(default_factory=dict)  # side name -> per token; {}: no truth


@dataclass(frozen=True)
class Heatmaps:
    legend: str
    baseline: str
    method: str
    control: str = ""  # the third panel's (empty before any run and without a control)


@dataclass(frozen=True)
class TokenView:
    """One side's inspector for its selected token, and the heatmaps with that token outlined."""

    heatmaps: Heatmaps
    attention: Image.Image | None
    attention_caption: str
    candidates: str


def side(shown: ShownRun | None, side_name: str) -> SideResult | None:
    if shown is None:
        return None
    comparison = shown.comparison
    return {
        "baseline": comparison.baseline, "method": comparison.method_side, "control": comparison.control_side
    }.get(side_name)


def heatmaps(shown: ShownRun | None, colour_by: str, selected=(None, None, None)) -> Heatmaps:
    """Every answer coloured on one scale, the selected token of each (baseline, method, control: in SIDES order)
    outlined, with the legend."""
    comparison = shown.comparison if shown is not None else None
    if colour_by not in render.COLOUR_KEYS:  # null, which gradio's radio lets through: only a crafted request sends it
        colour_by = render.DEFAULT_COLOUR_MODE
    scale = render.colour_scale(comparison, colour_by)
    marks = shown.marks if shown is not None else {}
    picks = dict(zip(SIDES, selected))
    empty = {"baseline": texts.BASELINE_EMPTY, "method": texts.METHOD_EMPTY, "control": texts.CONTROL_EMPTY}
    drawn = {
        name: render.heatmap_html(side(shown, name), scale, picks.get(name), empty[name], marks.get(name))
        for name in SIDES
    }
    return Heatmaps(render.legend_html(scale), **drawn)


def empty_heatmap() -> str:
    """A panel before any run."""
    return render.heatmap_html(None, render.colour_scale(None, render.DEFAULT_COLOUR_MODE), None, texts.PANEL_WAITING)


def show_token(
    shown: ShownRun | None, side_name: str, index, others: Mapping[str, object], colour_by: str
) -> TokenView:
    """The token ``index`` of one side picked (``others``: the other panels' picks, by side name): where it looked,
    its candidates, and the heatmaps with every pick outlined."""
    answer = side(shown, side_name)
    token: TokenTrace | None = None
    shown_piece = None
    if answer is not None and _is_index(index) and 0 <= index < len(answer.tokens):
        token, shown_piece = answer.tokens[index], render.answer_piece(answer, index)
    overlay = None
    grid = token.image_attention.get("grid") if token is not None and token.image_attention else None
    if grid is not None and "original" in shown.comparison.images:  # None: image tokens with no place in the picture
        overlay = attention_overlay(shown.comparison.images["original"], grid)
    picks = {**others, side_name: index}
    selected = tuple(picks.get(name) for name in SIDES)
    return TokenView(
        heatmaps(shown, colour_by, selected), overlay, render.attention_caption(token, shown_piece),
        render.candidates_html(token, shown_piece, answer.method if answer is not None else "baseline"),
    )


def clicked_token(shown: ShownRun | None, side_name: str, index) -> list[tuple[str, int]] | None:
    """A click on token ``index`` of one side's heatmap: the picker's choices, to select it with (None: no such
    token, the picker stays as it is)."""
    answer = side(shown, side_name)
    if answer is None or not _is_index(index) or not 0 <= index < len(answer.tokens):
        return None
    return render.token_choices(answer)


def _is_index(index) -> bool:
    """Whether a picker's or a click's value is a token index (a whole number; True is not one)."""
    return isinstance(index, int) and not isinstance(index, bool)
