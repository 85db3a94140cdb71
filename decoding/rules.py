"""Per-step combination rules of the training-free contrastive decoding methods.

Every rule is a small *pure* function of one decoding step's next-token logits, in the spirit of the logits
processors of ``transformers.generation.logits_process`` but written as plain functions: no hidden state, no
randomness, inputs never modified. Notation (see each docstring):

- ``l``   the logits of the *original* branch (real image + prompt), shape ``(batch, vocab)``;
- ``l'``  the logits of a *contrast* branch, same shape;
- ``p = softmax(l)``.

Conventions shared by all rules:

- Inputs may be any floating dtype (float16, bfloat16, float32, float64); everything is computed in float32 and the
  result is a new float32 ``(batch, vocab)`` tensor.
- Tokens outside the plausible set are ``-inf`` in the result. The set is computed from the original branch's raw
  logits (never from the combined ones) and must be applied *before* temperature / top-p / top-k, which the engine
  runs afterwards. The original branch's argmax always survives, so a row is never all ``-inf``.
- Invalid arguments raise ``ValueError`` with a message naming the argument (wrong types included, so that callers
  such as the UI only need to catch one exception type).
- Nothing here synchronises with the device (parameters are Python numbers, validated on the host), so the rules are
  cheap to call once per generated token on a GPU.

The per-step scalars some methods compute (SAVCD's ``beta_t``, CODE's ``BD`` and ``alpha_t``, M3ID's ``gamma_t``)
are exposed by separate pure companion functions (``savcd_beta``, ``code_divergence``, ``m3id_gamma``) and, uniformly
for every method, by :func:`step_scalars`; the rules with the method names return the logits tensor itself.

``RULES`` maps method names to rules, ``CONTRAST_BRANCHES`` names each rule's contrast arguments in order, and
``PARAMS`` / ``DEFAULTS`` describe the tunable parameters for the UI.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "ParamSpec",
    "PARAMS",
    "DEFAULTS",
    "RULES",
    "CONTRAST_BRANCHES",
    "plausibility_mask",
    "apply_mask",
    "entropy_bits",
    "vcd",
    "icd",
    "ritual",
    "ritual_vcd",
    "savcd",
    "savcd_beta",
    "code",
    "code_divergence",
    "m3id",
    "m3id_gamma",
    "m3id_weight",
    "rule_kwargs",
    "distribution_l2",
    "step_scalars",
]

_LN2 = math.log(2.0)
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


# ---------------------------------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------------------------------
def _real(name: str, value) -> float:
    """``value`` as a finite Python float, or ValueError."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    if math.isinf(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _non_negative(name: str, value) -> float:
    v = _real(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _positive(name: str, value) -> float:
    v = _real(name, value)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def _beta(value, name: str = "beta") -> float:
    v = _real(name, value)
    if not 0.0 < v <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {v}")
    return v


def _step(value) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex():
            raise ValueError(f"step must be a single integer, got a tensor {value!r}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"step must be an integer (tokens generated so far), got {value!r}")
    v = int(value)
    if v < 0:
        raise ValueError(f"step must be >= 0, got {v}")
    return v


def _logits(name: str, t) -> torch.Tensor:
    """Validate one branch's logits and return them as float32 (possibly the same object: never modify it)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, vocab), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {t.dtype}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    return t.to(torch.float32)


def _branches(logits, **others) -> tuple[torch.Tensor, ...]:
    """Validate the original branch and the contrast branches (same shape); all as float32, original first."""
    ref = _logits("logits", logits)
    out = [ref]
    for name, t in others.items():
        c = _logits(name, t)
        if c.shape != ref.shape:
            raise ValueError(
                f"shape mismatch: logits has shape {tuple(ref.shape)} but {name} has shape {tuple(c.shape)}"
            )
        if c.device != ref.device:
            raise ValueError(f"device mismatch: logits on {ref.device} but {name} on {c.device}")
        out.append(c)
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------------
# shared building blocks
# ---------------------------------------------------------------------------------------------------------------------
def _keep_log(l: torch.Tensor, log_beta) -> torch.Tensor:
    """Keep mask ``l_i >= log_beta + max(l)`` (strict ``<`` is masked); ``log_beta`` a float or a (batch,) tensor.

    ``log_beta <= 0`` so the threshold never exceeds the row maximum (float rounding is monotone), hence the argmax
    always survives.
    """
    top = l.max(dim=-1, keepdim=True).values
    if isinstance(log_beta, torch.Tensor):
        log_beta = log_beta.to(device=l.device, dtype=torch.float32).unsqueeze(-1)
    return l >= top + log_beta


def apply_mask(combined: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``combined`` with ``-inf`` where ``keep`` is False (a new tensor; the input is untouched)."""
    return combined.masked_fill(~keep, float("-inf"))


def plausibility_mask(logits: torch.Tensor, beta=0.1) -> torch.Tensor:
    """Adaptive plausibility constraint: bool mask of the tokens the original branch itself finds plausible.

    ``keep_i  <=>  p_i >= beta * max(p)  <=>  l_i >= log(beta) + max(l)``   (the softmax normaliser cancels)

    Tokens with ``l_i < log(beta) + max(l)`` (strictly) are masked. Computed in float32 on the *raw* logits of the
    original branch.

    Args:
        logits: ``(batch, vocab)`` original-branch logits, any floating dtype.
        beta: a float in ``(0, 1]``, or a ``(batch,)`` tensor of per-row values in ``(0, 1]`` (SAVCD's ``beta_t``).
            ``beta = 1`` keeps only the maximum (and its ties).

    Returns:
        ``(batch, vocab)`` bool tensor, True = kept.
    """
    l = _logits("logits", logits)
    if isinstance(beta, torch.Tensor) and beta.numel() != 1:
        if beta.dim() != 1 or beta.shape[0] != l.shape[0]:
            raise ValueError(f"a tensor beta must have shape ({l.shape[0]},), got {tuple(beta.shape)}")
        if not beta.is_floating_point():
            raise ValueError(f"beta must have a floating dtype, got {beta.dtype}")
        b = beta.to(torch.float32)
        if bool(torch.isnan(b).any()):
            raise ValueError("beta must not contain NaN")
        if not bool(((b > 0) & (b <= 1)).all()):
            raise ValueError("every beta must be in (0, 1]")
        return _keep_log(l, torch.log(b))
    return _keep_log(l, math.log(_beta(beta)))


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of ``softmax(logits)`` per row, in bits: ``H = -sum_i p_i log2 p_i`` (``0 log 0 = 0``).

    Returns a float32 ``(batch,)`` tensor in ``[0, log2(vocab)]``.
    """
    l = _logits("logits", logits)
    p = torch.softmax(l, dim=-1)
    return (torch.special.entr(p).sum(dim=-1) / _LN2).clamp_min(0.0)


def distribution_l2(logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """L2 distance between the two branches' next-token distributions per row: ``||softmax(l) - softmax(l')||_2``.

    VACoDe's criterion for picking, at the first step, the augmentation whose distribution is farthest from the
    original one (then decoded with :func:`vcd`). Returns a float32 ``(batch,)`` tensor.
    """
    l, c = _branches(logits, other_logits=other_logits)
    return torch.linalg.vector_norm(torch.softmax(l, dim=-1) - torch.softmax(c, dim=-1), ord=2, dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# VCD / ICD
# ---------------------------------------------------------------------------------------------------------------------
def vcd(logits: torch.Tensor, contrast_logits: torch.Tensor, alpha: float = 1.0, beta: float = 0.1) -> torch.Tensor:
    r"""VCD (Leng et al., CVPR 2024): contrast with a distorted (diffusion-noised) image.

    ``out = (1 + alpha) * l - alpha * l'``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere.

    The weights sum to 1, so log-softmax inputs give the same distribution as raw logits.

    Args:
        logits: ``(batch, vocab)`` original branch.
        contrast_logits: ``(batch, vocab)`` distorted-image branch.
        alpha: contrast strength, ``>= 0`` (0 = original logits on the plausible set).
        beta: plausibility cut in ``(0, 1]``.
    """
    l, c = _branches(logits, contrast_logits=contrast_logits)
    alpha = _non_negative("alpha", alpha)
    beta = _beta(beta)
    return apply_mask((1.0 + alpha) * l - alpha * c, _keep_log(l, math.log(beta)))


def icd(logits: torch.Tensor, contrast_logits: torch.Tensor, alpha: float = 1.0, beta: float = 0.1) -> torch.Tensor:
    r"""ICD (instruction contrastive decoding): contrast with the same image and question under a "disturbance"
    system instruction. Same combination as VCD:

    ``out = (1 + alpha) * l - alpha * l'``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere.
    """
    return vcd(logits, contrast_logits, alpha=alpha, beta=beta)


# ---------------------------------------------------------------------------------------------------------------------
# RITUAL
# ---------------------------------------------------------------------------------------------------------------------
def ritual(
    logits: torch.Tensor, transformed_logits: torch.Tensor, alpha: float = 3.0, beta: float = 0.1
) -> torch.Tensor:
    r"""RITUAL (Woo et al., 2024): *add* the branch of a randomly transformed image.

    ``out = l + alpha * l_T``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere   (``alpha`` is the
    paper's ``alpha_pos``).

    The weights sum to ``1 + alpha`` (4 by default), so besides mixing in the transformed view RITUAL also *sharpens*
    the distribution (like a temperature of ``1 / (1 + alpha)`` when both branches agree). This is the method as
    published; it is not renormalised away here.

    Args:
        logits: ``(batch, vocab)`` original branch.
        transformed_logits: ``(batch, vocab)`` transformed-image ("complement") branch.
        alpha: ``alpha_pos``, weight of the transformed branch, ``>= 0``.
        beta: plausibility cut in ``(0, 1]``.
    """
    l, t = _branches(logits, transformed_logits=transformed_logits)
    alpha = _non_negative("alpha", alpha)
    beta = _beta(beta)
    return apply_mask(l + alpha * t, _keep_log(l, math.log(beta)))


def ritual_vcd(
    logits: torch.Tensor,
    transformed_logits: torch.Tensor,
    noised_logits: torch.Tensor,
    alpha_pos: float = 3.0,
    alpha: float = 1.0,
    beta: float = 0.1,
) -> torch.Tensor:
    r"""RITUAL stacked with VCD (three branches: original, transformed image, noised image).

    ``out = (1 + alpha) * (l + alpha_pos * l_T) - alpha * l_noised``   on ``{i : l_i >= log(beta) + max(l)}``.

    Chosen combination (the authors' code cannot stack the two; the spec asks to choose and document one): first
    RITUAL's positive combination forms the "expert" ``l + alpha_pos * l_T``, then VCD's contrast is applied to it
    with the noised branch as the "amateur". The plausibility mask is VCD/RITUAL's, computed from the *original*
    branch only (not from the combined expert), so that the plausible set is the same as for the two methods alone.

    Weights sum to ``(1 + alpha) * (1 + alpha_pos) - alpha = 1 + alpha_pos * (1 + alpha)`` (7 with the defaults): this
    sharpens more than RITUAL alone (4). With ``alpha = 0`` it is exactly :func:`ritual`; with ``alpha_pos = 0``
    exactly :func:`vcd`.
    """
    l, t, n = _branches(logits, transformed_logits=transformed_logits, noised_logits=noised_logits)
    alpha_pos = _non_negative("alpha_pos", alpha_pos)
    alpha = _non_negative("alpha", alpha)
    beta = _beta(beta)
    combined = (1.0 + alpha) * (l + alpha_pos * t) - alpha * n
    return apply_mask(combined, _keep_log(l, math.log(beta)))


# ---------------------------------------------------------------------------------------------------------------------
# SAVCD (self-augmented VCD)
# ---------------------------------------------------------------------------------------------------------------------
def savcd_beta(logits: torch.Tensor, gamma: float = 0.5) -> torch.Tensor:
    r"""SAVCD's entropy-adaptive plausibility threshold per row.

    ``beta_t = sigmoid(-gamma * H)``,  ``H = -sum_i p_i log2 p_i`` (bits) of the *original* branch.

    A confident step (``H -> 0``) gives ``beta_t -> 0.5`` (few candidates kept); a flat step gives a small ``beta_t``
    (many kept). ``gamma = 0`` gives ``beta_t = 0.5`` always. Returns a float32 ``(batch,)`` tensor in ``(0, 0.5]``
    (it can underflow to 0 for huge ``gamma * H``; :func:`savcd` works with ``log(beta_t)`` and is not affected).
    """
    gamma = _non_negative("gamma", gamma)
    return torch.sigmoid(-gamma * entropy_bits(logits))


def savcd(
    logits: torch.Tensor, contrast_logits: torch.Tensor, alpha: float = 1.0, gamma: float = 0.5
) -> torch.Tensor:
    r"""Self-augmented VCD (Im et al., ICLR 2026): VCD's combination with an entropy-adaptive plausibility cut.

    ``out = (1 + alpha) * l - alpha * l'``   on ``{i : l_i >= log(beta_t) + max(l)}``, ``-inf`` elsewhere, with
    ``beta_t = sigmoid(-gamma * H)`` per row and ``H`` the original branch's entropy in bits (see :func:`savcd_beta`).

    ``log(beta_t)`` is computed as ``logsigmoid(-gamma * H)`` (no underflow).

    Args:
        logits: ``(batch, vocab)`` original branch.
        contrast_logits: ``(batch, vocab)`` branch of the self-selected augmentation.
        alpha: contrast strength, ``>= 0``.
        gamma: entropy sensitivity, ``>= 0``.
    """
    l, c = _branches(logits, contrast_logits=contrast_logits)
    alpha = _non_negative("alpha", alpha)
    gamma = _non_negative("gamma", gamma)
    log_beta_t = F.logsigmoid(-gamma * entropy_bits(l))
    return apply_mask((1.0 + alpha) * l - alpha * c, _keep_log(l, log_beta_t))


# ---------------------------------------------------------------------------------------------------------------------
# CODE
# ---------------------------------------------------------------------------------------------------------------------
def _bounded_divergence(l: torch.Tensor, d: torch.Tensor, exponent: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(BD per row, p_v) for validated float32 logits."""
    p_v = torch.softmax(l, dim=-1)
    p_d = torch.softmax(d, dim=-1)
    # log2(x + 1) via log1p for accuracy at small x. Each term is <= 1 and sum(p_v + p_d) = 2, so BD <= 1; the clamp
    # only removes rounding excursions (BD slightly > 1 would mask the argmax).
    terms = torch.log1p((p_v - p_d).abs().pow(exponent)) / _LN2 * (p_v + p_d)
    bd = (0.5 * terms.sum(dim=-1)).clamp(0.0, 1.0)
    return bd, p_v


def code_divergence(
    logits: torch.Tensor, description_logits: torch.Tensor, exponent: float = 0.7
) -> torch.Tensor:
    r"""CODE's bounded divergence between the image branch and the description branch, per row.

    ``BD = 0.5 * sum_i log2(|p_v,i - p_d,i|^a + 1) * (p_v,i + p_d,i)``  in ``[0, 1]``, with ``p_v = softmax(l)``,
    ``p_d = softmax(l_d)`` and ``a = exponent``. CODE's per-step weight is ``alpha_t = 1 - BD``.

    Returns a float32 ``(batch,)`` tensor; identical branches give exactly 0.
    """
    l, d = _branches(logits, description_logits=description_logits)
    exponent = _positive("exponent", exponent)
    return _bounded_divergence(l, d, exponent)[0]


def code(logits: torch.Tensor, description_logits: torch.Tensor, exponent: float = 0.7) -> torch.Tensor:
    r"""CODE (Kim et al., NeurIPS 2024): contrast with the model's own description of the image.

    Per row: ``BD`` as in :func:`code_divergence`, ``alpha_t = 1 - BD``,

    ``out = (1 + alpha_t) * l - alpha_t * l_d``   on ``{i : p_v,i >= BD * max(p_v)}`` (probability space),
    ``-inf`` elsewhere.

    Identical branches give ``BD = 0``, ``alpha_t = 1``, nothing masked and ``out == l`` exactly
    (``2l - l`` is exact in floating point).

    Deviation: tokens whose original logit is ``-inf`` stay ``-inf`` even when ``BD = 0`` (the formula would give
    ``NaN`` there: ``2(-inf) - (-inf)``); finite logits follow the formula exactly.

    Args:
        logits: ``(batch, vocab)`` image branch.
        description_logits: ``(batch, vocab)`` branch with the image replaced by its self-generated description.
        exponent: ``a > 0`` in the bounded divergence.
    """
    l, d = _branches(logits, description_logits=description_logits)
    exponent = _positive("exponent", exponent)
    bd, p_v = _bounded_divergence(l, d, exponent)
    alpha_t = (1.0 - bd).unsqueeze(-1)
    combined = (1.0 + alpha_t) * l - alpha_t * d
    keep = (p_v >= bd.unsqueeze(-1) * p_v.max(dim=-1, keepdim=True).values) & (l > float("-inf"))
    return apply_mask(combined, keep)


# ---------------------------------------------------------------------------------------------------------------------
# M3ID
# ---------------------------------------------------------------------------------------------------------------------
def m3id_gamma(step: int, lam: float = 0.02) -> float:
    r"""M3ID's visual-information weight ``gamma_t = exp(-lam * t)`` with ``t = step`` the number of tokens generated
    so far (``gamma_0 = 1``: no correction on the first token)."""
    step = _step(step)
    lam = _non_negative("lam", lam)
    return math.exp(-lam * step)


def m3id_weight(step: int, lam: float = 0.02) -> float:
    r"""M3ID's contrast weight ``(1 - gamma_t) / gamma_t = exp(lam * t) - 1`` (0 at ``t = 0``; ``inf`` on overflow)."""
    step = _step(step)
    lam = _non_negative("lam", lam)
    x = lam * step
    return math.expm1(x) if x < 700.0 else math.inf


def m3id(
    logits: torch.Tensor, text_only_logits: torch.Tensor, step: int, lam: float = 0.02, beta: float = 0.1
) -> torch.Tensor:
    r"""M3ID: contrast with the prompt *without* the image, more strongly as the answer grows.

    ``gamma_t = exp(-lam * t)``,  ``out = l + (l - l_u) * (1 - gamma_t) / gamma_t``   on
    ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere; ``t = step`` is the number of tokens generated so far.

    ``(1 - gamma_t) / gamma_t`` is computed as ``expm1(lam * t)`` (same value, no cancellation); at ``t = 0`` it is 0
    and the output equals the original logits on the plausible set.

    Args:
        logits: ``(batch, vocab)`` original branch.
        text_only_logits: ``(batch, vocab)`` branch of the same prompt without the image.
        step: tokens generated so far, integer ``>= 0`` (the same for every row).
        lam: decay rate ``>= 0``.
        beta: plausibility cut in ``(0, 1]``.

    Raises ValueError when ``lam * step`` is so large that the weight overflows float32 (``lam * step > ~88``).
    """
    l, u = _branches(logits, text_only_logits=text_only_logits)
    step = _step(step)
    lam = _non_negative("lam", lam)
    beta = _beta(beta)
    weight = m3id_weight(step, lam)
    if not weight <= _FLOAT32_MAX:
        raise ValueError(
            f"lam * step = {lam * step:g} is too large: the M3ID weight (1 - gamma_t) / gamma_t overflows float32"
        )
    return apply_mask(l + (l - u) * weight, _keep_log(l, math.log(beta)))


# ---------------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One tunable parameter of a method, for the UI and for validating user input.

    name:     the parameter's name at the method level (what the UI shows and ``PARAMS`` / ``DEFAULTS`` use).
    default:  the papers' default.
    low/high: the suggested slider range (validity is ``minimum`` / ``maximum`` below: e.g. ``alpha >= 0`` has no
              upper bound).
    help:     a one-line explanation.
    step:     the slider step.
    integer:  an integer parameter (``noise_step``).
    kind:     ``"rule"``: a keyword of the per-step rule; ``"branch"``: used to build a contrast branch (the
              diffusion noise step), not passed to the rule.
    arg:      the rule's keyword when it differs from ``name`` (RITUAL's ``alpha_pos`` is ``ritual(alpha=...)``).
    minimum / min_inclusive / maximum: the valid domain (maximum inclusive; None = unbounded).
    """

    name: str
    default: float
    low: float
    high: float
    help: str
    step: float = 0.01
    integer: bool = False
    kind: str = "rule"
    arg: str | None = None
    minimum: float | None = 0.0
    min_inclusive: bool = True
    maximum: float | None = None

    @property
    def rule_arg(self) -> str:
        return self.arg or self.name

    def validate(self, value):
        """``value`` checked against the domain and returned as float (int for integer parameters); else
        ValueError."""
        if self.integer:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            v = int(value)
        else:
            v = _real(self.name, value)
        if self.minimum is not None:
            if self.min_inclusive and v < self.minimum:
                raise ValueError(f"{self.name} must be >= {self.minimum:g}, got {v}")
            if not self.min_inclusive and v <= self.minimum:
                raise ValueError(f"{self.name} must be > {self.minimum:g}, got {v}")
        if self.maximum is not None and v > self.maximum:
            raise ValueError(f"{self.name} must be <= {self.maximum:g}, got {v}")
        return v


_ALPHA_HELP = "Contrast strength: out = (1+alpha)·l − alpha·l′; 0 = no contrast, larger pushes harder away from l′."
_BETA_HELP = "Plausibility cut: keep only tokens with p ≥ beta·max(p) under the original branch; 1 keeps only the top."


def _beta_spec() -> ParamSpec:
    return ParamSpec("beta", 0.1, 0.001, 1.0, _BETA_HELP, 0.001, minimum=0.0, min_inclusive=False, maximum=1.0)


def _noise_step_spec() -> ParamSpec:
    return ParamSpec(
        "noise_step", 500, 0, 999,
        "Diffusion step T (0–999) of the noise added to the image for the contrast branch; 500 ≈ 0.86·x + 0.51·noise.",
        1, integer=True, kind="branch", maximum=999,
    )


PARAMS: dict[str, tuple[ParamSpec, ...]] = {
    "vcd": (
        ParamSpec("alpha", 1.0, 0.0, 5.0, _ALPHA_HELP + " Contrast branch: the image with diffusion noise."),
        _beta_spec(),
        _noise_step_spec(),
    ),
    "icd": (
        ParamSpec("alpha", 1.0, 0.0, 5.0, _ALPHA_HELP + " Contrast branch: a 'disturbance' system instruction."),
        _beta_spec(),
    ),
    "ritual": (
        ParamSpec(
            "alpha_pos", 3.0, 0.0, 10.0,
            "Weight of the transformed-image branch added to the original: l + alpha_pos·l_T; the weights sum to "
            "1+alpha_pos, so it also sharpens.",
            arg="alpha",
        ),
        _beta_spec(),
    ),
    "ritual_vcd": (
        ParamSpec(
            "alpha_pos", 3.0, 0.0, 10.0,
            "Weight of the transformed-image branch in the expert l + alpha_pos·l_T (RITUAL's part).",
        ),
        ParamSpec(
            "alpha", 1.0, 0.0, 5.0,
            "Contrast strength against the noised-image branch: (1+alpha)·expert − alpha·l_noised (VCD's part).",
        ),
        _beta_spec(),
        _noise_step_spec(),
    ),
    "savcd": (
        ParamSpec(
            "alpha", 1.0, 0.0, 5.0, _ALPHA_HELP + " Contrast branch: the augmentation the model picked itself."
        ),
        ParamSpec(
            "gamma", 0.5, 0.0, 5.0,
            "Entropy sensitivity of the adaptive cut beta_t = sigmoid(−gamma·H), H in bits: confident steps keep "
            "few tokens (beta_t→0.5), flat steps many; 0 fixes beta_t = 0.5.",
        ),
    ),
    "code": (
        ParamSpec(
            "exponent", 0.7, 0.1, 2.0,
            "Exponent a of the bounded divergence BD = ½·Σ log2(|p_v−p_d|^a + 1)(p_v+p_d); sets how fast the weight "
            "alpha_t = 1 − BD and the cut p ≥ BD·max(p) react to disagreement with the description branch.",
            min_inclusive=False,
        ),
    ),
    "m3id": (
        ParamSpec(
            "lam", 0.02, 0.0, 0.2,
            "Decay rate of gamma_t = exp(−lam·t): the text-only contrast weight (1−gamma_t)/gamma_t grows with the "
            "number t of generated tokens; 0 = no contrast.",
            0.001,
        ),
        _beta_spec(),
    ),
}

# Every method's parameters with their defaults (rule and branch parameters; see ``rule_kwargs`` for the rule's).
DEFAULTS: dict[str, dict[str, float]] = {
    method: {p.name: p.default for p in specs} for method, specs in PARAMS.items()
}

RULES: dict[str, Callable[..., torch.Tensor]] = {
    "vcd": vcd,
    "icd": icd,
    "ritual": ritual,
    "ritual_vcd": ritual_vcd,
    "savcd": savcd,
    "code": code,
    "m3id": m3id,
}

# Positional contrast arguments of each rule, after the original branch, in order. ``m3id`` also needs ``step=``.
CONTRAST_BRANCHES: dict[str, tuple[str, ...]] = {
    "vcd": ("noised",),
    "icd": ("disturbed",),
    "ritual": ("transformed",),
    "ritual_vcd": ("transformed", "noised"),
    "savcd": ("augmented",),
    "code": ("description",),
    "m3id": ("text_only",),
}


def rule_kwargs(method: str, params: dict | None = None) -> dict:
    """The keyword arguments of ``RULES[method]`` from method-level ``params`` (missing ones: defaults).

    Drops branch parameters (``noise_step``) and renames where the rule's keyword differs (RITUAL's ``alpha_pos`` ->
    ``alpha``). Every value (branch parameters included) is validated; unknown names raise ValueError.
    """
    if method not in PARAMS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(PARAMS)}")
    params = dict(params or {})
    specs = {s.name: s for s in PARAMS[method]}
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ValueError(f"{method} has no parameter(s) {unknown}; it takes {sorted(specs)}")
    values = {name: s.validate(params.get(name, s.default)) for name, s in specs.items()}
    return {s.rule_arg: values[name] for name, s in specs.items() if s.kind == "rule"}


def step_scalars(method: str, logits: torch.Tensor, *contrast_logits: torch.Tensor, step: int | None = None, **params):
    """The per-step scalars of ``method`` for the trace, as float32 ``(batch,)`` tensors; ``{}`` for methods without.

    - ``savcd``: ``{"beta_t", "entropy_bits"}``
    - ``code``:  ``{"bd", "alpha_t"}`` (``alpha_t = 1 - bd``)
    - ``m3id``:  ``{"gamma_t", "weight"}`` (``weight = (1 - gamma_t) / gamma_t``; needs ``step=``)

    ``params`` are method-level parameters as in ``PARAMS`` (missing ones take the defaults). Pure: recomputes what
    it needs from the logits.
    """
    if method not in RULES:
        raise ValueError(f"unknown method {method!r}; known: {sorted(RULES)}")
    expected = len(CONTRAST_BRANCHES[method])
    if len(contrast_logits) != expected:
        raise ValueError(f"{method} takes {expected} contrast branch(es), got {len(contrast_logits)}")
    kw = rule_kwargs(method, params)
    if method == "savcd":
        return {"beta_t": savcd_beta(logits, kw["gamma"]), "entropy_bits": entropy_bits(logits)}
    if method == "code":
        bd = code_divergence(logits, contrast_logits[0], kw["exponent"])
        return {"bd": bd, "alpha_t": 1.0 - bd}
    if method == "m3id":
        if step is None:
            raise ValueError("m3id's scalars need step=")
        l = _logits("logits", logits)
        rows = l.shape[0]
        full = lambda v: torch.full((rows,), v, dtype=torch.float32, device=l.device)  # noqa: E731
        return {"gamma_t": full(m3id_gamma(step, kw["lam"])), "weight": full(m3id_weight(step, kw["lam"]))}
    return {}
