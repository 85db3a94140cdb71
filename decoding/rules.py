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
  so that callers such as the UI only need to catch one exception type).
- Nothing here synchronises with the device (parameters are Python numbers, validated on the host), so the rules are
  cheap to call once per generated token on a GPU.

The per-step scalars some methods compute (SAVCD's ``beta_t``, CODE's ``BD``, M3ID's ``gamma_t``) come from separate
pure companion functions (``savcd_beta``, ``code_divergence``, ``m3id_gamma``, ``m3id_weight``). Which method uses
which rule, with which parameters and contrast rows, is ``decoding.methods.REGISTRY``.

The examples share ``l = [2, 1, -1, 0]``: with ``beta = 0.1`` the cut is ``max(l) + log(0.1) = -0.303``, so the third
token (``-1``) is outside the plausible set.
"""

from __future__ import annotations

import math
import numbers
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
    alpha = _non_negative("alpha", alpha)
    beta = _beta(beta)
    return apply_mask((1.0 + alpha) * l - alpha * c, _keep_log(l, math.log(beta)))


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

    Source: ``sangminwoo/RITUAL@52065a6 ritual_utils/ritual_sample.py`` L171–182: ``next_token_logits +
    ritual_alpha_pos * next_token_logits_pos``, masked below ``log(ritual_beta) + max``; defaults L166–168.

    Example (``l + 3 l_T``: the second token, preferred by the transformed view, wins):

    >>> ritual(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), alpha=3.0, beta=0.1)
    tensor([[5., 7., -inf, 0.]])
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

    Source: ``eunwooim/selfaug@ff3c77c src/utils/utils.py`` L58–72: ``sigmoid(gamma * sum(p log2 p))``
    (``= sigmoid(-gamma H)``); gamma (``cd_tau``) 0.5 in ``src/script/*.bash`` (the .py default ``None`` turns the
    adaptive cut off).

    Example (``H = 1.367`` bits, ``sigmoid(-0.5 H)``):

    >>> savcd_beta(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), gamma=0.5)
    tensor([0.3355])
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

    Source: ``eunwooim/selfaug@ff3c77c src/utils/vcd_sample.py`` L154–168 (VCD's combine with ``cd_beta`` from
    :func:`savcd_beta`); alpha 1 from ``src/eval/pope.py`` L91.

    Example (``beta_t = 0.3355`` cuts deeper than VCD's 0.1: the fourth token goes too):

    >>> savcd(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), alpha=1.0, gamma=0.5)
    tensor([[3., 0., -inf, -inf]])
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
    """(BD per row, p_v), both float64 (float32 on Apple's MPS, which has no float64), for validated logits.

    float64 because a confident step collapses in float32: when both branches give the top token 1 - 1e-9, float32
    rounds both to 1, the top token's |p_v - p_d| (the term that dominates BD) becomes 0 and BD ~1e-18 instead of
    ~1e-6, so the cut ``p_v >= BD * max(p_v)`` keeps the whole vocabulary where the rule keeps one token.
    """
    wide = torch.float32 if l.device.type == "mps" else torch.float64
    p_v = torch.softmax(l.to(wide), dim=-1)
    p_d = torch.softmax(d.to(wide), dim=-1)
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

    Source: ``IVY-LVLM/CODE@31adf82 models/contrastive_decoding/cd_utils.py`` L12 (``kl_d``); exponent ``cd_alpha`` 0.7
    from ``evaluate.py`` L126–128 (the function's own fallback is 0.2).

    Example:

    >>> code_divergence(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    tensor([0.5332])
    """
    l, d = _branches(logits, description_logits=description_logits)
    exponent = _positive("exponent", exponent)
    return _bounded_divergence(l, d, exponent)[0].to(torch.float32)


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
    exponent = _positive("exponent", exponent)
    bd, p_v = _bounded_divergence(l, d, exponent)
    alpha_t = (1.0 - bd).to(torch.float32).unsqueeze(-1)
    combined = (1.0 + alpha_t) * l - alpha_t * d
    keep = (p_v >= bd.unsqueeze(-1) * p_v.max(dim=-1, keepdim=True).values) & (l > float("-inf"))
    return apply_mask(combined, keep)


# ---------------------------------------------------------------------------------------------------------------------
# M3ID
# ---------------------------------------------------------------------------------------------------------------------
def m3id_gamma(step: int, lam: float = 0.02) -> float:
    r"""M3ID's visual-information weight ``gamma_t = exp(-lam * t)`` with ``t = step`` the number of tokens generated
    so far (``gamma_0 = 1``: no correction on the first token).

    Source: Favero et al., CVPR 2024 (no official code); as re-implemented in
    ``sangminwoo/RITUAL@52065a6 ritual_utils/ritual_sample.py`` L178 (``exp(-0.02 * t)``, ``t`` from 0).

    Example:

    >>> round(m3id_gamma(10, lam=0.02), 4)
    0.8187
    """
    step = _step(step)
    lam = _non_negative("lam", lam)
    return math.exp(-lam * step)


def m3id_weight(step: int, lam: float = 0.02) -> float:
    r"""M3ID's contrast weight ``(1 - gamma_t) / gamma_t = exp(lam * t) - 1`` (0 at ``t = 0``; ``inf`` on overflow).

    Example:

    >>> round(m3id_weight(10, lam=0.02), 4)
    0.2214
    """
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

    Source: Favero et al., CVPR 2024 (no official code); as re-implemented in
    ``sangminwoo/RITUAL@52065a6 ritual_utils/ritual_sample.py`` L178–180 with ``t`` counted from 0 (AvisC's
    re-implementation counts from 1, giving a weight of 0.02 on the first token).

    Example (at ``t = 10`` the weight is ``e^0.2 - 1 = 0.2214``):

    >>> m3id(torch.tensor([[2.0, 1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), step=10, lam=0.02, beta=0.1)
    tensor([[2.2214, 0.7786,   -inf, 0.0000]])
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
