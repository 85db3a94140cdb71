"""Per-step combination rules of the training-free contrastive decoding methods: the pure math, nothing else.

Every rule is a small *pure* function of one decoding step's next-token logits, in the spirit of transformers'
``EpsilonLogitsWarper`` and ``ClassifierFreeGuidanceLogitsProcessor`` (``generation/logits_process.py``), written as
plain functions: no hidden state, no randomness, inputs never modified. Notation (see each docstring):

- ``l``   the logits of the *original* branch (real image + prompt), shape ``(batch, vocab)``;
- ``l'``  the logits of a *contrast* branch, same shape;
- ``p = softmax(l)``.

Conventions shared by all rules:

- Inputs may be any floating dtype (float16, bfloat16, float32, float64); everything is computed in float32 and the
  result is a new float32 ``(batch, vocab)`` tensor.
- Tokens outside the plausible set are ``-inf`` in the result. The set is computed from the original branch's raw
  logits (never from the combined ones) and must be applied *before* temperature / top-p / top-k, which the engine
  runs afterwards. The original branch's argmax always survives, so a row is never all ``-inf``.
- Invalid arguments raise ``ValueError`` with a message naming the argument and the bad value (wrong types included,
  so that callers such as the UI only need to catch one exception type). A rule's scalar parameters are checked by
  its ``@checked(name=check, ...)`` decorator, not in its body: the engine's bindings call ``rule.__wrapped__``, the
  rule unchecked, at every step, since the library's entry points check a method's parameters once. A new rule
  takes the same decorator.
- Nothing here synchronises with the device (parameters are Python numbers, validated on the host), so the rules are
  cheap to call once per generated token on a GPU.

The per-step scalars some methods compute (SAVCD's ``beta_t``, CODE's ``BD``, M3ID's ``gamma_t``) come from separate
pure companion functions (``savcd_beta``, ``code_divergence``, ``m3id_gamma``, ``m3id_weight``). Which method uses
which rule, with which parameters and contrast rows, is ``decoding.methods.REGISTRY``.

The examples share ``l = [2, 1, -1, 0]``: with ``beta = 0.1`` the cut is ``max(l) + log(0.1) = -0.303``, so the third
token (``-1``) is outside the plausible set.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "plausibility_mask",
    "apply_mask",
    "entropy_bits",
    "distribution_l2",
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
    "cad",
    "adacad",
    "adacad_weight",
    "instructive",
    "decore",
    "decore_weight",
    "distillation_cd",
    "agla",
    "pai_cfg",
    "pai_amplify",
    "sid",
    "sid_keep_tokens",
    "avisc",
    "avisc_blind_tokens",
    "vacode_choice",
    "dola_select_layer",
    "dola",
    "apc_only",
    "olm",
    "ecd",
    "dcd",
    "cd",
    "lcd",
    "lcd_weight",
    "amateur_log_probs",
    "opera_column_scores",
    "steer",
    "vista_sla",
    "memvr_entropy",
    "memvr_retrace",
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
    try:
        v = float(value)
    except OverflowError:  # an int of 309 digits or more (JSON allows it): no float holds it, so it is not finite
        raise ValueError(f"{name} must be finite, got a number beyond a float's range") from None
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


def _unit(name: str, value) -> float:
    """``value`` as a float in the closed interval ``[0, 1]``, or ValueError."""
    v = _real(name, value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {v}")
    return v


def _cut(name: str, value) -> float:
    """A plausibility cut in ``(0, 1]``."""
    return _beta(value, name)


def _tokens_so_far(name: str, value) -> int:
    return _step(value)


def checked(**checks: Callable[[str, Any], Any]) -> Callable[[Callable], Callable]:
    """Check a rule's named scalar arguments, then call it: each ``check(name, value)`` returns the value the rule
    computes with (a float, an int) or raises ValueError naming the argument. For direct callers the rule keeps its
    contract; the rule as written, which checks nothing of these, stays reachable as ``rule.__wrapped__``
    (``functools.wraps``). That is what the registry's bindings call at every step: the library's entry points have
    checked the same parameters once (``Method.resolve``), where the caller came in.

    >>> @checked(alpha=_non_negative)
    ... def scaled(logits, alpha=1.0):
    ...     return alpha * logits
    >>> scaled(torch.tensor([[1.0, 2.0]]), alpha=-1)
    Traceback (most recent call last):
    ValueError: alpha must be >= 0, got -1.0
    >>> scaled.__wrapped__(torch.tensor([[1.0, 2.0]]), alpha=-1)  # unchecked: for values checked at the edge
    tensor([[-1., -2.]])
    """

    def decorate(rule: Callable) -> Callable:
        signature = inspect.signature(rule)
        unknown = set(checks) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{rule.__name__} has no argument {', '.join(sorted(unknown))}")

        @functools.wraps(rule)
        def checked_rule(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            for name, check in checks.items():
                bound.arguments[name] = check(name, bound.arguments[name])
            return rule(*bound.args, **bound.kwargs)

        return checked_rule

    return decorate


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
        out.append(_matching("logits", ref, name, t))
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

    Source: VCD's adaptive plausibility constraint, ``DAMO-NLP-SG/VCD@d6568ff vcd_utils/vcd_sample.py`` L150, L153:
    ``cutoff = log(cd_beta) + logits.max(-1)``; ``masked_fill(logits < cutoff, -inf)``.

    Example:

    >>> plausibility_mask(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), beta=0.1)
    tensor([[ True,  True, False,  True]])
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

    Example:

    >>> entropy_bits(torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]])))
    tensor([1.7500])
    """
    l = _logits("logits", logits)
    p = torch.softmax(l, dim=-1)
    return (torch.special.entr(p).sum(dim=-1) / _LN2).clamp_min(0.0)


def distribution_l2(logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """L2 distance between the two branches' next-token distributions per row: ``||softmax(l) - softmax(l')||_2``.

    VACoDe's criterion for picking, at the first step, the augmentation whose distribution is farthest from the
    original one (then decoded with :func:`vcd`). Returns a float32 ``(batch,)`` tensor.

    Example:

    >>> distribution_l2(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    tensor([0.5638])
    """
    l, c = _branches(logits, other_logits=other_logits)
    return torch.linalg.vector_norm(torch.softmax(l, dim=-1) - torch.softmax(c, dim=-1), ord=2, dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# VCD / ICD
# ---------------------------------------------------------------------------------------------------------------------
@checked(alpha=_non_negative, beta=_cut)
def vcd(logits: torch.Tensor, contrast_logits: torch.Tensor, alpha: float = 1.0, beta: float = 0.1) -> torch.Tensor:
    r"""VCD (Leng et al., CVPR 2024): contrast with a distorted (diffusion-noised) image.

    ``out = (1 + alpha) * l - alpha * l'``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere.

    The weights sum to 1, so log-softmax inputs give the same distribution as raw logits.

    Args:
        logits: ``(batch, vocab)`` original branch.
        contrast_logits: ``(batch, vocab)`` distorted-image branch.
        alpha: contrast strength, ``>= 0`` (0 = original logits on the plausible set).
        beta: plausibility cut in ``(0, 1]``.

    Source: ``DAMO-NLP-SG/VCD@d6568ff vcd_utils/vcd_sample.py`` L150–153: ``(1+cd_alpha)*next_token_logits -
    cd_alpha*next_token_logits_cd``, masked below ``log(cd_beta) + max``. Defaults alpha 1, beta 0.1 from
    ``experiments/eval/object_hallucination_vqa_llava.py`` L117–118 (the sampler's own fallback alpha is 0.5; the POPE
    script ``cd_scripts/llava1.5_pope.bash`` uses beta 0.2).

    Example (``2l - l'`` on the plausible set):

    >>> vcd(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), alpha=1.0, beta=0.1)
    tensor([[3., 0., -inf, 0.]])
    """
    l, c = _branches(logits, contrast_logits=contrast_logits)
    return apply_mask((1.0 + alpha) * l - alpha * c, _keep_log(l, math.log(beta)))


@checked(alpha=_non_negative, beta=_cut)
def icd(logits: torch.Tensor, contrast_logits: torch.Tensor, alpha: float = 1.0, beta: float = 0.1) -> torch.Tensor:
    r"""ICD (instruction contrastive decoding): contrast with the same image and question under a "disturbance"
    system instruction. Same combination as VCD:

    ``out = (1 + alpha) * l - alpha * l'``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere.

    Source: ``p1k0pan/ICD@2fa44c5 icd_utils/icd_sample_llava.py`` L169–172 (VCD's combine and cut); defaults alpha 1,
    beta 0.1 from ``experiments/gen_scripts/icd_llava_pope.py`` L27–28.

    Example:

    >>> icd(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    tensor([[3., 0., -inf, 0.]])
    """
    return vcd.__wrapped__(logits, contrast_logits, alpha=alpha, beta=beta)


# ---------------------------------------------------------------------------------------------------------------------
# RITUAL
# ---------------------------------------------------------------------------------------------------------------------
@checked(alpha=_non_negative, beta=_cut)
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

    Source: ``sangminwoo/RITUAL@52065a6 ritual_utils/ritual_sample.py`` L171–182: ``next_token_logits +
    ritual_alpha_pos * next_token_logits_pos``, masked below ``log(ritual_beta) + max``; defaults L166–168.

    Example (``l + 3 l_T``: the second token, preferred by the transformed view, wins):

    >>> ritual(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), alpha=3.0, beta=0.1)
    tensor([[5., 7., -inf, 0.]])
    """
    l, t = _branches(logits, transformed_logits=transformed_logits)
    return apply_mask(l + alpha * t, _keep_log(l, math.log(beta)))


@checked(alpha_pos=_non_negative, alpha=_non_negative, beta=_cut)
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

    Chosen combination (the RITUAL paper reports RITUAL + VCD, but the authors' code cannot stack the two): first
    RITUAL's positive combination forms the "expert" ``l + alpha_pos * l_T``, then VCD's contrast is applied to it
    with the noised branch as the "amateur". The plausibility mask is VCD/RITUAL's, computed from the *original*
    branch only (not from the combined expert), so that the plausible set is the same as for the two methods alone.

    Weights sum to ``(1 + alpha) * (1 + alpha_pos) - alpha = 1 + alpha_pos * (1 + alpha)`` (7 with the defaults): this
    sharpens more than RITUAL alone (4). With ``alpha = 0`` it is exactly :func:`ritual`; with ``alpha_pos = 0``
    exactly :func:`vcd`.

    Source: ours (see above); its two halves are :func:`ritual` and :func:`vcd`.

    Example (``2 (l + 3 l_T) - l_noised``):

    >>> l, t = torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    >>> ritual_vcd(l, t, t, alpha_pos=3.0, alpha=1.0, beta=0.1)
    tensor([[ 9., 12., -inf,  0.]])
    """
    l, t, n = _branches(logits, transformed_logits=transformed_logits, noised_logits=noised_logits)
    combined = (1.0 + alpha) * (l + alpha_pos * t) - alpha * n
    return apply_mask(combined, _keep_log(l, math.log(beta)))


# ---------------------------------------------------------------------------------------------------------------------
# SAVCD (self-augmented VCD)
# ---------------------------------------------------------------------------------------------------------------------
@checked(gamma=_non_negative)
def savcd_beta(logits: torch.Tensor, gamma: float = 0.5) -> torch.Tensor:
    r"""SAVCD's entropy-adaptive plausibility threshold per row.

    ``beta_t = sigmoid(-gamma * H)``,  ``H = -sum_i p_i log2 p_i`` (bits) of the *original* branch.

    A confident step (``H -> 0``) gives ``beta_t -> 0.5`` (few candidates kept); a flat step gives a small ``beta_t``
    (many kept). ``gamma = 0`` gives ``beta_t = 0.5`` always. Returns a float32 ``(batch,)`` tensor in ``(0, 0.5]``
    (it can underflow to 0 for huge ``gamma * H``; :func:`savcd` works with ``log(beta_t)`` and is not affected).

    Source: ``eunwooim/selfaug@ff3c77c src/utils/utils.py`` L58–72: ``sigmoid(gamma * sum(p log2 p))``
    (``= sigmoid(-gamma H)``); gamma (``cd_tau``) 0.5 in ``src/script/*.bash`` (the .py default ``None`` turns the
    adaptive cut off).

    Example (``H = 1.367`` bits, ``sigmoid(-0.5 H)``):

    >>> savcd_beta(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), gamma=0.5)
    tensor([0.3355])
    """
    return torch.sigmoid(-gamma * entropy_bits(logits))


@checked(alpha=_non_negative, gamma=_non_negative)
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

    Source: ``eunwooim/selfaug@ff3c77c src/utils/vcd_sample.py`` L154–168 (VCD's combine with ``cd_beta`` from
    :func:`savcd_beta`); alpha 1 from ``src/eval/pope.py`` L91.

    Example (``beta_t = 0.3355`` cuts deeper than VCD's 0.1: the fourth token goes too):

    >>> savcd(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), alpha=1.0, gamma=0.5)
    tensor([[3., 0., -inf, -inf]])
    """
    l, c = _branches(logits, contrast_logits=contrast_logits)
    log_beta_t = F.logsigmoid(-gamma * entropy_bits(l))
    return apply_mask((1.0 + alpha) * l - alpha * c, _keep_log(l, log_beta_t))


# ---------------------------------------------------------------------------------------------------------------------
# CODE
# ---------------------------------------------------------------------------------------------------------------------
def _bounded_divergence(l: torch.Tensor, d: torch.Tensor, exponent: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(BD per row, p_v), both float64 (float32 on Apple's MPS, which has no float64), for validated logits.

    float64 because a confident step collapses in float32: when both branches give the top token 1 - 1e-9, float32
    rounds both to 1, the top token's |p_v - p_d| (the term that dominates BD) becomes 0 and BD ~1e-18 instead of
    ~1e-6, so the cut ``p_v >= BD * max(p_v)`` keeps the whole vocabulary where the rule keeps one token.
    """
    wide = _wide(l.device)
    p_v = torch.softmax(l.to(wide), dim=-1)
    p_d = torch.softmax(d.to(wide), dim=-1)
    # log2(x + 1) via log1p for accuracy at small x. Each term is <= 1 and sum(p_v + p_d) = 2, so BD <= 1; the clamp
    # only removes rounding excursions (BD slightly > 1 would mask the argmax).
    terms = torch.log1p((p_v - p_d).abs().pow(exponent)) / _LN2 * (p_v + p_d)
    bd = (0.5 * terms.sum(dim=-1)).clamp(0.0, 1.0)
    return bd, p_v


@checked(exponent=_positive)
def code_divergence(
    logits: torch.Tensor, description_logits: torch.Tensor, exponent: float = 0.7
) -> torch.Tensor:
    r"""CODE's bounded divergence between the image branch and the description branch, per row.

    ``BD = 0.5 * sum_i log2(|p_v,i - p_d,i|^a + 1) * (p_v,i + p_d,i)``  in ``[0, 1]``, with ``p_v = softmax(l)``,
    ``p_d = softmax(l_d)`` and ``a = exponent``. CODE's per-step weight is ``alpha_t = 1 - BD``.

    Returns a float32 ``(batch,)`` tensor; identical branches give exactly 0.

    Source: ``IVY-LVLM/CODE@31adf82 models/contrastive_decoding/cd_utils.py`` L12 (``kl_d``); exponent ``cd_alpha`` 0.7
    from ``evaluate.py`` L126–128 (the function's own fallback is 0.2).

    Example:

    >>> code_divergence(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    tensor([0.5332])
    """
    l, d = _branches(logits, description_logits=description_logits)
    return _bounded_divergence(l, d, exponent)[0].to(torch.float32)


@checked(exponent=_positive)
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

    Source: ``IVY-LVLM/CODE@31adf82 models/contrastive_decoding/cd_utils.py`` L12–20: ``kld_alpha = 1 - kl_d``,
    ``cutoff = kl_d * p_v.max()``, ``(1 + kld_alpha) * l - kld_alpha * l_cd`` masked where ``p_v < cutoff``.

    Example (``BD = 0.533``, so ``alpha_t = 0.467`` and only tokens with ``p >= 0.533 max(p)`` stay):

    >>> code(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), exponent=0.7)
    tensor([[2.4668,   -inf,   -inf,   -inf]])
    """
    l, d = _branches(logits, description_logits=description_logits)
    bd, p_v = _bounded_divergence(l, d, exponent)
    alpha_t = (1.0 - bd).to(torch.float32).unsqueeze(-1)
    combined = (1.0 + alpha_t) * l - alpha_t * d
    keep = (p_v >= bd.unsqueeze(-1) * p_v.max(dim=-1, keepdim=True).values) & (l > float("-inf"))
    return apply_mask(combined, keep)


# ---------------------------------------------------------------------------------------------------------------------
# M3ID
# ---------------------------------------------------------------------------------------------------------------------
@checked(step=_tokens_so_far, lam=_non_negative)
def m3id_gamma(step: int, lam: float = 0.02) -> float:
    r"""M3ID's visual-information weight ``gamma_t = exp(-lam * t)`` with ``t = step`` the number of tokens generated
    so far (``gamma_0 = 1``: no correction on the first token).

    Source: Favero et al., CVPR 2024 (no official code); as re-implemented in
    ``sangminwoo/RITUAL@52065a6 ritual_utils/ritual_sample.py`` L178 (``exp(-0.02 * t)``, ``t`` from 0).

    Example:

    >>> round(m3id_gamma(10, lam=0.02), 4)
    0.8187
    """
    return math.exp(-lam * step)


@checked(step=_tokens_so_far, lam=_non_negative)
def m3id_weight(step: int, lam: float = 0.02) -> float:
    r"""M3ID's contrast weight ``(1 - gamma_t) / gamma_t = exp(lam * t) - 1`` (0 at ``t = 0``; ``inf`` on overflow).

    Example:

    >>> round(m3id_weight(10, lam=0.02), 4)
    0.2214
    """
    x = lam * step
    return math.expm1(x) if x < 700.0 else math.inf


@checked(step=_tokens_so_far, lam=_non_negative, beta=_cut)
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

    Source: Favero et al., CVPR 2024 (no official code); as re-implemented in
    ``sangminwoo/RITUAL@52065a6 ritual_utils/ritual_sample.py`` L178–180 with ``t`` counted from 0 (AvisC's
    re-implementation counts from 1, giving a weight of 0.02 on the first token).

    Example (at ``t = 10`` the weight is ``e^0.2 - 1 = 0.2214``):

    >>> m3id(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), step=10, lam=0.02, beta=0.1)
    tensor([[2.2214, 0.7786,   -inf, 0.0000]])
    """
    l, u = _branches(logits, text_only_logits=text_only_logits)
    weight = m3id_weight.__wrapped__(step, lam)
    if not weight <= _FLOAT32_MAX:
        raise ValueError(
            f"lam * step = {lam * step:g} is too large: the M3ID weight (1 - gamma_t) / gamma_t overflows float32"
        )
    return apply_mask(l + (l - u) * weight, _keep_log(l, math.log(beta)))


# =====================================================================================================================
# Methods, part 3: CAD, AdaCAD, Instructive Decoding
#
# Snapshots read (repo@commit): xhan77/context-aware-decoding@1281d7f, HanNight/AdaCAD@d4519ec,
# joonkeekim/Instructive-Decoding@56c0348. Line numbers below refer to those snapshots.
# =====================================================================================================================
def _cut_or_none(l: torch.Tensor, combined: torch.Tensor, beta) -> torch.Tensor:
    """``combined`` under the plausibility cut of ``l`` at ``beta`` in ``[0, 1]``; 0 = no cut (``p >= 0`` keeps all)."""
    return combined if beta == 0.0 else apply_mask(combined, _keep_log(l, math.log(beta)))


@checked(alpha=_non_negative, beta=_unit)
def cad(
    logits: torch.Tensor, context_free_logits: torch.Tensor, alpha: float = 1.0, beta: float = 0.0
) -> torch.Tensor:
    r"""CAD, context-aware decoding (Shi et al., NAACL 2024), with the image as the context: amplify what the image
    adds over the same prompt without it.

    ``out = (1 + alpha) * l - alpha * l_u``   on raw logits; with ``beta > 0`` only on
    ``{i : l_i >= log(beta) + max(l)}`` (``-inf`` elsewhere). ``beta = 0`` (default): no cut, as released.

    Args:
        logits: ``(batch, vocab)`` original branch (image + prompt).
        context_free_logits: ``(batch, vocab)`` the same prompt without the image (M3ID's and PAI's row).
        alpha: contrast strength ``>= 0``. The release's scripts run 1 for knowledge conflicts (``exp_nqswap.sh``,
            weights ``2_-1``, greedy) and 0.5 for summaries (``exp_cnndm.sh``, ``1.5_-0.5``).
        beta: plausibility cut in ``[0, 1]``; 0 = none (the release has none).

    Source: ``xhan77/context-aware-decoding@1281d7f group_decode_fileio.py`` L105 (raw ``outputs.logits``), L112
    (``assigned_weight * score``: 1+alpha and -alpha from the input jsonl), L113 (``all_reduce`` sums the two
    processes' rows). Not reproduced: each branch's top-p filter at ``filter_p = 1.0`` (L219), which in float32 still
    masks a far tail (p below ~3e-9 on a 32k vocabulary).

    Example (``alpha = 0.5``: ``1.5 l - 0.5 l_u``):

    >>> cad(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 2.0, 0.0]]), alpha=0.5)
    tensor([[ 3.0000,  1.0000, -1.0000, -1.5000]])
    """
    l, u = _branches(logits, context_free_logits=context_free_logits)
    return _cut_or_none(l, (1.0 + alpha) * l - alpha * u, beta)


def amateur_log_probs(amateur_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""An amateur model's next-token log-probabilities ``log_softmax(l_a / temperature)`` on the expert's vocabulary,
    an id the amateur lacks (``-inf`` in ``amateur_logits``: the engine pads a smaller vocabulary so) given log-prob 0.

    Log-prob 0 for the ids only the expert has is LCD's padding as released (``avshalomman/lcd@30f8bbf lcd.py``
    L80–84: zeros appended to the language model's log-probs): a contrast then never favours such an id.

    >>> amateur_log_probs(torch.tensor([[0.0, 0.0, float("-inf")]]))
    tensor([[-0.6931, -0.6931,  0.0000]])
    """
    a = torch.log_softmax(_logits("amateur_logits", amateur_logits) / temperature, dim=-1)
    return torch.where(torch.isneginf(a), torch.zeros_like(a), a)


@checked(alpha=_non_negative, amateur_temperature=_positive, beta=_unit)
def cd(logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float = 1.0, amateur_temperature: float = 0.5,
       beta: float = 0.1) -> torch.Tensor:
    r"""Contrastive Decoding (Li et al., ACL 2023): the expert's log-probabilities minus a weaker amateur model's,
    over the tokens the expert itself finds plausible (``V_head``).

    ``f = log_softmax(l)``, ``a = log_softmax(l_a / amateur_temperature)``,
    ``out = f - alpha * a`` on ``V_head = {i : f_i >= max f + log(beta)}`` (``-inf`` elsewhere); ``beta = 0``: no cut.

    The release subtracts the amateur's tempered raw logits ``l_a / τ_a`` (its beam search their log-softmax): a
    constant per row apart, the same argmax and the same softmax. Greedy CD as released has **no** ``V_head``
    (``relative_top`` is None for greedy, 0.1 for sampling and beam): the registry passes ``beta = 0`` there.

    Args:
        logits: ``(batch, vocab)`` the expert (the LVLM: image + prompt).
        amateur_logits: ``(batch, vocab)`` the amateur on the expert's vocabulary (ids it lacks ``-inf``: log-prob 0,
            :func:`amateur_log_probs`).
        alpha: the amateur's weight (``st_coef``) ``>= 0``.
        amateur_temperature: ``τ_a > 0`` (``student_temperature``).
        beta: ``relative_top`` in ``[0, 1]``; 0 = no cut.

    Source: ``XiangLi1999/ContrastiveDecoding@170e914 transformers/src/transformers/generation_utils.py`` L1962–1963
    (greedy), L2244–2245 (sampling), L1340–1345 / L1391 (``relative_top`` None for greedy, 0.1 for sampling),
    ``generation_logits_process.py`` L212–252 (``EntrPLogitsWarper``: ``V_head`` on the log-softmax). Defaults: the
    README command and ``submit_decoding.py`` L18–26 (``st_coef`` 1.0, ``student_temperature`` 0.5); the ``.py``
    defaults (``run_generation.py`` L417, L442) are 0.5 and 1.0.

    Example (the spec's vector: ``f = [-0.5087, -1.0087, -3.5087, -5.5087]``; the expert's 0 becomes 1):

    >>> cd(torch.tensor([[3.0, 2.5, 0.0, -2.0]]), torch.tensor([[3.0, 1.0, 0.0, 0.0]]))
    tensor([[-0.4857,  3.0143,    -inf,    -inf]])
    """
    l, a = _branches(logits, amateur_logits=amateur_logits)
    f = torch.log_softmax(l, dim=-1)
    return _cut_or_none(f, f - alpha * amateur_log_probs(a, amateur_temperature), beta)


def lcd_weight(amateur_logits: torch.Tensor, alpha: float = 2.0, alpha_cap: float = 0.0) -> tuple[torch.Tensor, ...]:
    r"""LCD's per-step weight ``alpha_t = alpha / H`` and the language model's entropy ``H = -Σ e^u u`` (nats,
    ``u = log_softmax(l_llm)`` over the ids it has), each ``(batch,)``: a confident language prior is subtracted
    harder. Unbounded as released (``H -> 0`` gives ``alpha_t -> ∞``); ``alpha_cap > 0`` caps it (ours, not the
    release's); ``H`` is floored at 1e-12 so that a one-hot prior gives a huge, not an infinite, weight.

    Source: ``avshalomman/lcd@30f8bbf lcd.py`` L67–76.

    >>> lcd_weight(torch.tensor([[3.0, 1.0, 0.0, 0.0]]))
    (tensor([2.9758]), tensor([0.6721]))
    >>> lcd_weight(torch.tensor([[3.0, 1.0, 0.0, 0.0]]), alpha_cap=2.5)[0]
    tensor([2.5000])
    """
    u = torch.log_softmax(_logits("amateur_logits", amateur_logits), dim=-1)
    entropy = -(u.exp() * torch.where(torch.isneginf(u), torch.zeros_like(u), u)).sum(dim=-1)
    weight = alpha / entropy.clamp_min(1e-12)
    return (weight.clamp_max(alpha_cap) if alpha_cap else weight), entropy


@checked(alpha=_non_negative, beta=_cut, alpha_cap=_non_negative)
def lcd(logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float = 2.0, beta: float = 0.1,
        alpha_cap: float = 0.0) -> torch.Tensor:
    r"""LCD, Language Contrastive Decoding (Manevich & Tsarfaty, Findings ACL 2024): the LVLM minus its own language
    model fed the same text without the image, weighted by that language model's confidence.

    ``s = log_softmax(l)``, ``u`` the language model's log-probs (:func:`amateur_log_probs`: 0 for ids it lacks),
    ``alpha_t = alpha / H(u)`` (:func:`lcd_weight`), ``out = log_softmax(mask((1 + alpha_t) s - alpha_t u))`` with
    the plausibility cut ``s >= max s + log(beta)``.

    Source: ``avshalomman/lcd@30f8bbf lcd.py`` L63–93 (``CDProcessorWithLM.__call__``); defaults α 2.0, β 0.1 (L19–22,
    ``create_cd_llava_model`` L164–175).

    Example (the spec's vector: H = 0.672078, alpha_t = 2.975843):

    >>> lcd(torch.tensor([[3.0, 2.5, 0.0, -2.0]]), torch.tensor([[3.0, 1.0, 0.0, 0.0]]))
    tensor([[-3.9826, -0.0188,    -inf,    -inf]])
    """
    l, a = _branches(logits, amateur_logits=amateur_logits)
    s = torch.log_softmax(l, dim=-1)
    weight = lcd_weight(a, alpha, alpha_cap)[0].unsqueeze(-1)
    combined = apply_mask((1.0 + weight) * s - weight * amateur_log_probs(a), _keep_log(s, math.log(beta)))
    return torch.log_softmax(combined, dim=-1)


@checked(threshold=_non_negative)
def adacad_weight(logits: torch.Tensor, context_free_logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    r"""AdaCAD's per-step contrast weight: the Jensen–Shannon divergence of the two branches' next-token
    distributions (natural log, so in ``[0, ln 2]``), floored at ``threshold``; one value per row.

    ``p = softmax(l)``, ``q = softmax(l_u)``, ``M = (p + q) / 2``,
    ``alpha_t = max(0.5 * (KL(p || M) + KL(q || M)), threshold)``.

    As released, a row whose ``p + q`` has a zero takes ``log M`` clamped at 1e-9, and ``p`` (``q``) with a zero is
    clamped at 1e-9 before the KL (both per row here; the release runs one row). Not as released: a row whose ``M``
    underflows to 0 where ``p + q`` does not is clamped too (the release's weight is infinite there).

    Source: ``HanNight/AdaCAD@d4519ec group_decode_fileio_adacad.py`` L38–50 (``get_jsd``: ``F.kl_div(m, p,
    reduction='batchmean')``), L136 (on the raw logits of both branches, before any filter), L137–138 (the floor).
    ``--threshold`` 0.0 (L262; ``run_qa.sh``); ``run_summ.sh`` uses 0.3.

    Example (JSD 0.239350; with ``l_u = l`` it is 0, and the floor then decides):

    >>> l, u = torch.tensor([[2.0, 1.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 2.0, 0.0]])
    >>> adacad_weight(l, u), adacad_weight(l, l, threshold=0.3)
    (tensor([0.2393]), tensor([0.3000]))
    """
    l, u = _branches(logits, context_free_logits=context_free_logits)
    p, q = torch.softmax(l, dim=-1), torch.softmax(u, dim=-1)
    tiny = 1e-9
    m = 0.5 * (p + q)
    # The release clamps M where p + q has a zero; here also where M underflows to 0 with p + q > 0 (logits tens
    # apart), where the release's weight is infinite and its logits NaN.
    log_m = torch.where((m == 0).any(-1, keepdim=True), m.clamp_min(tiny), m).log()
    p = torch.where((p <= 0).any(-1, keepdim=True), p.clamp_min(tiny), p)
    q = torch.where((q <= 0).any(-1, keepdim=True), q.clamp_min(tiny), q)
    kl_p = F.kl_div(log_m, p, reduction="none").sum(-1)
    kl_q = F.kl_div(log_m, q, reduction="none").sum(-1)
    return (0.5 * (kl_p + kl_q)).clamp_min(threshold)


@checked(threshold=_non_negative, beta=_unit)
def adacad(
    logits: torch.Tensor, context_free_logits: torch.Tensor, threshold: float = 0.0, beta: float = 0.0
) -> torch.Tensor:
    r"""AdaCAD (Wang et al., arXiv 2409.07394): CAD with a weight of its own at every step, the Jensen–Shannon
    divergence of the two branches (:func:`adacad_weight`): large where the image changes the prediction, 0 where it
    changes nothing.

    ``alpha_t = max(JSD(softmax l, softmax l_u), threshold)``, ``out = (1 + alpha_t) * l - alpha_t * l_u`` on raw
    logits; with ``beta > 0`` only on the plausible set of ``l`` (the release has no cut: ``beta = 0``).

    Source: ``HanNight/AdaCAD@d4519ec group_decode_fileio_adacad.py`` L136–145 (the jsonl weights' values are
    ignored, only their signs pick the branch).

    Example (``alpha_t = 0.239350``; with ``threshold = 0.3`` it is 0.3):

    >>> l, u = torch.tensor([[2.0, 1.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 2.0, 0.0]])
    >>> adacad(l, u)
    tensor([[ 2.4787,  1.0000, -0.4787, -1.2393]])
    >>> adacad(l, u, threshold=0.3)
    tensor([[ 2.6000,  1.0000, -0.6000, -1.3000]])
    """
    l, u = _branches(logits, context_free_logits=context_free_logits)
    alpha = adacad_weight.__wrapped__(l, u, threshold).unsqueeze(-1)
    return cad.__wrapped__(l, u, alpha=alpha, beta=beta)


@checked(eps=_real)
def instructive(logits: torch.Tensor, noisy_logits: torch.Tensor, eps: float = -0.3) -> torch.Tensor:
    r"""Instructive Decoding (Kim, Kim, Lee, Yun, ICLR 2024): subtract a share of the logits the model gives under a
    deliberately noisy instruction (here: the question distorted or replaced, the image kept).

    ``out = l + eps * l_n``   on raw logits, **no** plausibility cut; ``eps`` carries the sign (-0.3: subtract).

    The weights sum to ``1 + eps`` (0.7 at the default): for sampling that is a temperature of ``1 / (1 + eps)``
    (about 1.43); greedy picks are unaffected. For greedy decoding the rule equals ICD's combination
    ``(1+a)·l − a·l_n`` with ``a = -eps / (1 + eps)`` (0.4286) and no cut.

    Args:
        logits: ``(batch, vocab)`` original branch (image + question).
        noisy_logits: ``(batch, vocab)`` the same image under the noisy instruction.
        eps: any finite number; negative contrasts, 0 is plain decoding, positive adds the noisy branch.

    Source: ``joonkeekim/Instructive-Decoding@56c0348 src/base_generator.py`` L211–216 (``inst_logits +
    self.args.eps * non_inst_logits``, the same token then fed to both halves); ``--eps -0.3`` in
    ``scripts/run_sni.sh`` and the README's recommendation (the ``.py`` default 0, ``src/run_eval.py`` L91, turns it
    off).

    Example (the noisy branch's favourite, token 1, is pushed down; the argmax is unchanged):

    >>> instructive(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0, 0.0]]))
    tensor([[ 2.0000,  0.4000,  0.0000, -1.0000]])
    """
    l, n = _branches(logits, noisy_logits=noisy_logits)
    return l + eps * n


@checked(alpha_cap=_non_negative)
def decore_weight(logits: torch.Tensor, alpha_cap: float = 0.0) -> torch.Tensor:
    r"""DeCoRe's per-step contrast weight: the entropy (nats) of the original branch's next-token distribution,
    capped at ``alpha_cap`` where that is not 0; one value per row.

    ``alpha_t = H = -Σ p·log(p + 1e-12)``, ``p = softmax(l)``; ``min(alpha_t, alpha_cap)`` when ``alpha_cap > 0``
    (the release's ``if self.alpha_cap:``, so a cap of 0 is none, as its config's ``alpha_cap: null``). Not offered:
    ``scale_alpha`` (``H / ln|V|``, off in the release's config).

    Source: ``aryopg/DeCoRe@d1fa5a9 src/models/decore_entropy.py`` L76–83 (``_calculate_entropy``), L136–140 (the
    cap); ``configs/decoder/decore_entropy.yaml`` (``alpha_cap: null``, ``scale_alpha: False``).

    Example (H = 1.374964; capped at 1):

    >>> l = torch.tensor([[1.0, 0.8, 0.7, 0.6]])
    >>> decore_weight(l), decore_weight(l, alpha_cap=1.0)
    (tensor([1.3750]), tensor([1.]))
    """
    p = torch.softmax(_logits("logits", logits), dim=-1)
    entropy = -(p * torch.log(p + 1e-12)).sum(dim=-1)
    return entropy.clamp_max(alpha_cap) if alpha_cap else entropy


def _optional_non_negative(name: str, value):
    return None if value is None else _non_negative(name, value)


@checked(alpha=_optional_non_negative, alpha_cap=_non_negative)
def decore(
    logits: torch.Tensor, masked_logits: torch.Tensor, alpha: float | None = None, alpha_cap: float = 0.0
) -> torch.Tensor:
    r"""DeCoRe (Gema et al., arXiv 2410.18860): contrast the model with itself under masked attention heads,
    weighted by the model's own uncertainty.

    ``out = (1 + alpha_t) * s - alpha_t * s_m``   on **log-softmax** rows ``s = log_softmax(l)``, ``s_m`` of the
    masked row; no plausibility cut; decoded by argmax as released. ``alpha_t`` is :func:`decore_weight` (the
    original branch's entropy, ``decore_entropy``) when ``alpha`` is None, else the fixed ``alpha``
    (``decore_vanilla``: 0.5). The weights sum to 1, so the raw-logit form ``(1 + a)·l − a·l_m`` differs by a
    constant per row: the same distribution (MaskCD's formula, ``softmax((1+α)·l − α·l_m)``, is this rule too).

    Args:
        logits: ``(batch, vocab)`` original branch.
        masked_logits: ``(batch, vocab)`` the same prompt with the heads masked (``decoding.attention.HeadMask``).
        alpha: None (entropy weight) or a fixed weight ``>= 0`` (the registry may pass a ``(batch, 1)`` tensor
            through ``__wrapped__``).
        alpha_cap: the entropy weight's cap (0 = none, as released).

    Source: ``aryopg/DeCoRe@d1fa5a9 src/models/decore_entropy.py`` L142–151; ``src/models/decore_vanilla.py``
    L96–105 with ``alpha: 0.5`` (``configs/decoder/decore_vanilla.yaml``).

    Example (the spec's vector: H = 1.374964; the masked row's favourite, token 0, loses to token 1):

    >>> l, m = torch.tensor([[1.0, 0.8, 0.7, 0.6]]), torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    >>> decore(l, m)
    tensor([[-2.3160, -0.0410, -0.2785, -0.5160]])
    >>> decore(l, m, alpha=0.5).argmax(-1)
    tensor([1])
    """
    l, m = _branches(logits, masked_logits=masked_logits)
    weight = decore_weight.__wrapped__(l, alpha_cap).unsqueeze(-1) if alpha is None else alpha
    return (1.0 + weight) * torch.log_softmax(l, dim=-1) - weight * torch.log_softmax(m, dim=-1)


# =====================================================================================================================
# Methods, part 2: PAI, SID, AvisC, VACoDe, DoLa, the Mirage controls (APC-only, OLM), OPERA's scoring
#
# Snapshots read (repo@commit): LALBJ/PAI@9bbd8bd, huofushuo/SID@127dd41, sangminwoo/AvisC@772eba4,
# eunwooim/selfaug@ff3c77c (VACoDe re-implementation; no code of the VACoDe authors is known), voidism/DoLa@805230e,
# ustc-hyin/cd_rethink@4303279, shikiw/OPERA@61426ef. Line numbers below refer to those snapshots.
# =====================================================================================================================
_OPERA_EPS = 1e-7  # OPERA's constant factor of the column score (utils.py L3427)


def _integer(name: str, value, minimum: int = 0) -> int:
    """``value`` as a Python int ``>= minimum`` (a one-element integer tensor is accepted), or ValueError."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a single integer, got a tensor {value!r}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _positive_integer(name: str, value) -> int:
    return _integer(name, value, minimum=1)


def _float_tensor(name: str, t, dims: str, min_dim: int, max_dim: int | None = None) -> torch.Tensor:
    """Validate a floating, non-empty tensor with ``min_dim <= t.dim() <= max_dim``; return it as float32.

    ``dims`` names the expected layout for the message (e.g. ``"(layers, image tokens)"``). As :func:`_logits`, the
    result may be the input object itself: never modify it.
    """
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < min_dim or (max_dim is not None and t.dim() > max_dim):
        raise ValueError(f"{name} must have shape {dims}, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    return t.to(torch.float32)


def _matching(ref_name: str, ref: torch.Tensor, name: str, t) -> torch.Tensor:
    """Validate ``t`` as ``(batch, vocab)`` logits of the same shape and device as ``ref``; return it as float32."""
    c = _logits(name, t)
    if c.shape != ref.shape:
        raise ValueError(
            f"shape mismatch: {ref_name} has shape {tuple(ref.shape)} but {name} has shape {tuple(c.shape)}"
        )
    if c.device != ref.device:
        raise ValueError(f"device mismatch: {ref_name} on {ref.device} but {name} on {c.device}")
    return c


def _wide(device: torch.device) -> torch.dtype:
    """float64 for accuracy, except on Apple's MPS (no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


# ---------------------------------------------------------------------------------------------------------------------
# PAI (Paying More Attention to Image)
# ---------------------------------------------------------------------------------------------------------------------
@checked(gamma=_non_negative, beta=_cut)
def pai_cfg(
    logits: torch.Tensor, text_only_logits: torch.Tensor, gamma: float = 1.1, beta: float = 0.1
) -> torch.Tensor:
    r"""PAI's classifier-free-guidance term (Liu, Zheng, Chen, ECCV 2024): push away from the text-only branch.

    ``s = log_softmax(l)``, ``u = log_softmax(l_u)``,  ``out = gamma * (s - u) + u``   on
    ``{i : s_i >= log(beta) + max(s)}``, ``-inf`` elsewhere.

    The weights ``gamma`` and ``1 - gamma`` sum to 1, so raw logits would give the same distribution; the output is
    in log-probability units as the released processor's. The plausible set is computed on ``s`` (as CFG.py L53
    does), which is the raw-logit set of :func:`plausibility_mask` up to float rounding at the boundary.

    ``gamma == 1`` returns ``s`` itself, **without** the cut, as the released processor does (CFG.py L30-31:
    ``if guidance_scale == 1: return scores``): gamma 1 means "CFG off".

    Args:
        logits: ``(batch, vocab)`` original branch (real image + prompt; in PAI the attention-amplified model).
        text_only_logits: ``(batch, vocab)`` branch of the prompt with the image placeholder removed (the M3ID row).
        gamma: guidance scale, ``>= 0`` (``> 1`` contrasts; the paper's ``gamma``).
        beta: plausibility cut in ``(0, 1]`` (hard-coded 0.1 in the release).

    Source: ``LALBJ/PAI@9bbd8bd CFG.py`` L28-58: ``scores = log_softmax(scores)`` (L29), ``unconditional_logits =
    log_softmax(out.logits[:, -1])`` (L51), ``cutoff = log(0.1) + scores.max()`` (L53), ``guidance_scale * (scores -
    unconditional_logits) + unconditional_logits`` (L54-56), ``masked_fill(scores < cutoff, -inf)`` (L57). Defaults:
    the README commands (L65, L68, L82) pass ``--gamma 1.1``; the ``.py`` default is 2 (``pope_eval.py`` L53,
    ``chair_eval.py`` identical) — 1.1 is used here.

    Traps: with ``--use-cfg`` the release gives the *first* generated token no attention amplification (the edit is
    gated ``use_attn and not use_cfg``, attention.py L90, and the flag is reset only after the text-only prefill,
    CFG.py L48-49), so a POPE Yes/No answer comes from CFG alone. In HF 4.37 the processor runs after the built-in
    processors and before temperature / top-k / top-p, as here.

    Example (``1.1 s - 0.1 u``; ``s = l - 2.4402``, ``u = l_u - 2.4938``; the third token is outside the cut):

    >>> pai_cfg(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), gamma=1.1, beta=0.1)
    tensor([[-0.3348, -1.5348,    -inf, -2.4348]])
    """
    l, lu = _branches(logits, text_only_logits=text_only_logits)
    s = torch.log_softmax(l, dim=-1)
    if gamma == 1.0:
        return s
    u = torch.log_softmax(lu, dim=-1)
    return apply_mask(gamma * (s - u) + u, _keep_log(s, math.log(beta)))


@checked(alpha=_non_negative)
def pai_amplify(scores: torch.Tensor, image_mask: torch.Tensor, alpha: float = 0.2) -> torch.Tensor:
    r"""PAI's attention amplification on pre-softmax scores: image columns raised by ``alpha * |score|``.

    ``out_j = a_j + alpha * |a_j|``  where ``image_mask_j`` (image key column), ``out_j = a_j`` elsewhere.

    A positive score is multiplied by ``1 + alpha``, a negative one by ``1 - alpha``: image scores always go up.
    ``-inf`` (masked) scores stay ``-inf`` (the formula would give ``-inf + inf = NaN`` there); the release clamps
    masked scores at ``finfo.min`` first (attention.py L72-75), which the edit leaves hugely negative too.

    Args:
        scores: ``(..., keys)`` pre-softmax attention scores ``q K^T / sqrt(d)`` (+ additive mask) of the query rows
            to edit, any floating dtype. PAI edits only the *last* query row (``scores[..., -1, :]`` of a
            ``(batch, heads, queries, keys)`` tensor), all heads, in decoder layers 2..31.
        image_mask: bool tensor, True on the image key columns; shape ``(keys,)`` or any shape that broadcasts to
            ``scores.shape`` without enlarging it (e.g. ``(batch, 1, keys)`` for per-row image spans).
        alpha: amplification, ``>= 0`` (0 = unchanged).

    Returns:
        a new float32 tensor of ``scores``' shape (cast it back to the model dtype if needed; the release runs the
        softmax in float32, attention.py L97).

    Source: ``LALBJ/PAI@9bbd8bd attention.py`` L90-94: ``attn_weights[:, :, -1, img_start:img_end] =
    attn_weights[...].abs() * alpha + attn_weights[...]``; layers ``[start_layer, end_layer) = [2, 32)`` set by
    ``llama_modify`` (L120-128); alpha 0.2 (``pope_eval.py`` L50 and the README commands).

    Example (columns 1..3 are image tokens; ``-2 + 0.2*2 = -1.6``, ``0.5 * 1.2 = 0.6``):

    >>> pai_amplify(torch.tensor([[1.0, -2.0, float("-inf"), 0.5]]), torch.tensor([False, True, True, True]))
    tensor([[ 1.0000, -1.6000,    -inf,  0.6000]])
    """
    a = _float_tensor("scores", scores, "(..., keys)", 1)
    if not isinstance(image_mask, torch.Tensor):
        raise ValueError(f"image_mask must be a torch.Tensor, got {type(image_mask).__name__}")
    if image_mask.dtype != torch.bool:
        raise ValueError(f"image_mask must be a bool tensor, got {image_mask.dtype}")
    if image_mask.dim() == 0 or image_mask.dim() > a.dim() or image_mask.shape[-1] != a.shape[-1]:
        raise ValueError(
            f"image_mask must have shape (keys,) = ({a.shape[-1]},) or broadcast to scores' shape {tuple(a.shape)}, "
            f"got {tuple(image_mask.shape)}"
        )
    try:
        broadcast = torch.broadcast_shapes(image_mask.shape, a.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != a.shape:
        raise ValueError(
            f"image_mask of shape {tuple(image_mask.shape)} does not broadcast to scores' shape {tuple(a.shape)}"
        )
    if image_mask.device != a.device:
        raise ValueError(f"device mismatch: scores on {a.device} but image_mask on {image_mask.device}")
    edit = image_mask & (a != float("-inf"))
    return torch.where(edit, a + alpha * a.abs(), a)


# ---------------------------------------------------------------------------------------------------------------------
# SID (Self-Introspective Decoding)
# ---------------------------------------------------------------------------------------------------------------------
@checked(alpha=_non_negative, beta=_cut)
def sid(logits: torch.Tensor, contrast_logits: torch.Tensor, alpha: float = 0.5, beta: float = 0.1) -> torch.Tensor:
    r"""SID (Huo et al., ICLR 2025): contrast with the same image and prompt whose later layers see only the *least*
    attended image tokens (CT²S, see :func:`sid_keep_tokens`). VCD's combination:

    ``out = (1 + alpha) * l - alpha * l_sid``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere.

    Args:
        logits: ``(batch, vocab)`` original branch.
        contrast_logits: ``(batch, vocab)`` SID row (same image, same prompt, same length, image columns masked from
            layer 2 on except the kept tokens).
        alpha: contrast strength ``>= 0``; beta: plausibility cut in ``(0, 1]``.

    Source: ``huofushuo/SID@127dd41 vcd_sample.py`` L168-169 (``cd_alpha`` or **0.5**, ``cd_beta`` or 0.1),
    L177-184 (cut and ``(1+cd_alpha)*next_token_logits - cd_alpha*next_token_logits_cd``). Defaults: ``pope_eval.py``
    L106-107 parse ``--cd-alpha 1 --cd-beta 0.1`` but never pass them on (L329-330 commented out), so the released
    runs use the sampler's fallbacks alpha 0.5, beta 0.1 — alpha 0.5 here.

    Trap: the released greedy path (``--sample-greedy``, default True) takes ``argmax(diffs)`` of the *unmasked*
    difference (L190-191), i.e. it skips the plausibility cut; this rule applies it (the sampling path's form, L184).
    For "as released" greedy take the argmax of ``(1 + alpha) * l - alpha * l_sid`` directly.

    Example (``1.5 l - 0.5 l'``):

    >>> sid(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    tensor([[2.5000, 0.5000,   -inf, 0.0000]])
    """
    return vcd.__wrapped__(logits, contrast_logits, alpha=alpha, beta=beta)


@checked(k=_integer)
def sid_keep_tokens(image_attention: torch.Tensor, k: int = 100) -> torch.Tensor:
    r"""SID's CT²S selection: the indices of the ``k`` *least* attended image tokens, which the SID row keeps visible.

    ``keep = the k smallest entries of a``, ``a`` = layer ``K-1``'s attention probabilities (mean over heads) of the
    last query row over the image columns (``K = 2``, so layer 1). Every other image column is hidden from the SID
    row at layers ``>= K``.

    Args:
        image_attention: ``(..., image tokens)`` attention over the image columns, any floating dtype (the release
            uses batch 0 only: pass ``(image tokens,)``).
        k: ``ATTENTION_RANK``, integer ``>= 0``; a ``k`` larger than the number of image tokens keeps them all.

    Returns:
        ``(..., min(k, image tokens))`` int64 indices *within the image span* (add the image start position for cache
        coordinates), **sorted ascending by index** (it is a set; ``torch.topk`` orders by value instead). The set is
        ``torch.topk(a, k, largest=False)``'s; ties are resolved deterministically — among equal attention values the
        lower index is kept first (stable sort), where ``topk`` leaves the choice unspecified. NaN sorts as the
        largest value (never kept before a number).

    Source: ``huofushuo/SID@127dd41 transformers/src/transformers/models/llama/modeling_llama.py`` L785-803:
    ``torch.mean(last_layer_attention, dim=1)[0][-1][SYS_LENGTH:SYS_LENGTH+IMAGE_TOKEN_LENGTH]`` (L787-791),
    ``.topk(ATTENTION_RANK, largest=False).indices + SYS_LENGTH`` (L793), then all image columns masked except those
    (L796-798). Defaults: ``--fast-v-attention-rank 100``, ``--fast-v-agg-layer 2`` (``pope_eval.py`` L91, L93);
    the CHAIR script uses rank **50** (``eval_utils/chair_eval.py`` L96). The release's ``topk`` raises for
    ``k > 576``; ``fast_v_agg_layer = 0`` gives a random keep set instead (L805-815), not reproduced here.

    Example (the two least attended of four image tokens; the tie 0.1 / 0.1 keeps both):

    >>> sid_keep_tokens(torch.tensor([0.4, 0.1, 0.3, 0.1]), k=2)
    tensor([1, 3])
    """
    a = _float_tensor("image_attention", image_attention, "(..., image tokens)", 1)
    order = torch.sort(a, dim=-1, stable=True).indices[..., : min(k, a.shape[-1])]
    return torch.sort(order, dim=-1).values


# ---------------------------------------------------------------------------------------------------------------------
# AvisC (Attentional Vision Calibration)
# ---------------------------------------------------------------------------------------------------------------------
@checked(alpha=_non_negative, beta=_cut)
def avisc(logits: torch.Tensor, contrast_logits: torch.Tensor, alpha: float = 1.0, beta: float = 0.1) -> torch.Tensor:
    r"""AvisC (Woo et al., 2024): contrast with a row in which only the over-attended "blind" image tokens survive
    (see :func:`avisc_blind_tokens`). VCD's combination:

    ``out = (1 + alpha) * l - alpha * l_blind``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere.

    A contrast row containing NaN is replaced by the original row (out = ``l`` on the plausible set), as the release
    does (L200-201) — per row here (the release checks the whole batch of 1), with no host synchronisation.

    Args:
        logits: ``(batch, vocab)`` original branch.
        contrast_logits: ``(batch, vocab)`` AvisC row (same prompt and image; non-blind image embeddings zeroed).
        alpha: contrast strength ``>= 0``; beta: plausibility cut in ``(0, 1]``.

    Source: ``sangminwoo/AvisC@772eba4 avisc_utils/avisc_sample.py`` L200-208 (NaN fallback; ``cd_alpha`` or 1.0,
    ``cd_beta`` or 0.1; cut and ``(1+avisc_alpha)*next_token_logits - avisc_alpha*next_token_logits_method``).
    Defaults ``eval_bench/pope_eval_llavab.py`` L71 (cd_alpha 1.0) and L85 (cd_beta 0.1); the AMBER script
    ``amber_eval.sh`` uses alpha 2.5. Released decoding samples (T = 1, top-p 1, no top-k).

    Example (``2 l - l'``):

    >>> avisc(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    tensor([[3., 0., -inf, 0.]])
    """
    l, c = _branches(logits, contrast_logits=contrast_logits)
    c = torch.where(torch.isnan(c).any(dim=-1, keepdim=True), l, c)
    return apply_mask((1.0 + alpha) * l - alpha * c, _keep_log(l, math.log(beta)))


@checked(gamma=_unit, lam=_non_negative)
def avisc_blind_tokens(layer_image_attention: torch.Tensor, gamma: float = 0.5, lam: float = 1.0) -> torch.Tensor:
    r"""AvisC's blind-token selection (prefill only): which image tokens the contrast row keeps intact.

    With ``a_l`` the head-mean attention of the last prompt token over the image columns in layer ``l``:

    1. layer shares ``r_l = sum(a_l) / sum_l sum(a_l)``;
    2. ``k = #{cumsum(r sorted descending) < gamma} + 1`` (at most the number of layers);
    3. the ``k`` layers with the largest shares; ``m = mean of a_l over them`` (per image token);
    4. ``blind = m >= mean(m) + lam * std(m)`` (``std`` unbiased, as ``torch.std``).

    Returns a bool ``(image tokens,)`` tensor: **True = blind token**, kept as it is in the contrast row; **False =
    overwritten** by the masking scheme (zeros by default) in the contrast row's prefill. Only the over-attended tokens
    survive, so the contrast row "sees" what the model over-trusts.

    Computed as ``not (m < threshold)``, exactly the complement of the release's masked set, also when the threshold
    is NaN (a single image token: unbiased std is NaN, the release masks nothing, so that token is True). Layer ties
    in step 3 go to the lower layer index (stable sort; ``torch.topk`` leaves them unspecified). No host sync: ``k``
    stays a tensor.

    Args:
        layer_image_attention: ``(layers, image tokens)`` attention probabilities, any floating dtype.
        gamma: ``layer_gamma`` in ``[0, 1]`` (0 = the top layer only; 1 = all layers).
        lam: ``lamb``, ``>= 0``: the threshold in standard deviations above the mean.

    Source: ``sangminwoo/AvisC@772eba4 avisc_utils/avisc_sample.py`` L138-145 (``count_top_p``: ``(cumsum(sorted,
    desc) < top_p).sum() + 1``), L160-170 (shares, ``topk`` of layers), L175-179 (mean over those layers;
    ``torch.where(img_att_logits < mean + std * lamb)`` are the *masked* indices). Defaults:
    ``eval_bench/pope_eval_llavab.py`` L79 (layer_gamma 0.5), L81 (lamb **0.99**); the released scripts pass
    ``lamb=1.0`` (``pope_eval_batch.sh``, ``amber_eval.sh``) — 1.0 here. Traps: the release hard-codes the image
    columns 35..610 (LLaVA-1.5 with the llava_v1 system prompt, L155) and flattens the batch into the mean/std.

    Example (3 layers x 4 image tokens; shares ``[0.46, 0.13, 0.41]``, cumsum ``[0.46, 0.87, 1]`` -> ``k = 2``,
    layers 0 and 2; ``m = [0.15, 0.1, 0.5, 0.1]``, threshold ``0.2125 + 0.1931 = 0.4056``):

    >>> a = torch.tensor([[0.1, 0.1, 0.6, 0.1], [0.05, 0.05, 0.1, 0.05], [0.2, 0.1, 0.4, 0.1]])
    >>> avisc_blind_tokens(a, gamma=0.5, lam=1.0)
    tensor([False, False,  True, False])
    """
    a = _float_tensor("layer_image_attention", layer_image_attention, "(layers, image tokens)", 2, 2)
    n_layers, n_tokens = a.shape
    if n_tokens == 1:  # unbiased std of one value is NaN: nothing is below the threshold (and torch.std would warn)
        return torch.ones(1, dtype=torch.bool, device=a.device)
    share = a.sum(dim=-1)
    share = share / share.sum()
    sorted_share, order = torch.sort(share, descending=True, stable=True)
    k = ((torch.cumsum(sorted_share / sorted_share.sum(), dim=0) < gamma).sum() + 1).clamp(max=n_layers)
    chosen_sorted = torch.arange(n_layers, device=a.device) < k
    chosen = torch.zeros(n_layers, dtype=torch.bool, device=a.device).scatter(0, order, chosen_sorted)
    m = torch.where(chosen.unsqueeze(-1), a, 0.0).sum(dim=0) / k
    threshold = m.mean() + lam * m.std()
    return ~(m < threshold)


# ---------------------------------------------------------------------------------------------------------------------
# VACoDe (adaptive augmentation selection; then VCD)
# ---------------------------------------------------------------------------------------------------------------------
def vacode_choice(first_logits: torch.Tensor, candidate_first_logits: torch.Tensor) -> torch.Tensor:
    r"""VACoDe's augmentation choice: the candidate whose first-step distribution is farthest from the original's.

    ``d_a = ||softmax(l_0) - softmax(l_a)||_2``,  ``choice = argmax_a d_a`` (the first candidate wins ties, as the
    release's strict ``>`` loop does). The chosen augmentation's image is then the contrast row of :func:`vcd`.

    Args:
        first_logits: ``(1, vocab)`` first-step logits of the original image.
        candidate_first_logits: ``(n_candidates, vocab)`` first-step logits, one row per augmentation (the release's
            order: random_crop, color_inversion, horizontal_flip, vertical_flip, random_mask, noise).

    Returns:
        a 0-d int64 tensor (``int(...)`` for a Python index; kept on the device to avoid a host sync). A NaN distance
        never wins (the strict ``>`` is False for NaN); if all are NaN the result is 0.

    Source: ``eunwooim/selfaug@ff3c77c src/models/llava_model.py`` L119-140 (no code of the VACoDe authors is known):
    ``softmax(generate(...).scores[0])``, per augmentation ``softmax(forward(...).logits[:, -1])``,
    ``vector_norm(logits - score, ord=2)``, ``if l2_norm > max_dist``. Trap: the release's runs then decode with
    ``cd_tau = 0.5`` (Self-Aug's entropy-adaptive cut); a faithful VACoDe uses VCD's fixed beta 0.1.

    Example (candidate 0 is the original itself, distance 0; candidate 1 at 0.5638; the uniform one at 0.4790):

    >>> l = torch.tensor([[2.0, 1.0, -1.0, 0.0]])
    >>> vacode_choice(l, torch.tensor([[2.0, 1.0, -1.0, 0.0], [1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    tensor(1)
    """
    f = _logits("first_logits", first_logits)
    if f.shape[0] != 1:
        raise ValueError(f"first_logits must have shape (1, vocab), got {tuple(f.shape)}")
    c = _logits("candidate_first_logits", candidate_first_logits)
    if c.shape[1] != f.shape[1]:
        raise ValueError(
            f"vocab mismatch: first_logits has {f.shape[1]} columns but candidate_first_logits has {c.shape[1]}"
        )
    if c.device != f.device:
        raise ValueError(f"device mismatch: first_logits on {f.device} but candidate_first_logits on {c.device}")
    d = torch.linalg.vector_norm(torch.softmax(f, dim=-1) - torch.softmax(c, dim=-1), ord=2, dim=-1)
    return torch.argmax(torch.nan_to_num(d, nan=float("-inf")))


# ---------------------------------------------------------------------------------------------------------------------
# DoLa (Decoding by Contrasting Layers)
# ---------------------------------------------------------------------------------------------------------------------
def dola_select_layer(final_logits: torch.Tensor, candidate_logits: torch.Tensor) -> torch.Tensor:
    r"""DoLa's dynamic premature layer: the candidate layer whose distribution differs most from the final one.

    ``p_N = softmax(l_N)``, ``p_j = softmax(l_j)``, ``M = (p_N + p_j) / 2``,
    ``JSD_j = 0.5 * (kl_div(log p_N, M) + kl_div(log p_j, M))`` with ``kl_div`` = ``F.kl_div(..., reduction="none")
    .mean(-1)``, i.e. ``mean_v M_v (log M_v - log p_v)``; ``j* = argmax_j JSD_j`` (first candidate on ties).

    Note what the authors' code computes: ``F.kl_div(input, target)`` is ``KL(target || exp(input))``, so each term is
    ``KL(M || p)`` (not the textbook ``KL(p || M)``), divided by the vocabulary size (a mean, not a sum). Both are
    reproduced here as the selection criterion; the argmax is what matters.

    Args:
        final_logits: ``(batch, vocab)`` the mature (final, normed) layer's logits.
        candidate_logits: ``(n_candidates, batch, vocab)`` early-exit logits ``lm_head(h_j[:, -1])`` of the candidate
            layers (**no** final norm, as DoLa), stacked on dim 0 as voidism does.

    Returns:
        ``(batch,)`` int64 indices into the candidate dimension (not layer numbers). Per row: voidism and the Hub code
        average the JSD over the batch first (L2694) and pick one layer for all rows; with a batch of 1 (as they run)
        this is the same, and here batched rows stay independent.

    Source: ``voidism/DoLa@805230e transformers-4.28.1/src/transformers/generation/utils.py`` L2674-2695
    (``dola_greedy_decode``): ``M = 0.5 * (softmax_mature[None] + softmax_premature)``, ``kl1 = F.kl_div(
    log_softmax_mature[None], M, reduction='none').mean(-1)``, ``kl2`` likewise, ``js_divs = 0.5 * (kl1 + kl2)``,
    ``.mean(-1)`` over the batch, argmax. Candidate layers: ``--early-exit-layers`` (e.g. ``0,2,...,14,32`` for
    LLaMA-7B open-ended); the Hub/transformers ``dola_layers="low"`` is ``range(start, N//2, 2)``.

    Example (candidate 0 equals the final layer, JSD 0; candidate 1 is flat):

    >>> final = torch.tensor([[2.0, 1.0, -1.0, 0.0]])
    >>> dola_select_layer(final, torch.stack([final, torch.zeros(1, 4)]))
    tensor([1])
    """
    f = _logits("final_logits", final_logits)
    c = _float_tensor("candidate_logits", candidate_logits, "(n_candidates, batch, vocab)", 3, 3)
    if c.shape[1:] != f.shape:
        raise ValueError(
            f"shape mismatch: candidate_logits must have shape (n_candidates, {f.shape[0]}, {f.shape[1]}), "
            f"got {tuple(c.shape)}"
        )
    if c.device != f.device:
        raise ValueError(f"device mismatch: final_logits on {f.device} but candidate_logits on {c.device}")
    log_f = torch.log_softmax(f, dim=-1).unsqueeze(0)
    log_c = torch.log_softmax(c, dim=-1)
    m = 0.5 * (log_f.exp() + log_c.exp())
    kl1 = F.kl_div(log_f.expand_as(m), m, reduction="none").mean(-1)
    kl2 = F.kl_div(log_c, m, reduction="none").mean(-1)
    return (0.5 * (kl1 + kl2)).argmax(dim=0)


@checked(beta=_cut)
def dola(final_logits: torch.Tensor, premature_logits: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    r"""DoLa (Chuang et al., ICLR 2024): contrast the final layer with a premature layer.

    ``f = log_softmax(l_N)``, ``b = log_softmax(l_j*)``,  ``out = f - b``   on
    ``{v : f_v >= min(max(f) + log(beta), f_(1))}``, ``-inf`` elsewhere, where ``f_(1)`` is the largest ``f``
    (``relative_top_filter`` with ``min_tokens_to_keep = 1``; since ``log(beta) <= 0`` the ``min`` is always
    ``max(f) + log(beta)``: the plausibility cut on ``f``, computed on the log-softmax as the release does).

    Args:
        final_logits: ``(batch, vocab)`` mature layer's logits.
        premature_logits: ``(batch, vocab)`` early-exit logits of the chosen premature layer (see
            :func:`dola_select_layer`; no final norm).
        beta: ``relative_top`` in ``(0, 1]``.

    Source: ``voidism/DoLa@805230e transformers-4.28.1/src/transformers/generation/utils.py`` L2456-2465
    (``relative_top_filter``), L2698-2705 (``base_logits[0][mask] = -1e3``, ``logits = final_logits - base_logits``:
    filtered tokens stay ``-inf``); relative_top 0.1 (``tfqa_eval.py`` L142). The Hub ``custom_generate`` uses
    ``base_filter_value=-1e-3`` instead of ``-1e3``, with the same result. Traps: the voidism scripts decode DoLa with
    ``repetition_penalty`` 1.2 (1.0 for the baseline, ``tfqa_eval.py`` L181-190) — a caller's processor, applied
    after this rule; its sign-dependent division acts oddly on ``f - b`` (either sign). voidism indexes batch row 0
    when masking ``b`` (L2703-2704); rows are independent here.

    Example (``f - b = (l - l') + (2.4938 - 2.4402) = (l - l') + 0.0536``; the third token is outside the cut):

    >>> dola(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), beta=0.1)
    tensor([[ 1.0536, -0.9464,    -inf,  0.0536]])
    """
    fl = _logits("final_logits", final_logits)
    bl = _matching("final_logits", fl, "premature_logits", premature_logits)
    f = torch.log_softmax(fl, dim=-1)
    b = torch.log_softmax(bl, dim=-1)
    top = f.max(dim=-1, keepdim=True).values
    keep = f >= torch.minimum(top + math.log(beta), top)
    return apply_mask(f - b, keep)


# ---------------------------------------------------------------------------------------------------------------------
# DeCo (Dynamic Correction decoding)
# ---------------------------------------------------------------------------------------------------------------------
@checked(top_p=_cut, top_k=_positive_integer)
def deco_candidates(final_logits: torch.Tensor, top_p: float = 0.9, top_k: int = 20) -> torch.Tensor:
    r"""DeCo's candidate tokens: the final layer's top ``top_k``, cut where their cumulative probability reaches
    ``top_p`` (the token that reaches it is kept).

    ``q = topk(softmax(l_N), k)`` (descending), ``i = #{r : cumsum(q)_r < top_p}`` (``searchsorted(..., right=False)``),
    keep the first ``min(i + 1, k)``. Returns a ``(batch, vocab)`` bool mask. ``top_k`` above the vocabulary keeps
    the whole vocabulary (the release's ``topk`` would fail).

    Source: ``zjunlp/Deco@fee8d75 transformers/generation/utils.py`` L2661-2666 (greedy), L3151-3156 (sampling).

    >>> deco_candidates(torch.tensor([[2.0, 1.5, 1.0, -3.0]]))  # p = .505, .306, .186, .003: .505+.306 < .9
    tensor([[ True,  True,  True, False]])
    >>> deco_candidates(torch.tensor([[2.0, 1.5, 1.0, -3.0]]), top_k=2)
    tensor([[ True,  True, False, False]])
    """
    f = _logits("final_logits", final_logits)
    k = min(top_k, f.shape[-1])
    probs, ids = torch.softmax(f, dim=-1).topk(k, dim=-1)
    count = ((probs.cumsum(dim=-1) < top_p).sum(dim=-1, keepdim=True) + 1).clamp(max=k)
    kept = torch.arange(k, device=f.device)[None, :] < count
    return torch.zeros_like(f, dtype=torch.bool).scatter(-1, ids, kept)


@checked(alpha=_non_negative, top_p=_cut, top_k=_positive_integer)
def deco(
    final_logits: torch.Tensor, early_logits: torch.Tensor, alpha: float = 0.6, top_p: float = 0.9, top_k: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""DeCo (Wang et al., ICLR 2025): borrow the early layer most confident about one of the final layer's candidates.

    ``C = deco_candidates(l_N, top_p, top_k)``; ``p_j = softmax(l_j)`` per early layer;
    ``(j*, m) = argmax / max over (layer j, candidate c ∈ C) of p_j[c]`` (row-major: the first layer on ties);
    ``out = l_N + alpha·m·l_{j*}`` on ``C``, ``-inf`` elsewhere. The weights sum to ``1 + alpha·m``: under sampling
    it is also a temperature change, and the candidate cut makes DeCo a top-p/top-k truncation too.

    Args:
        final_logits: ``(batch, vocab)`` the model's own logits.
        early_logits: ``(n_layers, batch, vocab)`` early exits **with the final norm**, ``lm_head(norm(h_j))``
            (vendored ``modeling_llama.py`` L819-825; unlike DoLa's).
        alpha: the borrowing strength (``--alpha`` 0.6, ``chair_llava.py`` L171).
        top_p, top_k: the candidate cut (``threshold_top_p`` 0.9, ``threshold_top_k`` 20, L172-173).

    Returns ``(logits, j, m)``: the combined ``(batch, vocab)`` logits, ``(batch,)`` indices into ``early_logits``'
    first dimension (not layer numbers) and ``(batch,)`` the anchor probabilities ``m``. The release runs batch 1
    (``.squeeze``); rows are independent here.

    Source: ``zjunlp/Deco@fee8d75 transformers/generation/utils.py`` L2667-2681 (greedy), L3158-3173 (sampling):
    ``premature_max_probs = candidate_tokens_early_exit_probs.max()``, ``final_token_logits = next_token_logits +
    alpha * premature_max_probs * selected_premature_layer_logits``, masked to the candidates, then the processors.

    Example (candidates 0-2; layer 1 puts 0.980187 on candidate 2, more than layer 0's 0.711235 on candidate 1):

    >>> out, j, m = deco(torch.tensor([[2.0, 1.5, 1.0, -3.0]]), torch.tensor([[[0.0, 2, 0, 0]], [[0.0, 0, 5, 0]]]))
    >>> out, j, m
    (tensor([[2.0000, 1.5000, 3.9406,   -inf]]), tensor([1]), tensor([0.9802]))
    """
    f = _logits("final_logits", final_logits)
    e = _float_tensor("early_logits", early_logits, "(n_layers, batch, vocab)", 3, 3)
    if e.shape[1:] != f.shape:
        raise ValueError(
            f"shape mismatch: early_logits must have shape (n_layers, {f.shape[0]}, {f.shape[1]}), got {tuple(e.shape)}"
        )
    if e.device != f.device:
        raise ValueError(f"device mismatch: final_logits on {f.device} but early_logits on {e.device}")
    keep = deco_candidates.__wrapped__(f, top_p, top_k)
    on_candidates = torch.softmax(e, dim=-1).masked_fill(~keep[None], -1.0)  # (layers, batch, vocab)
    # Row-major over (layer, vocab): ties go to the first layer, as the release's flat argmax over (layer, candidate).
    flat = on_candidates.transpose(0, 1).reshape(f.shape[0], -1)
    m, where = flat.max(dim=-1)
    layer = torch.div(where, f.shape[1], rounding_mode="floor")
    chosen = e.transpose(0, 1)[torch.arange(f.shape[0], device=f.device), layer]
    return apply_mask(f + alpha * m[:, None] * chosen, keep), layer, m


# ---------------------------------------------------------------------------------------------------------------------
# ONLY (One-Layer Intervention)
# ---------------------------------------------------------------------------------------------------------------------
def _without_outliers(part: torch.Tensor) -> torch.Tensor:
    """``part`` (heads, keys) with entries above their row's mean + std (unbiased) set to 0 (ONLY's attention sinks)."""
    if part.shape[-1] == 0:
        return part
    cut = part.mean(dim=-1, keepdim=True) + part.std(dim=-1, keepdim=True)
    return torch.where(part > cut, torch.zeros_like(part), part)


def _attention_entropy(part: torch.Tensor, missing: float) -> torch.Tensor:
    """Per head, the entropy of ``part`` renormalised, ``-Σ a·log(a + 1e-6)``; ``missing`` where it sums to 0."""
    a = part / part.sum(dim=-1, keepdim=True)
    return torch.nan_to_num(-(a * torch.log(a + 1e-6)).sum(dim=-1), nan=missing)


def only_head_weights(
    weights: torch.Tensor, text_keys: torch.Tensor, image_keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""ONLY's edit of one layer's attention for its "textually enhanced" output: keep the heads whose text attention
    is relatively diffuse compared with their image attention.

    In each head, within the text keys and within the image keys apart, weights above that part's mean + std
    (unbiased) are set to 0 (attention sinks); ``H_text``, ``H_img`` = entropies of each part renormalised
    (``-Σ a·log(a + 1e-6)``; an all-zero text part gives 0, an all-zero image part ∞); ``ratio = H_text / H_img``;
    heads with ``ratio < mean(ratio)`` get all weights 0. The kept heads keep their outlier-zeroed weights, **not**
    renormalised; keys in neither part (the row's first token, BOS in the release; padding) keep theirs.

    Args:
        weights: ``(batch, heads, keys)`` the last query's post-softmax attention weights at the layer.
        text_keys, image_keys: ``(batch, keys)`` bool masks (the release: text = keys 1..34 and 611.., image =
            35..610, LLaVA-1.5's prompt hard-coded; derive them from the row).

    Returns ``(edited weights, removed (batch, heads) bool, ratio (batch, heads))``. The output to build from them is
    ``o_proj(edited · V)``.

    Source: ``zifuwan/ONLY@109bffe transformers/src/transformers/models/llama/modeling_llama.py`` L482-522
    (``enhance_layer_index`` 0). Rows are independent here (the release runs batch 1 and ``.squeeze``\ s the ratio).

    Example (keys: 0 BOS, 1 text, 2-5 image, 6 text; head 1's image weight 0.04 is an outlier and goes to 0, so its
    image entropy is ln 3; ratios ln2/ln4 = 0.5 and ln2/ln3 = 0.630930, mean 0.565465: head 0 is removed):

    >>> w = torch.tensor([[[.4, .1, .1, .1, .1, .1, .1], [.4, .25, .02, .02, .02, .04, .25]]])
    >>> text, image = torch.tensor([[0, 1, 0, 0, 0, 0, 1]]).bool(), torch.tensor([[0, 0, 1, 1, 1, 1, 0]]).bool()
    >>> edited, removed, ratio = only_head_weights(w, text, image)
    >>> removed, ratio
    (tensor([[ True, False]]), tensor([[0.5000, 0.6309]]))
    >>> edited[0, 1]
    tensor([0.4000, 0.2500, 0.0200, 0.0200, 0.0200, 0.0000, 0.2500])
    """
    w = _float_tensor("weights", weights, "(batch, heads, keys)", 3, 3)
    masks = []
    for name, mask in (("text_keys", text_keys), ("image_keys", image_keys)):
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (w.shape[0], w.shape[2]):
            raise ValueError(f"{name} must be a bool tensor of shape ({w.shape[0]}, {w.shape[2]})")
        masks.append(mask.to(w.device))
    if bool((masks[0] & masks[1]).any()):
        raise ValueError("a key cannot be both text and image")
    edited, ratios = w.clone(), []
    for b in range(w.shape[0]):
        text, image = masks[0][b].nonzero()[:, 0], masks[1][b].nonzero()[:, 0]
        text_part, image_part = _without_outliers(w[b][:, text]), _without_outliers(w[b][:, image])
        edited[b][:, text], edited[b][:, image] = text_part, image_part
        ratios.append(_attention_entropy(text_part, 0.0) / _attention_entropy(image_part, float("inf")))
    ratio = torch.stack(ratios)
    removed = ratio < ratio.mean(dim=-1, keepdim=True)
    return edited.masked_fill(removed[..., None], 0.0), removed, ratio


@checked(alpha_collaborative=_non_negative, alpha_contrastive=_non_negative, beta=_cut, gamma=_non_negative)
def only(
    logits: torch.Tensor,
    enhanced_logits: torch.Tensor,
    alpha_collaborative: float = 3.0,
    alpha_contrastive: float = 1.0,
    beta: float = 0.1,
    gamma: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""ONLY's fusion (Wan et al., ICCV 2025) of the normal logits with the textually enhanced ones ``l̃``.

    ``d = Σ_v |p_v − p̃_v|`` (an L1 distance in [0, 2], the release's ``tvd`` compared with ``js_gamma``);
    ``d < gamma``: ``l + α₁·l̃`` (collaborative; the weights sum to 1 + α₁), else ``(1+α₂)·l − α₂·l̃``
    (contrastive); then the plausibility cut on ``l`` (``l < log β + max l`` → −inf).

    Defaults: the sampler's fallbacks (``only_utils/only_sample.py`` L176-179: α₁ 3, α₂ 1, β 0.1, γ 0.1); the
    scripts run γ 0.2 (``scripts/pope_eval.sh``), 0.25 (``chair_eval.sh``), ``pope_eval_llava.py``'s own default 0.6.

    Returns ``(logits, d)``, ``d`` per row (the release sums over its batch of 1). Source: ``zifuwan/ONLY@109bffe
    only_utils/only_sample.py`` L183 (cut), L200 (``tvd``), L220-229 (branches), L232 (mask).

    >>> l = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    >>> only(l, l + torch.tensor([0.0, 0.05, 0.0, 0.0]))
    (tensor([[8.0000, 4.1500, 0.0000,   -inf]]), tensor([0.0183]))
    >>> only(l, torch.tensor([[1.0, 2.0, 0.0, -1.0]]))
    (tensor([[3., 0., 0., -inf]]), tensor([0.8141]))
    """
    l, e = _branches(logits, enhanced_logits=enhanced_logits)
    a1, a2 = alpha_collaborative, alpha_contrastive
    d = (torch.softmax(l, dim=-1) - torch.softmax(e, dim=-1)).abs().sum(dim=-1)
    combined = torch.where((d < gamma)[:, None], l + a1 * e, (1.0 + a2) * l - a2 * e)
    return apply_mask(combined, _keep_log(l, math.log(beta))), d


# ---------------------------------------------------------------------------------------------------------------------
# Steering of an MLP output (VISTA, VTI)
# ---------------------------------------------------------------------------------------------------------------------
@checked(strength=_real)
def steer(output: torch.Tensor, direction: torch.Tensor, strength: float = 0.1,
          cosine_boost: bool = True) -> torch.Tensor:
    r"""Norm-preserving steering of a decoder layer's MLP output (the residual update, not the residual stream):

    ``x ← normalize(normalize(x) + λ·λ_sim·v̂)·‖x‖``, per position, in float32; ``v̂ = v/‖v‖``, so ``λ`` is relative
    to a unit vector whatever the size of ``v``.

    - VISTA (Li et al., ICML 2025; ``LzVv123456/VISTA@dc62252 llm_layers.py`` VSVLayer L15–34): ``cosine_boost``,
      ``λ_sim = 1 + max(0, cos(x, −v))`` (a position pointing away from the steering direction is pushed harder);
      ``λ`` is ``--vsv-lambda``.
    - VTI (Liu, Ye, Zou, ICLR 2025; ``shengliu66/VTI@bb5dfee llm_layers.py`` VTILayer L16–32): no boost,
      ``λ_sim ≡ 1``, and the caller passes ``strength = 0.1·λ`` (the release's layer multiplies its ``lam`` by 0.1).

    Args:
        output: ``(..., hidden)`` MLP outputs (any floating dtype); the result is float32 of the same shape (the
            releases cast back to fp16; the caller casts back to the model's dtype).
        direction: ``(hidden,)`` the steering vector ``v`` (not necessarily unit).
        strength: ``λ`` (any real; 0 leaves ``x`` as it is up to rounding).
        cosine_boost: VISTA's ``λ_sim`` (True) or VTI's constant 1 (False).

    A zero ``x`` stays zero (its norm is 0); a zero ``v`` steers nothing (``normalize`` of a zero vector is zero).

    Examples (``x = [3, 4]``, ``v = [−1, 0]``; the norm 5 is kept): VISTA at λ 0.1 (``cos(x, −v)`` = 0.6, so
    ``λ_sim`` = 1.6); VTI at λ 0.9 (strength 0.09):

    >>> steer(torch.tensor([[3.0, 4.0]]), torch.tensor([-1.0, 0.0]), strength=0.1)
    tensor([[2.4096, 4.3811]])
    >>> steer(torch.tensor([[3.0, 4.0]]), torch.tensor([-1.0, 0.0]), strength=0.1 * 0.9, cosine_boost=False)
    tensor([[2.6878, 4.2161]])
    """
    if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.dim() < 1:
        raise ValueError("output must be a floating tensor (..., hidden)")
    if not isinstance(direction, torch.Tensor) or direction.shape != output.shape[-1:]:
        raise ValueError(f"direction must be a tensor of shape ({output.shape[-1]},), got "
                         f"{tuple(getattr(direction, 'shape', ()))}")
    x, v = output.float(), direction.to(device=output.device, dtype=torch.float32)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    weight = torch.full_like(norm, strength)
    if cosine_boost:
        cosine = F.cosine_similarity(x, -v.expand_as(x), dim=-1).unsqueeze(-1)
        weight = weight * (1.0 + cosine.clamp_min(0.0))
    return F.normalize(F.normalize(x, dim=-1) + weight * F.normalize(v, dim=0), dim=-1) * norm


@checked(alpha=_unit)
def vista_sla(logits: torch.Tensor, early_logits: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    r"""VISTA's token-logit augmentation (SLA): the mean of a window of early exits blended into the final logits,

    ``out = alpha·mean_j lm_head(h_j) + (1 − alpha)·l``, on raw logits, before any processor (weights sum to 1).

    The early exits carry **no** final norm (``lm_head(h_j)``, as DoLa's; unlike DeCo's and MemVR's).

    Args:
        logits: ``(batch, vocab)`` the model's own logits ``l``.
        early_logits: ``(n_layers, batch, vocab)`` the window's early exits.
        alpha: ``--logits-alpha`` 0.3 in ``[0, 1]``; 0 = off.

    Source: ``LzVv123456/VISTA@dc62252 llava/model/language_model/llava_llama.py`` L93–103 (``--logits-layers
    25,30``: the outputs of decoder layers 25..30, hidden-state indices 26..31, ``chair_eval.py`` L34–36).

    Example (the spec's: the window's mean is ``[2, 2, 0, 0]``):

    >>> vista_sla(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), torch.tensor([[[1.0, 3, 0, 0]], [[3.0, 1, 0, 0]]]))
    tensor([[ 2.0000,  1.3000,  0.0000, -0.7000]])
    """
    f = _logits("logits", logits)
    e = _float_tensor("early_logits", early_logits, "(n_layers, batch, vocab)", 3, 3)
    if e.shape[1:] != f.shape or e.shape[0] == 0:
        raise ValueError(f"early_logits must have shape (n_layers >= 1, {f.shape[0]}, {f.shape[1]}), got "
                         f"{tuple(e.shape)}")
    return alpha * e.mean(dim=0) + (1.0 - alpha) * f


# ---------------------------------------------------------------------------------------------------------------------
# MemVR (memory-space visual retracing)
# ---------------------------------------------------------------------------------------------------------------------
_LN10 = math.log(10.0)


def memvr_entropy(lens_logits: torch.Tensor) -> torch.Tensor:
    r"""MemVR's layer uncertainty: the entropy of the softmax over the 10 largest logit-lens logits, in units of
    ``ln 10`` (so 0 to 1): ``q = softmax(top10(l_ℓ))``, ``E = −Σ q·log q / ln 10``.

    Args:
        lens_logits: ``(batch, vocab)`` the logit lens of a layer at the last position **through the final norm**,
            ``lm_head(norm(h_ℓ))`` (unlike DoLa's and VISTA's early exits); a vocabulary under 10 takes all.

    Returns ``(batch,)`` float32. The release computes one number for its batch of 1 (``probabilities[:10]`` slices
    the batch, not the tokens); rows are independent here.

    Source: ``1zhou-Wang/MemVR@de2e3cf memvr.py`` L206–215.

    Examples (ten equal top logits; one far ahead; ``[2, 1, 1, 0×7]``):

    >>> memvr_entropy(torch.tensor([[1.0] * 10, [10.0] + [0.0] * 9, [2.0, 1, 1] + [0.0] * 7]))
    tensor([1.0000, 0.0020, 0.8544])
    """
    f = _logits("lens_logits", lens_logits)
    q = torch.softmax(f.topk(min(10, f.shape[-1]), dim=-1).values, dim=-1)
    # At most 1 (τ 1 = never fires): ten nearly equal logits round to 1 + 1e-7 in float32.
    return (-(q * torch.log(q)).nan_to_num(0.0).sum(dim=-1) / _LN10).clamp(0.0, 1.0)


@checked(ratio=_unit)
def memvr_retrace(mlp_input: torch.Tensor, mlp_output: torch.Tensor, memory: torch.Tensor,
                  ratio: float = 0.12) -> torch.Tensor:
    r"""MemVR's visual retracing in one FFN: the visual tokens ``V`` as an extra key–value memory read by the FFN's
    input, scaled to the FFN output's size and mixed in:

    ``m = (x·Vᵀ)·V`` (linear: no softmax, no activation), ``m ← m·mean|ffn| / mean|m|``,
    ``out = (1 − ratio)·ffn + ratio·m``.

    The release's key and value matrices carry constant scales (``mean|W_up| / mean|V|``, ``mean|W_down| / mean|V|``)
    that the rescaling of ``m`` cancels. The means run over the whole tensor given: the caller passes one row's own
    positions (the release's means run over its batch of 1); a zero ``m`` is left zero.

    Args:
        mlp_input: ``(positions, hidden)`` the FFN's input ``x``.
        mlp_output: ``(positions, hidden)`` the FFN's own output.
        memory: ``(tokens, hidden)`` the visual tokens (the image features after the projector).
        ratio: ``--retracing-ratio`` in ``[0, 1]``; 0 = off.

    Source: ``1zhou-Wang/MemVR@de2e3cf memvr.py`` L86–90 (``LlamaMLP.forward``), L246–249 (the memory's weights).

    Example (the spec's: ``x = [1, 0]``, ``V = [[1, 0], [0, 1], [1, 1]]``, ``ffn = [0.5, −0.5]``, ratio 0.12;
    ``m = [2, 1]``, rescaled to ``[2/3, 1/3]``):

    >>> memvr_retrace(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, -0.5]]),
    ...               torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), ratio=0.12)
    tensor([[ 0.5200, -0.4000]])
    """
    x = _float_tensor("mlp_input", mlp_input, "(positions, hidden)", 2, 2)
    ffn = _float_tensor("mlp_output", mlp_output, "(positions, hidden)", 2, 2)
    v = _float_tensor("memory", memory, "(tokens, hidden)", 2, 2).to(x.device)
    if ffn.shape != x.shape or v.shape[-1] != x.shape[-1]:
        raise ValueError(f"mlp_input {tuple(x.shape)}, mlp_output {tuple(ffn.shape)} and memory {tuple(v.shape)} "
                         "must share the hidden size (and the input and output their positions)")
    m = (x @ v.T) @ v
    size = m.abs().mean()
    m = m * torch.where(size > 0, ffn.abs().mean() / size, torch.zeros_like(size))  # no host sync
    return (1.0 - ratio) * ffn + ratio * m


# ---------------------------------------------------------------------------------------------------------------------
# The Mirage controls (cd_rethink): APC-only and OLM
# ---------------------------------------------------------------------------------------------------------------------
@checked(beta=_cut)
def apc_only(logits: torch.Tensor, beta: float = 0.2) -> torch.Tensor:
    r"""APC-only control (Yin, Si, Wang 2025, "The Mirage of Performance Gains"): the plausibility cut alone.

    ``out = l``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere.

    The released sampler runs a second forward with the *same* inputs and computes ``(1 + alpha) l - alpha l = l``,
    so the contrast is a no-op and only the truncation remains; this rule needs no contrast row.

    Args:
        logits: ``(batch, vocab)`` original branch.
        beta: plausibility cut in ``(0, 1]``; 0.2 as in the release (VCD's scripts use 0.1 or 0.2).

    Source: ``ustc-hyin/cd_rethink@4303279 inference/spurious_utils/apc_utils.py`` L147-148 (``cd_alpha`` or 1,
    ``cd_beta`` or **0.2**), L155-158 (``cutoff = log(cd_beta) + max``; ``diffs = (1+cd_alpha)*l - cd_alpha*l_cd``
    with ``l_cd == l``; ``masked_fill(l < cutoff, -inf)``). Trap: ``scripts/pope_infer_spurious.sh`` passes no top-k,
    so the checkpoint's generation-config defaults (HF's top-k 50) apply after this cut.

    Example (cut at ``2 + log 0.2 = 0.391``; ``softmax -> [0.731059, 0.268941, 0, 0]``):

    >>> apc_only(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), beta=0.2)
    tensor([[2., 1., -inf, -inf]])
    """
    l = _logits("logits", logits)
    return apply_mask(l, _keep_log(l, math.log(beta)))


@checked(yes_id=_integer, no_id=_integer, mass=_non_negative, margin=_non_negative)
def olm(logits: torch.Tensor, yes_id: int, no_id: int, mass: float = 0.2, margin: float = 0.5) -> torch.Tensor:
    r"""OLM control (cd_rethink, "output-level modification"): greedy, nudged towards "Yes" when Yes/No is uncertain.

    ``p = softmax(l)``;  token = ``yes_id``  if ``p[yes] + p[no] > mass`` and ``|p[yes] - p[no]| < margin`` (both
    strict), else ``argmax(l)`` (the first maximum on ties).

    Args:
        logits: ``(batch, vocab)`` scores after the caller's logits processors (the release applies them first).
        yes_id, no_id: the first token of "Yes" / "No" in the model's tokenizer, distinct, in ``[0, vocab)``
            (hard-coded 3869 "▁Yes" / 1939 "▁No" of the LLaMA/Vicuna tokenizer in the release).
        mass: ``>= 0``, the least Yes+No probability for the nudge (0.2 in the release).
        margin: ``>= 0``, the largest Yes/No gap nudged (0.5 in the release).

    Returns:
        ``(batch,)`` int64 token ids (a decision, not logits), applied at every step, per row (the release: batch 1).

    Source: ``ustc-hyin/cd_rethink@4303279 inference/spurious_utils/olm_utils.py`` L113-141: ``probs =
    softmax(logits_processor(l))`` (L126-127), ``if sum_prob > 0.2`` (L131), ``if abs_diff < 0.5`` -> YES_INDEX
    (L133-134), else ``argmax(next_token_scores)`` (L136, L138).

    Example (vocab [Yes, No, x, y]; ``p = [0.367, 0.448, 0.135, 0.050]``: mass 0.815 > 0.2 and gap 0.081 < 0.5, so
    Yes although argmax is No):

    >>> olm(torch.tensor([[1.0, 1.2, 0.0, -1.0]]), yes_id=0, no_id=1)
    tensor([0])
    """
    l = _logits("logits", logits)
    vocab = l.shape[1]
    for name, v in (("yes_id", yes_id), ("no_id", no_id)):
        if v >= vocab:
            raise ValueError(f"{name} must be < vocab size {vocab}, got {v}")
    if yes_id == no_id:
        raise ValueError(f"yes_id and no_id must differ, got {yes_id} for both")
    p = torch.softmax(l, dim=-1)
    p_yes, p_no = p[:, yes_id], p[:, no_id]
    nudge = (p_yes + p_no > mass) & ((p_yes - p_no).abs() < margin)
    greedy = l.argmax(dim=-1)
    return torch.where(nudge, torch.full_like(greedy, yes_id), greedy)


# ---------------------------------------------------------------------------------------------------------------------
# DCD: decoupled positive and negative image projections
# ---------------------------------------------------------------------------------------------------------------------
@checked(alpha=_non_negative, beta=_cut)
def dcd(logits_pos: torch.Tensor, logits_neg: torch.Tensor, alpha: float = 1.0, beta: float = 0.1) -> torch.Tensor:
    r"""DCD (Chen et al., NeurIPS 2025): contrast the row whose image comes through the *positive* projection (trained
    on the chosen answers of preference pairs) with the same row through the *negative* one (trained on the rejected
    answers). VCD's combination and cut:

    ``out = (1 + alpha) * l_pos - alpha * l_neg``   on ``{i : l_pos_i >= log(beta) + max(l_pos)}``, ``-inf`` elsewhere.

    Args:
        logits_pos: ``(batch, vocab)`` the positive row (the model's own projector in the "neg-only" variant).
        logits_neg: ``(batch, vocab)`` the same prompt and image, its image-token embeddings from the negative
            projection.
        alpha: contrast strength ``>= 0``; beta: plausibility cut in ``(0, 1]``.

    Source: the paper (arXiv 2504.08809, "decoupling contrastive decoding"); no public code (announced at
    HKUST-LongGroup/DCD), so alpha = 1 and beta = 0.1 are VCD's, not verified against the authors'.

    Example (``2 l_pos - l_neg``):

    >>> dcd(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    tensor([[3., 0., -inf, 0.]])
    """
    return vcd.__wrapped__(logits_pos, logits_neg, alpha=alpha, beta=beta)


@checked(beta=_non_negative, alpha=_cut, min_keep=_positive_integer)
def distillation_cd(
    logits: torch.Tensor, amateur_logits: torch.Tensor, beta: float = 0.4, alpha: float = 0.1, min_keep: int = 1
) -> torch.Tensor:
    r"""Distillation Contrastive Decoding (Phan, Tran, Phan, arXiv 2402.14874): contrast the model with its own
    "amateur", the same model on the same prompt with dropout on its attention probabilities (``decoding.attention``).

    ``cut = min(l_(min_keep), log(alpha) + max(l))``, ``l_(k)`` the k-th largest logit of the original branch;
    ``out = (1 + beta) * l - beta * l_a``   on ``{i : l_i >= cut}``, ``-inf`` elsewhere.

    Note the release's names: ``beta`` is the contrast strength and ``alpha`` the plausibility cut (VCD's are the
    other way round). With ``min_keep = 1`` (greedy, as released) the cut is VCD's at ``alpha``.

    Args:
        logits: ``(batch, vocab)`` the expert, the original branch.
        amateur_logits: ``(batch, vocab)`` the amateur branch.
        beta: contrast strength ``>= 0`` (0 = the cut alone).
        alpha: plausibility cut in ``(0, 1]``.
        min_keep: at least this many tokens survive the cut (1 for greedy as released; its beam search takes 2).

    Source: ``pphuc25/distil-cd@5aad6c2 src/dcd/generate.py`` L313–325 (the cut on the expert's processed scores,
    strict ``<`` removed, then the combination on the amateur's raw logits), argmax L327; ``min_tokens_to_keep``
    ``2 if num_beams > 1 else 1`` (``dcd_eval/src/run_generation.py`` L207). Defaults: ``--alpha_coef 0.1`` (L31);
    beta 0.4 with dropout 0.3 from ``dcd_eval/configs/combined/data_full/gsm8k/dcd_drop/
    gsm8k_7b_full_csv4_beta04-drop03.sh`` (Llama-2-7B; the ``.py`` default 0.5, L32, runs without dropout).

    Example (the amateur's lower second logit lifts the second token above the first):

    >>> distillation_cd(torch.tensor([[3.0, 2.5, 0.0, -2.0]]), torch.tensor([[3.0, 1.0, 0.0, 0.0]]), beta=0.5)
    tensor([[3.0000, 3.2500,   -inf,   -inf]])
    """
    l, a = _branches(logits, amateur_logits=amateur_logits)
    k = min(min_keep, l.shape[-1])
    kth = l.topk(k, dim=-1).values[:, -1:]
    cut = torch.minimum(kth, l.max(dim=-1, keepdim=True).values + math.log(alpha))
    return apply_mask((1.0 + beta) * l - beta * a, l >= cut)


@checked(alpha=_non_negative, beta=_cut)
def agla(logits: torch.Tensor, local_logits: torch.Tensor, alpha: float = 2.0, beta: float = 0.5) -> torch.Tensor:
    r"""AGLA (An et al., CVPR 2025): *add* the branch of a "local" view of the image, its prompt-irrelevant pixels
    blacked out (``decoding.agla``), to the original ("global") one. RITUAL's form at AGLA's own defaults:

    ``out = l + alpha * l_local``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf`` elsewhere.

    The weights sum to ``1 + alpha`` (3 by default): under sampling (the release samples, T 1, top-p 1) this sharpens
    the distribution as a temperature of about 1/3 would where both views agree.

    Args:
        logits: ``(batch, vocab)`` original branch.
        local_logits: ``(batch, vocab)`` the masked image's branch.
        alpha: weight of the local view, ``>= 0``.
        beta: plausibility cut in ``(0, 1]``.

    Source: ``Lackel/AGLA@efa1263 eval/sample.py`` L141–148 (``next_token_logits + cd_alpha * next_token_logits_cd``,
    masked below ``log(cd_beta) + max``; the sampler's fallbacks alpha 1, beta 0.5); alpha 2 and beta 0.5 from
    ``eval/run_llava.py`` L127–128 and ``eval/llava1.5_pope.bash``.

    Example (the spec's vector: the local view's favourite, token 1, overtakes token 0):

    >>> agla(torch.tensor([[2.0, 1.5, 0.0, -1.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    tensor([[4.0000, 5.5000,   -inf,   -inf]])
    """
    return ritual.__wrapped__(logits, local_logits, alpha=alpha, beta=beta)


# ---------------------------------------------------------------------------------------------------------------------
# ECD-like: lower what a trained hallucination detector flags
# ---------------------------------------------------------------------------------------------------------------------
@checked(lam=_non_negative, beta=_cut)
def ecd(logits: torch.Tensor, detector_logits: torch.Tensor, lam: float = 1.0, beta: float = 0.1) -> torch.Tensor:
    r"""ECD-like (after Fieback et al., ECML-PKDD 2025, arXiv 2504.12137): each plausible candidate lowered by how
    likely a trained detector finds it wrong.

    ``out = l − lam·softplus(z) = l + lam·log(1 − σ(z))``   on ``{i : l_i >= log(beta) + max(l)}``, ``-inf``
    elsewhere; ``z`` is the detector's logit of "this token is a hallucination" for every candidate
    (``decoding.detector``). Under ``lam = 1`` the distribution is ``p·P(right)`` renormalised over the plausible
    set: a token the detector trusts keeps its logit, a flagged one drops; nothing is ever raised.

    Args:
        logits: ``(batch, vocab)`` original branch.
        detector_logits: ``(batch, vocab)`` the detector's logits, from the same forward.
        lam: strength, ``>= 0`` (0 = the plausibility cut alone).
        beta: plausibility cut in ``(0, 1]``.

    Source: the paper says ECD "contrasts token probabilities and hallucination scores" and "subtracts hallucinated
    concepts from the original distribution", under an adaptive plausibility constraint, one forward per token (no
    code is public; methods survey part 2 §8). This form and its default strength are ours.

    Example (``softplus(0) = log 2``, the last token is cut):

    >>> ecd(torch.tensor([[2.0, 1.0, -1.0]]), torch.tensor([[-30.0, 0.0, 0.0]]), lam=1.0, beta=0.1)
    tensor([[2.0000, 0.3069,   -inf]])
    """
    l, z = _branches(logits, detector_logits=detector_logits)
    return apply_mask(l - lam * F.softplus(z), _keep_log(l, math.log(beta)))


# ---------------------------------------------------------------------------------------------------------------------
# OPERA (over-trust penalty): column scores of the local attention window
# ---------------------------------------------------------------------------------------------------------------------
@checked(scale=_positive)
def opera_column_scores(local_attention: torch.Tensor, scale: float = 50.0) -> torch.Tensor:
    r"""OPERA's over-trust column scores of a local window of attention (Huang et al., CVPR 2024).

    ``phi_j = 1e-7 * prod_{i >= j} (scale * A_ij)``  for each column ``j`` of the ``W x W`` window ``A`` (the
    column product of the lower triangle, diagonal included; entries above the diagonal are ignored).

    The caller takes ``rollback_score, loc = phi.max(-1)`` (first column on ties): ``rollback_score`` is the penalty
    subtracted from the candidate's logit (``c - penalty_weights * rollback_score``) once the window has more than 10
    tokens (up to 10 the release uses ``-`` the candidate row's image-attention mass instead, L3432-3440), and ``loc``
    feeds the retrospection (roll back when the same ``loc >= 10`` recurs more than ``threshold`` = 15 times).

    Deviation (on purpose): the release computes the product in the attention dtype (float16: LLaVA is loaded in
    float16, ``minigpt4/models/llava.py`` L76, and the attention probabilities are cast back to it) and stores
    ``1e-7 * prod`` in a **float16** buffer (L3424-3428). So there (a) the *product* overflows to ``inf`` as soon as a
    partial product exceeds 65504 — ``phi = inf`` already for a true ``phi`` above ~6.5e-3, and even when later
    factors would bring the product back down (the result depends on the reduction order); (b) any ``phi`` below
    ~3e-8 (a product below ~0.3) is stored as 0, and small values keep 1-2 significant digits; (c) ties among the
    ``inf`` or ``0`` columns make ``loc`` the first of them (all zeros give ``loc = 0``, which never triggers a
    rollback), and an ``inf`` rollback score sends the candidate to ``-inf``. Here the logarithms are summed in
    float64 (float32 on MPS) and ``exp``'d into float32: the exact value, no underflow above ~1e-45, no overflow
    below ~3e38, ``loc`` the true argmax. The release's values are not reproduced bit for bit (they depend on float16
    rounding order); expect differences in ``loc`` and in the penalty wherever (a)-(c) occur. Zero attention gives
    ``phi = 0`` (``log 0 = -inf``).

    Args:
        local_attention: ``(..., W, W)`` attention probabilities of the local window (rows and columns from the first
            generated token on, incl. the candidate; in OPERA last-layer probabilities, max over heads, rows
            renormalised to sum 1), any floating dtype; ``...`` e.g. (beams, candidates).
        scale: ``scale_factor`` ``sigma > 0``.

    Returns:
        ``(..., W)`` float32 column scores.

    Source: ``shikiw/OPERA@61426ef transformers-4.29.2/src/transformers/generation/utils.py`` L3420-3436:
    ``attn_local = scale_factor * attn_last[..., response_start:, response_start:]`` (L3420-3423), ``1e-7 *
    attn_local[..., j:, j].prod(-1)`` into a float16 buffer (L3424-3428), ``rollback_scores, rollback_locs =
    attn_local_scores.max(-1)`` (L3436). scale_factor 50 in ``chair_eval.py`` L85 and the README (L116); the model
    wrappers' own default is 1.0 (``minigpt4/models/llava.py`` L154).

    Example (``W = 2``: ``phi_0 = 1e-7 * (50*1.0) * (50*0.5) = 1.25e-4``, ``phi_1 = 1e-7 * 50*0.5 = 2.5e-6``):

    >>> opera_column_scores(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), scale=50.0)
    tensor([1.2500e-04, 2.5000e-06])
    """
    a = _float_tensor("local_attention", local_attention, "(..., W, W)", 2)
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"local_attention must be square in its last two dims (W, W), got shape {tuple(a.shape)}")
    w = a.shape[-1]
    log_a = torch.log(a.to(_wide(a.device)) * scale)
    lower = torch.ones(w, w, dtype=torch.bool, device=a.device).tril()  # [i, j] True where i >= j
    log_phi = math.log(_OPERA_EPS) + torch.where(lower, log_a, 0.0).sum(dim=-2)
    return torch.exp(log_phi).to(torch.float32)


_OPERA_FILL = -999.0  # OPERA's logit for what a step may not choose (utils.py L3543-3557)


@checked(num_candidates=_positive_integer, penalty_weight=_real)
def opera_candidates(
    logits: torch.Tensor, penalty: torch.Tensor | None = None, num_candidates: int = 5, penalty_weight: float = 1.0
) -> torch.Tensor:
    r"""OPERA's per-beam scores: only the top candidates of the raw logits, each lowered by its over-trust penalty.

    ``out_v = l_v - w * pen_v`` for the ``C`` largest raw logits ``v`` (``C = num_candidates``), ``out_v = -999``
    for every other token (the release's fill, not ``-inf``); the beam then takes ``log_softmax(out)``, so the
    candidates share the probability mass among themselves.

    Args:
        logits: ``(B, V)`` raw logits of the beams' rows.
        penalty: ``(B, C)`` each candidate's over-trust penalty, in ``topk`` order (largest logit first); None: 0.
        num_candidates: ``C``, the candidates whose attention is looked ahead at (5; at most the vocabulary).
        penalty_weight: ``w``, ``penalty_weights`` (1).

    Source: ``shikiw/OPERA@61426ef transformers-4.29.2/src/transformers/generation/utils.py`` L3371-3373 (top-C of
    the raw ``next_token_logits``), L3449 (``candidate_token_scores -= penalty_weights * penalty_scores``),
    L3556-3557 (``fill_(-999.)`` then ``scatter_(-1, candidate_tokens, candidate_token_scores)``).

    >>> opera_candidates(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[0.5, -1.0]]), num_candidates=2)
    tensor([[   1.5000,    2.0000, -999.0000, -999.0000]])
    """
    l = _logits("logits", logits)
    c = min(num_candidates, l.shape[-1])  # a vocabulary smaller than C: all
    scores, tokens = l.topk(c, dim=-1)
    if penalty is not None:
        pen = _float_tensor("penalty", penalty, "(B, C)", 2, 2)
        if pen.shape != scores.shape:
            raise ValueError(f"penalty must have shape {tuple(scores.shape)} (B, C), got {tuple(pen.shape)}")
        scores = scores - penalty_weight * pen.to(scores.device)
    return torch.full_like(l, _OPERA_FILL).scatter(-1, tokens, scores)


def opera_penalty(
    local_attention: torch.Tensor, image_mass: torch.Tensor, scale: float = 50.0
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""OPERA's over-trust penalty of each candidate, and where its window's largest column score lies.

    ``phi = opera_column_scores(A, scale)``; ``loc = argmax_j phi_j``; ``pen = -m`` while the window holds at most 10
    tokens (``m`` the candidate row's attention mass on the image: a bonus), ``pen = max_j phi_j`` after.

    Args:
        local_attention: ``(..., W, W)`` the window (generated tokens, the candidate last; rows renormalised).
        image_mass: ``(...)`` the candidate row's renormalised attention on the image tokens.
        scale: ``scale_factor`` (50).

    Returns:
        ``(pen, loc)``: float32 ``(...)`` and long ``(...)`` (the first column on ties).

    Source: ``shikiw/OPERA@61426ef transformers-4.29.2/src/transformers/generation/utils.py`` L3431-3440
    (``attn_i = attn_last[:, :, -1, image_start:image_end+1].sum(-1)``; ``penalty_scores = - attn_scores if
    cur_response_lens <= 10 else rollback_scores``; ``rollback_scores, rollback_locs = attn_local_scores.max(-1)``).

    >>> a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    >>> opera_penalty(a, torch.tensor(0.3))
    (tensor(-0.3000), tensor(0))
    """
    phi = opera_column_scores(local_attention, scale=scale)
    score, loc = phi.max(dim=-1)
    mass = _float_tensor("image_mass", image_mass, "(...)", 0).to(score.device)
    if mass.shape != score.shape:
        raise ValueError(f"image_mass must have shape {tuple(score.shape)}, got {tuple(mass.shape)}")
    pen = -mass if phi.shape[-1] <= 10 else score
    return pen.to(torch.float32), loc


@checked(threshold=_integer)
def opera_rollback_loc(locs: torch.Tensor, threshold: int = 15) -> int | None:
    r"""OPERA's retrospection test: the window column to roll back from, or None.

    ``loc = mode_beams(locs[:, -1])``; roll back when **every** beam's history holds ``loc`` more than ``threshold``
    times and ``loc >= 10`` (the release never rolls back into the first 10 tokens).

    Args:
        locs: ``(beams, steps)`` long: at each step so far, each beam's ``loc`` (the mode over its candidates of
            ``opera_penalty``'s ``loc``), in the order of the beam rows (the release does not follow beams through
            reordering here, nor do we).
        threshold: ``threshold`` (15).

    Source: ``shikiw/OPERA@61426ef transformers-4.29.2/src/transformers/generation/utils.py`` L3437-3447
    (``rollback_loc = rollback_locs.mode().values.mode().values``, the history), L3459-3461 (``all(... .sum() >
    int(threshold))``, ``if rollback_loc < 10: assert False``).

    >>> opera_rollback_loc(torch.tensor([[12, 12, 12], [12, 3, 12]]), threshold=1)
    12
    >>> opera_rollback_loc(torch.tensor([[12, 12, 12], [12, 3, 3]]), threshold=1) is None  # beam 1 holds 12 once
    True
    """
    if not isinstance(locs, torch.Tensor) or locs.dim() != 2 or locs.shape[1] == 0 or locs.is_floating_point():
        raise ValueError("locs must be a (beams, steps) integer tensor with at least one step")
    loc = int(locs[:, -1].mode().values)
    if loc < 10 or not bool(((locs == loc).sum(dim=-1) > threshold).all()):
        return None
    return loc


@checked(num_candidates=_positive_integer, loc=_integer, history=_positive_integer)
def opera_rollback_position(
    loc: int, rollbacks: dict[int, int], window: int, num_candidates: int = 5, history: int = 512
) -> tuple[int, int] | None:
    r"""Where OPERA rolls back to: the answer is cut to this many tokens and the next one is chosen again.

    ``pos = loc + 1``; if ``pos`` was already rolled back to ``num_candidates`` times, ``pos - 1``; if that too,
    no rollback (None). A rollback deeper than ``history`` steps is clamped to ``max(1, W - history - 1)``.

    Args:
        loc: the window column from ``opera_rollback_loc``.
        rollbacks: position -> rollbacks counted at it so far (not modified).
        window: ``W``, tokens in the window now (the candidate included).
        num_candidates: ``num_attn_candidates`` (5): also the most rollbacks to one position.
        history: ``window_size`` (512), the steps of history kept.

    Returns:
        ``(counted, pos)``: the position the rollback counts against (``loc + 1`` or ``loc``, before the clamp, as
        the release's ``max_rollback_time[rollback_pos] += 1``) and the position rolled back to (answer tokens
        kept); or None.

    Source: ``shikiw/OPERA@61426ef transformers-4.29.2/src/transformers/generation/utils.py`` L3463-3474.

    >>> opera_rollback_position(12, {}, window=20), opera_rollback_position(12, {13: 5}, window=20)
    ((13, 13), (12, 12))
    >>> opera_rollback_position(12, {13: 5, 12: 5}, window=20) is None
    True
    """
    pos = loc + 1
    if rollbacks.get(pos, 0) >= num_candidates:
        pos -= 1
        if rollbacks.get(pos, 0) >= num_candidates:
            return None
    counted = pos
    if window - pos > history + 1:
        pos = max(1, window - history - 1)
    return counted, pos


def opera_rollback_logits(logits: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    r"""The scores of the step OPERA rolled back to: the whole vocabulary (no candidates, no penalty), except the
    tokens that step chose before, which drop to the lowest score.

    ``out = l - min(l) - 999``, then ``out[rejected] = -999`` (``min(out) = -999``: a rejected token is as unlikely
    as the least likely one).

    Args:
        logits: ``(B, V)`` raw logits of the restored beams.
        rejected: ``(B, V)`` bool, the (beam, token) pairs chosen at this step before (every rollback to it).

    Source: ``shikiw/OPERA@61426ef transformers-4.29.2/src/transformers/generation/utils.py`` L3543-3552.

    >>> opera_rollback_logits(torch.tensor([[2.0, 1.0, -1.0]]), torch.tensor([[True, False, False]]))
    tensor([[-999., -997., -999.]])
    """
    l = _logits("logits", logits)
    if not isinstance(rejected, torch.Tensor) or rejected.dtype != torch.bool or rejected.shape != l.shape:
        raise ValueError(f"rejected must be a bool tensor of shape {tuple(l.shape)}")
    out = l - l.amin(dim=-1, keepdim=True) + _OPERA_FILL
    return out.masked_fill(rejected.to(out.device), _OPERA_FILL)
