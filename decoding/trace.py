"""What is recorded for every generated token, and the whole run, as plain JSON-serialisable data.

The demo renders these; the evaluation scores them. Nothing here knows a model or Gradio.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

TOP_K = 5


@dataclass
class Candidate:
    token_id: int
    piece: str
    prob: float


@dataclass
class BranchView:
    """One branch's view of a step: the chosen token's probability there and its own top candidates."""

    prob: float
    top: list[Candidate]


@dataclass
class TokenTrace:
    """Why one token was chosen (one entry of a side's ``tokens`` in the exported JSON).

    step:       0-based index of the token in the answer.
    token_id, piece: the chosen token, and the text it adds to the decoded answer (spaces kept).
    branches:   role -> BranchView, for "original", every contrast role of the side's method (its record's
                ``contrast_roles``: "noised", "transformed", "augmented", "text_only", "description", "disturbed",
                "introspective", "blind", "negative"; ``Method.label`` names each in words) and "distorted", the row
                visual dependence is measured against. The baseline side has "original" (and "distorted").
    final:      the distribution actually decoded from (after the method's rule, its plausibility mask and the
                sampling warpers).
    plausible_set_size: how many tokens the final distribution keeps (finite logits).
    changed:    the chosen token is not the original branch's argmax (the contrast, or sampling, moved the choice).
    visual_dependence: log p(token | image) - log p(token | distorted image), natural log; None when not measured.
    contrast_shift: log p_final(token) - log p_original(token): how far the method moved this token (0 on baseline).
    scalars:    the method's per-step scalars by their ``decoding.methods.STEP_SCALARS`` names ("contrast_weight":
                α_t of (1+α_t)·l − α_t·l′; "plausibility_cut": β_t of p ≥ β_t·max p); {} for methods whose
                weights are constant and for the baseline.
    image_attention: {"grid": rows x cols floats summing to 1 over the image tokens (None where the model's image
                tokens have no place in the picture: ``RowInputs.image_grid``), "share": the attention mass on
                image tokens out of all keys}, head mean over the chosen layers; None when not recorded.
    early_exit: {"first_top": j, "final": N}: the first hidden-state index j (0 = the embeddings, N = the final
                layer, the model's own logits) whose early exit ``lm_head(h_j)``, with no final norm as DoLa's
                premature layers, has this token as its argmax ("first_top" None: no layer's); recorded on DoLa and
                DeCo runs, every panel (``first_top_layer``), None elsewhere.
    """

    step: int
    token_id: int
    piece: str
    branches: dict[str, BranchView]
    final: BranchView
    plausible_set_size: int
    changed: bool
    visual_dependence: float | None = None
    contrast_shift: float = 0.0
    scalars: dict[str, float] = field(default_factory=dict)
    image_attention: dict[str, Any] | None = None
    early_exit: dict[str, int | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))


@dataclass
class SideResult:
    """One panel of the side-by-side view: an answer and the trace of each of its tokens."""

    name: str
    method: str
    text: str = ""
    tokens: list[TokenTrace] = field(default_factory=list)
    finished: bool = False
    stop_reason: str | None = None  # "eos", "max_new_tokens", "stopped"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "text": self.text,
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "tokens": [t.to_dict() for t in self.tokens],
        }


def streamed_piece(decoded: str, shown: str, alone: str) -> tuple[str, str]:
    """(the piece a new token adds to the answer, the answer's text now shown), from the whole answer ``decoded``
    with that token and the text ``shown`` before it (``alone``: the token decoded by itself, the piece when the
    decoding of the longer answer does not extend the shorter one).

    A character whose UTF-8 bytes are split over byte tokens (an emoji in Llama's byte fallback or byte-level BPE)
    decodes to U+FFFD until its last byte arrives: up to three trailing U+FFFD are held back, so those tokens add
    "" and the one that completes the character adds it whole.

    >>> streamed_piece("A \ufffd", "A ", "\ufffd")      # the emoji's first byte: nothing yet
    ('', 'A ')
    >>> streamed_piece("A 😀", "A ", "\ufffd")           # its last byte: the whole character
    ('😀', 'A 😀')
    """
    held = len(decoded) - len(decoded.rstrip("\ufffd"))
    visible = decoded[: len(decoded) - min(held, 3)]
    if visible.startswith(shown):
        return visible[len(shown):], visible
    return alone, visible


def top_candidates(probs: torch.Tensor, piece_of, k: int = TOP_K) -> list[Candidate]:
    """The k most probable tokens of a 1-D probability vector."""
    k = min(k, probs.numel())
    values, ids = probs.topk(k)
    return [Candidate(int(i), piece_of(int(i)), float(v)) for v, i in zip(values.tolist(), ids.tolist())]


def first_top_layer(layer_logits: dict[int, torch.Tensor], token: int) -> dict[str, int | None]:
    """The first layer at which ``token`` is the top candidate: ``{"first_top": j, "final": N}``, j the smallest
    hidden-state index whose logits' argmax is ``token`` (None if none), N the largest index given (the final layer).

    layer_logits: hidden-state index -> that layer's (vocab,) early-exit logits; index N the model's own logits.

    >>> first_top_layer({0: torch.tensor([0.0, 2.0]), 1: torch.tensor([3.0, 1.0]), 2: torch.tensor([5.0, 0.0])}, 0)
    {'first_top': 1, 'final': 2}
    >>> first_top_layer({0: torch.tensor([0.0, 2.0]), 2: torch.tensor([0.0, 1.0])}, 0)
    {'first_top': None, 'final': 2}
    """
    if not layer_logits:
        raise ValueError("first_top_layer needs the logits of at least one layer")
    order = sorted(layer_logits)
    tops = torch.stack([layer_logits[j].reshape(-1) for j in order]).argmax(dim=-1).tolist()
    first = next((j for j, top in zip(order, tops) if top == token), None)
    return {"first_top": first, "final": order[-1]}


def _finite(value):
    """JSON has no NaN or infinity: map them to None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
