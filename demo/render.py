"""HTML and Markdown for what `decoding` returns: token heatmaps, their legend, a token's candidates, branch notes.

Pure functions of a `Comparison` / `TokenTrace`, no Gradio: the UI puts their output into its components.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from decoding.comparison import Comparison
from decoding.methods import REGISTRY, STEP_SCALARS, Note, role_label
from decoding.trace import SideResult, TokenTrace

# colour-by choices: (label shown, key)
COLOUR_MODES = (
    ("visual dependence", "visual_dependence"),
    ("contrast shift", "contrast_shift"),
    ("confidence", "confidence"),
    ("layer it first led (DoLa, DeCo)", "first_top_layer"),
)
COLOUR_KEYS = tuple(key for _, key in COLOUR_MODES)
DEFAULT_COLOUR_MODE = "visual_dependence"
# The colour modes only some runs record, with what the panel says where a side has none.
NOT_RECORDED = {
    "first_top_layer": "The layer each token first led at is recorded on DoLa and DeCo runs only (their early exits): "
    "choose one of them to colour by it.",
}

POSITIVE = (37, 99, 235)  # blue: supported by the image / pushed up by the method / confident
NEGATIVE = (234, 88, 12)  # orange: the opposite; blue/orange stays readable for red-green colour blindness
MIN_DIVERGING_RANGE = 0.5  # nats; a run of near-zero values stays pale instead of being blown up to full colour


@dataclass(frozen=True)
class Scale:
    """How a colour mode maps values to colours: ``low..high``; diverging scales are white at 0. ``floor``: the
    strength of ``low`` on a sequential scale (above 0 where ``low`` must not look like "no value")."""

    mode: str
    low: float
    high: float
    floor: float = 0.0

    @property
    def diverging(self) -> bool:
        return self.low < 0

    def colour(self, value: float | None) -> str:
        if value is None:
            return "transparent"
        if self.diverging:
            strength = min(abs(value) / self.high, 1.0)
            rgb = POSITIVE if value >= 0 else NEGATIVE
        else:
            fraction = min(max((value - self.low) / (self.high - self.low), 0.0), 1.0)
            strength = self.floor + (1.0 - self.floor) * fraction
            rgb = POSITIVE
        # Translucent colour keeps dark text readable at full strength.
        return f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {0.75 * strength:.3f})"


def token_value(token: TokenTrace, mode: str) -> float | None:
    if mode == "visual_dependence":
        return token.visual_dependence
    if mode == "contrast_shift":
        return token.contrast_shift
    if mode == "confidence":
        return token.final.prob
    if mode == "first_top_layer":
        first = token.early_exit.get("first_top") if token.early_exit else None
        return None if first is None else float(first)
    raise ValueError(f"unknown colour mode {mode!r}; choose one of {list(COLOUR_KEYS)}")


def sides(comparison: Comparison | None) -> list[SideResult]:
    if comparison is None:
        return []
    return [side for side in (comparison.baseline, comparison.method_side, comparison.control_side) if side is not None]


def side_title(comparison: Comparison, side: SideResult) -> str:
    """A side's short name: "baseline", the method's or the control's."""
    if side.name == "baseline":
        return "baseline"
    return REGISTRY[comparison.control if side.name == "control" else comparison.method].short_name


def colour_scale(comparison: Comparison | None, mode: str) -> Scale:
    """One scale for every panel (so equal colours mean equal values): probability is 0..1; the log-ratio modes are
    symmetric around 0 and span the largest magnitude in the run."""
    if mode == "confidence":
        return Scale(mode, 0.0, 1.0)
    if mode == "first_top_layer":  # 0 (the embeddings) .. N (the final layer), N from the run's own records
        finals = [t.early_exit["final"] for side in sides(comparison) for t in side.tokens if t.early_exit]
        return Scale(mode, 0.0, float(max(finals, default=1)), floor=0.15)  # layer 0 is not "no layer's"
    values = [token_value(t, mode) for side in sides(comparison) for t in side.tokens]
    largest = max((abs(v) for v in values if v is not None), default=0.0)
    largest = max(largest, MIN_DIVERGING_RANGE)
    return Scale(mode, -largest, largest)


def visible_piece(piece: str) -> str:
    """A token's text with invisible characters made visible: an empty piece (end of answer) and control bytes."""
    if piece == "":
        return "∎"
    out = []
    for char in piece:
        if char == "\n":
            out.append("↵\n")
        elif char != "\t" and unicodedata.category(char) == "Cc":
            out.append(f"⟨{ord(char):02x}⟩")
        else:
            out.append(char)
    return "".join(out)


HELD_BYTE = "⋯"  # a token that adds no text yet: a byte of a character that a later token completes


def answer_piece(side: SideResult, index: int) -> str:
    """Token ``index`` of an answer as shown: ``visible_piece``, except that an empty piece before the last token is
    a byte of a character split over tokens (its text comes with the token that completes it), not the end."""
    piece = side.tokens[index].piece
    if piece == "" and index < len(side.tokens) - 1:
        return HELD_BYTE
    return visible_piece(piece)


def token_label(index: int, side: SideResult) -> str:
    """How a token is named in the token pickers: its position and its text in quotes (spaces show)."""
    return f"{index}: “{answer_piece(side, index)}”"


def token_choices(side: SideResult | None) -> list[tuple[str, int]]:
    if side is None:
        return []
    return [(token_label(i, side), i) for i in range(len(side.tokens))]


def _signed(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:+.2f}{unit}"


def _tooltip(token: TokenTrace) -> str:
    parts = [
        f"p = {token.final.prob:.3f}",
        f"visual dependence {_signed(token.visual_dependence, ' nats')}",
        f"contrast shift {_signed(token.contrast_shift, ' nats')}",
    ]
    if token.early_exit is not None:
        parts.append(_first_top_text(token.early_exit))
    if token.changed and "original" in token.branches and token.branches["original"].top:
        top = visible_piece(token.branches["original"].top[0].piece)
        parts.append(f"changed: the original branch's top token is “{top}”")
    return " · ".join(parts)


def _first_top_text(early_exit: dict) -> str:
    first, final = early_exit.get("first_top"), early_exit["final"]
    if first is None:
        return f"no layer's top token (0–{final})"
    return f"first top at layer {first} of {final}"


# Ground-truth marks (models.shapes_world.grading): a symbol as well as a colour, so that they read without colour.
MARK_SYMBOLS = {"correct": "✓", "hallucinated": "✗", "missed": "○"}


def heatmap_html(
    side: SideResult | None,
    scale: Scale,
    selected: int | None = None,
    empty: str = "",
    marks: Sequence[str | None] | None = None,
) -> str:
    """The answer as one span per token, coloured by ``scale``; tokens the method changed are underlined and the
    selected one outlined. Each span carries ``data-token`` (its index) so a click can select it. ``marks``: per token,
    its ground-truth mark ("correct", "hallucinated", "missed") or None, shown as a framed token and a symbol after
    it."""
    if side is None or not side.tokens:
        return f'<div class="cd-heatmap cd-empty">{html.escape(empty)}</div>'
    spans = []
    for index, token in enumerate(side.tokens):
        classes = ["cd-token"]
        if token.changed:
            classes.append("cd-changed")
        if index == selected:
            classes.append("cd-selected")
        mark = marks[index] if marks is not None and index < len(marks) else None
        tooltip = _tooltip(token)
        if mark is not None:
            classes.append(f"cd-{mark}")
            tooltip += f" · ground truth: {mark}"
        spans.append(
            f'<span class="{" ".join(classes)}" data-token="{index}" '
            f'style="background-color: {scale.colour(token_value(token, scale.mode))}" '
            f'title="{html.escape(tooltip)}">{html.escape(answer_piece(side, index))}</span>'
        )
        if mark is not None:
            spans.append(f'<sup class="cd-mark cd-mark-{mark}" title="{mark}">{MARK_SYMBOLS[mark]}</sup>')
    ending = ""
    if side.finished:
        ending = f'<span class="cd-ending">[{html.escape(side.stop_reason or "finished")}]</span>'
    note = ""
    if scale.mode in NOT_RECORDED and all(token_value(t, scale.mode) is None for t in side.tokens):
        note = f'<div class="cd-note">{html.escape(NOT_RECORDED[scale.mode])}</div>'
    return f'<div class="cd-heatmap" data-side="{html.escape(side.name)}">{"".join(spans)}{ending}{note}</div>'


_MODE_TEXT = {
    "visual_dependence": (
        "visual dependence: log p(token | image) − log p(token | noised image), in nats",
        "the image supports it",
        "more likely without the image",
    ),
    "contrast_shift": (
        "contrast shift: log p(token | method) − log p(token | plain), in nats (always 0 on the baseline)",
        "the method pushed it up",
        "the method pushed it down",
    ),
    "confidence": ("confidence: probability of the token in the distribution it was drawn from", "certain", "unsure"),
    "first_top_layer": (
        "layer it first led: the first layer whose early exit lm_head(h_j) (no final norm, as DoLa's) has the token "
        "as its top candidate; 0 = the embeddings, the last = the final layer; uncoloured: no layer's top",
        "only the last layers",
        "already the first layers",
    ),
}


def legend_html(scale: Scale) -> str:
    title, high_text, low_text = _MODE_TEXT[scale.mode]
    if scale.diverging:
        stops = [scale.low, scale.low / 2, 0.0, scale.high / 2, scale.high]
        ends = f"{html.escape(low_text)} ← → {html.escape(high_text)}"
    else:
        stops = [0.0, 0.25, 0.5, 0.75, 1.0]
        ends = f"{html.escape(low_text)} → {html.escape(high_text)}"
    number = "{:+.2f}" if scale.diverging else "{:.2f}"
    if scale.mode == "first_top_layer":  # whole layers
        stops = sorted({round(scale.low + f * (scale.high - scale.low)) for f in (0.0, 0.25, 0.5, 0.75, 1.0)})
        number = "layer {:.0f}"
    swatches = "".join(
        f'<span class="cd-swatch" style="background-color: {scale.colour(v)}">{number.format(v)}</span>' for v in stops
    )
    return (
        f'<div class="cd-legend"><b>{html.escape(title)}</b> · {ends}<br>{swatches}'
        '<span class="cd-token cd-changed cd-legend-changed">underlined</span>: not the original branch\'s top token '
        "(the method, or sampling, changed the choice) · click a token, or pick it below, to inspect it</div>"
    )


def candidates_html(token: TokenTrace | None, shown_piece: str | None = None, method: str = "baseline") -> str:
    """A token's top candidates under each branch and in the final distribution (one column each, the chosen token
    highlighted), with its per-step numbers above; ``shown_piece``: the token as its answer shows it
    (``answer_piece``), by default ``visible_piece`` of its piece; ``method``: its side's (``SideResult.method``),
    whose record names the branches."""
    if token is None:
        return '<div class="cd-candidates cd-empty">Select a token to see its candidates.</div>'
    views = [(role_label(method, role), view) for role, view in token.branches.items()]
    views.append(("final (decoded from)", token.final))
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in views)
    chosen = "".join(f'<td class="cd-chosen-prob">p(chosen) = {view.prob:.3f}</td>' for _, view in views)
    rows = []
    for rank in range(max(len(view.top) for _, view in views)):
        cells = []
        for _, view in views:
            if rank >= len(view.top):
                cells.append("<td></td>")
                continue
            candidate = view.top[rank]
            marked = ' class="cd-chosen"' if candidate.token_id == token.token_id else ""
            cells.append(
                f"<td{marked}><span class=\"cd-piece\">{html.escape(visible_piece(candidate.piece))}</span> "
                f"{candidate.prob:.3f}</td>"
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    facts = [
        f"visual dependence {_signed(token.visual_dependence, ' nats')}",
        f"contrast shift {_signed(token.contrast_shift, ' nats')}",
        f"plausible set {token.plausible_set_size} tokens",
        "changed by the method" if token.changed else "same as plain decoding's top token",
    ]
    if token.early_exit is not None:
        facts.append(_first_top_text(token.early_exit))
    facts += [f"{STEP_SCALARS[name].symbol} = {value:.3f}" for name, value in token.scalars.items()]
    shown_piece = visible_piece(token.piece) if shown_piece is None else shown_piece
    header = f"<b>Token {token.step}: “{html.escape(shown_piece)}”</b> · " + " · ".join(
        map(html.escape, facts)
    )
    return (
        f'<div class="cd-candidates"><div class="cd-facts">{header}</div>'
        f'<table class="cd-top"><thead><tr>{head}</tr><tr>{chosen}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        "</div>"
    )


def attention_caption(token: TokenTrace | None, shown_piece: str | None = None) -> str:
    if token is None:
        return "Where the token looked (select a token)"
    if not token.image_attention:
        return "Image attention was not recorded for this token"
    share = token.image_attention.get("share")
    share_text = "" if share is None else f"; {share:.0%} of its attention is on image tokens"
    shown_piece = visible_piece(token.piece) if shown_piece is None else shown_piece
    if token.image_attention.get("grid") is None:  # learned queries (InstructBLIP's Q-Former), not patches
        return (f"No map of where “{shown_piece}” looked: this model's image tokens are learned "
                f"queries that each read the whole picture, not patches of it{share_text}")
    return f"Where “{shown_piece}” looked{share_text}"


def method_title(method: str) -> str:
    return REGISTRY[method].title


def was_stopped(comparison: Comparison) -> bool:
    """Whether the visitor's Stop (or a closed page) ended either side."""
    return any(side.stop_reason == "stopped" for side in sides(comparison))


def branch_notes(comparison: Comparison | None) -> str:
    """Markdown: what the method's pre-steps did (its augmentation, its description, its transform ...), and the
    control's, in the words of their records' ``notes``."""
    if comparison is None:
        return ""
    info = comparison.branches
    parts = [f"**{method_title(comparison.method)}**", *_notes_markdown(REGISTRY[comparison.method].notes(info))]
    if comparison.control is not None:
        parts.append(f"**{method_title(comparison.control)}** (third panel)")
        parts += _notes_markdown(REGISTRY[comparison.control].notes(info.get("control", {})))
    return "\n\n".join(parts)


def _notes_markdown(notes: list[Note]) -> list[str]:
    """Each note as a paragraph, its quote (the model's or a user's words) as a quote block below it."""
    parts = []
    for note in notes:
        parts.append(html.escape(note.text, quote=False))
        if note.quote is not None:
            parts.append(_quote(note.quote))
    return parts


def _quote(text: str) -> str:
    text = text.strip() or "(empty)"
    # Shown as a quote block; escaped so the model's text cannot inject Markdown or HTML into the page.
    return "\n".join("> " + html.escape(line) for line in text.splitlines())


def image_captions(comparison: Comparison | None) -> list[tuple[object, str]]:
    """(image, caption) for each picture a row fed the model."""
    if comparison is None:
        return []
    return [(image, role_label(comparison.method, role)) for role, image in comparison.images.items()]


def status_text(comparison: Comparison | None, seconds: float | None = None) -> str:
    """One line: how far the run is, or how it ended."""
    if comparison is None:
        return ""
    total = comparison.decoding["max_new_tokens"]
    if not comparison.done:
        return f"Generating… token {comparison.steps} of at most {total}."
    ended = [
        f"{side_title(comparison, side)}: {len(side.tokens)} tokens ({side.stop_reason})" for side in sides(comparison)
    ]
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return f"{'Stopped' if was_stopped(comparison) else 'Done'}{took}. " + "; ".join(ended) + "."
