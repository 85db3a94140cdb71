"""Tests of decoding.rules: hand-computed vectors, properties, dtypes and argument validation (the registry's
bindings of the rules are in test_methods.py)."""

from __future__ import annotations

import math

import pytest
import torch

from logits import NEG_INF, FlippedDetector, T, assert_logits

from decoding import rules
from decoding.methods import REGISTRY, get_method
from decoding.rules import (
    code,
    code_divergence,
    distribution_l2,
    entropy_bits,
    icd,
    m3id,
    m3id_gamma,
    m3id_weight,
    plausibility_mask,
    ritual,
    ritual_vcd,
    savcd,
    savcd_beta,
    vcd,
)

LOG_BETA = math.log(0.1)  # -2.302585...


def call_rule(method, l, contrasts, step=0, **params):
    """A method's rule as the engine calls it: through its registry record, with method-level parameters."""
    record = get_method(method)
    logits = {"original": l, **dict(zip(record.contrast_roles, contrasts, strict=True))}
    # What construction would hand the rule: OLM's token ids, DoLa's, DeCo's and VISTA's SLA layers (early exits
    # made up here: DoLa's and SLA's without the final norm, DeCo's through it).
    rule_args = {
        "olm": {"yes_id": 0, "no_id": 1}, "dola": {"layers": (0,)}, "deco": {"layers": (0,)},
        "sid": {"skip_cut": False}, "ecd": {"detector": FlippedDetector()},
        "cd": {"head_cut": 0.1},  # CD's V_head as a sampled run has it (greedy as released: 0.0, no cut)
        "vista": {"layers": (0,)},
    }.get(method, {})
    if method == "dola":
        logits["layer 0"] = l.flip(-1)
    if method == "deco":
        logits["normed layer 0"] = l.flip(-1)
    if method == "vista":  # SLA's early exit (without the final norm)
        logits["layer 0"] = l.flip(-1)
    if method == "memvr":  # what the retraced forward reports beside its logits
        logits.update({"retrace layer": torch.ones(l.shape[0], 1), "layer uncertainty": torch.ones(l.shape[0], 1)})
    if method == "only":  # what ONLY's edit of the original row's forward yields: made up here too
        logits.update({"enhanced": l.flip(-1), "removed heads": torch.ones(l.shape[0], 1)})
    return record.rule(logits, step, {**record.resolve(params), **rule_args}).logits


# Shared small example: l = [2, 1, -1, 0]; threshold = max + log(0.1) = 2 - 2.3026 = -0.3026,
# so tokens 0 (2), 1 (1) and 3 (0) are kept and token 2 (-1 < -0.3026) is masked.
L = T([2.0, 1.0, -1.0, 0.0])


# ---------------------------------------------------------------------------------------------------------------------
# plausibility mask
# ---------------------------------------------------------------------------------------------------------------------
def test_plausibility_mask_hand():
    assert plausibility_mask(L, 0.1).tolist() == [[True, True, False, True]]
    # beta = 0.5: threshold 2 - 0.693 = 1.307 -> only token 0
    assert plausibility_mask(L, 0.5).tolist() == [[True, False, False, False]]
    # beta = 1 keeps only the maximum and its ties
    assert plausibility_mask(T([3.0, 3.0, 2.9]), 1.0).tolist() == [[True, True, False]]


def test_plausibility_mask_strict_boundary():
    # l_i == log(beta) + max(l) exactly is kept ("strictly <" masks); one float32 ulp below is masked.
    at = torch.tensor(LOG_BETA, dtype=torch.float32)
    below = torch.nextafter(at, torch.tensor(NEG_INF))
    logits = torch.stack([torch.tensor(0.0), at, below]).unsqueeze(0)
    assert plausibility_mask(logits, 0.1).tolist() == [[True, True, False]]
    # same through a rule: vcd with identical branches keeps the boundary token
    out = vcd(logits, logits, alpha=1.0, beta=0.1)
    assert torch.isfinite(out[0, 1]) and torch.isneginf(out[0, 2])


def test_plausibility_mask_probability_space_equivalence():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 100, generator=g) * 3
    p = torch.softmax(logits.double(), -1)
    expected = p >= 0.1 * p.max(-1, keepdim=True).values
    assert torch.equal(plausibility_mask(logits, 0.1), expected)


def test_plausibility_mask_tensor_beta():
    logits = torch.cat([L, L])
    mask = plausibility_mask(logits, torch.tensor([0.1, 0.5]))
    assert mask.tolist() == [[True, True, False, True], [True, False, False, False]]
    with pytest.raises(ValueError):
        plausibility_mask(logits, torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError):
        plausibility_mask(logits, torch.tensor([0.1, 0.2, 0.3]))


# ---------------------------------------------------------------------------------------------------------------------
# hand-computed vectors, one per rule
# ---------------------------------------------------------------------------------------------------------------------
def test_vcd_hand():
    c = T([1.0, 2.0, 0.0, 0.0])
    # (1 + 1) * l - 1 * c = [4-1, 2-2, -2-0, 0-0] = [3, 0, -2, 0]; token 2 masked
    assert_logits(vcd(L, c), [[3.0, 0.0, NEG_INF, 0.0]])
    # alpha = 0.5: 1.5 * l - 0.5 * c = [3-0.5, 1.5-1, ., 0-0] = [2.5, 0.5, ., 0]
    assert_logits(vcd(L, c, alpha=0.5), [[2.5, 0.5, NEG_INF, 0.0]])
    # alpha = 0: the original logits on the plausible set
    assert_logits(vcd(L, c, alpha=0.0), [[2.0, 1.0, NEG_INF, 0.0]])
    # beta = 0.5 keeps only token 0: 2*2 - 1 = 3
    assert_logits(vcd(L, c, beta=0.5), [[3.0, NEG_INF, NEG_INF, NEG_INF]])


def test_icd_is_vcd():
    c = T([1.0, 2.0, 0.0, 0.0])
    assert_logits(icd(L, c, alpha=0.5), [[2.5, 0.5, NEG_INF, 0.0]])
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 20, generator=g), torch.randn(3, 20, generator=g)
    assert torch.equal(icd(a, b, alpha=2.0, beta=0.2), vcd(a, b, alpha=2.0, beta=0.2))


def test_ritual_hand():
    t = T([1.0, 0.0, 3.0, -1.0])
    # l + 3 * t = [2+3, 1+0, -1+9, 0-3] = [5, 1, 8, -3]; token 2 is masked although its combined value (8) is the
    # largest: the plausible set comes from the original branch only.
    assert_logits(ritual(L, t), [[5.0, 1.0, NEG_INF, -3.0]])
    # alpha = 1: [3, 1, ., -1]
    assert_logits(ritual(L, t, alpha=1.0), [[3.0, 1.0, NEG_INF, -1.0]])


def test_ritual_vcd_hand():
    t = T([1.0, 0.0, 3.0, -1.0])
    n = T([0.0, 1.0, 0.0, 2.0])
    # expert = l + 3 t = [5, 1, 8, -3]; (1 + 1) * expert - 1 * n = [10-0, 2-1, 16-0, -6-2] = [10, 1, 16, -8]
    assert_logits(ritual_vcd(L, t, n), [[10.0, 1.0, NEG_INF, -8.0]])


def test_ritual_vcd_reduces_to_each_method():
    g = torch.Generator().manual_seed(2)
    l, t, n = (torch.randn(4, 30, generator=g) for _ in range(3))
    torch.testing.assert_close(ritual_vcd(l, t, n, alpha_pos=3.0, alpha=0.0), ritual(l, t, alpha=3.0))
    torch.testing.assert_close(ritual_vcd(l, t, n, alpha_pos=0.0, alpha=1.0), vcd(l, n, alpha=1.0))


def test_savcd_hand():
    # l = ln [4, 2, 1, 1] -> p = [0.5, 0.25, 0.125, 0.125]
    # H = 0.5*1 + 0.25*2 + 2 * 0.125*3 = 1.75 bits; beta_t = sigmoid(-0.5 * 1.75) = 1 / (1 + e^0.875) = 0.294215
    # keep p >= 0.294215 * 0.5 = 0.147107: tokens 0 and 1 (0.125 < 0.147 masked; a fixed beta = 0.1 would keep all)
    l = torch.log(T([4.0, 2.0, 1.0, 1.0]))
    c = torch.zeros(1, 4)
    assert entropy_bits(l).item() == pytest.approx(1.75, abs=1e-5)
    assert savcd_beta(l, 0.5).item() == pytest.approx(1 / (1 + math.exp(0.875)), abs=1e-6)
    assert savcd_beta(l, 0.5).item() == pytest.approx(0.294215, abs=1e-6)
    # combine: 2 l - 0 = [2 ln 4, 2 ln 2, ., .] = [2.772589, 1.386294, ., .]
    assert_logits(savcd(l, c), [[2.772589, 1.386294, NEG_INF, NEG_INF]])
    assert_logits(vcd(l, c, beta=0.1), [[2.772589, 1.386294, 0.0, 0.0]])


def test_savcd_beta_limits():
    # a confident row (H ~ 0.002 bits) gives beta_t ~ 0.5, a uniform one over 16 tokens (H = 4 bits) sigmoid(-2)
    logits = torch.stack([torch.tensor([10.0, 0.0, 0.0, 0.0] + [-1e4] * 12), torch.zeros(16)])
    beta = savcd_beta(logits, 0.5)
    assert beta[0].item() == pytest.approx(0.5, abs=1e-3)
    assert beta[1].item() == pytest.approx(1 / (1 + math.exp(2.0)), abs=1e-6)
    assert torch.all(savcd_beta(logits, 0.0) == 0.5)
    # huge gamma: beta_t underflows but the rule works in log space and keeps the whole (flat) row
    out = savcd(logits, logits, gamma=1e6)
    assert torch.isfinite(out[1]).all()


def test_code_hand_exponent_one():
    # p_v = [0.5, 0.3, 0.2], p_d = [0.2, 0.3, 0.5], a = 1
    # |p_v - p_d| = [0.3, 0, 0.3]; log2(1.3) = 0.378512; p_v + p_d = [0.7, 0.6, 0.7]
    # BD = 0.5 * (0.378512*0.7 + 0 + 0.378512*0.7) = 0.264958; alpha_t = 0.735042
    # mask: p_v < 0.264958 * 0.5 = 0.132479 -> nothing masked
    pv, pd = T([0.5, 0.3, 0.2]), T([0.2, 0.3, 0.5])
    lv, ld = torch.log(pv), torch.log(pd)
    bd = 0.5 * 2 * 0.7 * math.log2(1.3)
    assert bd == pytest.approx(0.264958, abs=1e-6)
    assert code_divergence(lv, ld, exponent=1.0).item() == pytest.approx(bd, abs=1e-6)
    a_t = 1 - bd
    expected = [[(1 + a_t) * math.log(v) - a_t * math.log(d) for v, d in zip([0.5, 0.3, 0.2], [0.2, 0.3, 0.5])]]
    # = [1.735042*(-0.693147) - 0.735042*(-1.609438), 1.735042*ln 0.3 - 0.735042*ln 0.3,
    #    1.735042*(-1.609438) - 0.735042*(-0.693147)]
    # = [-1.202639 + 1.183005, 1.0 * ln 0.3, -2.792442 + 0.509492] = [-0.019635, -1.203973, -2.282950]
    assert_logits(code(lv, ld, exponent=1.0), expected)
    assert_logits(code(lv, ld, exponent=1.0), [[-0.019635, -1.203973, -2.282950]])


def test_code_hand_masking_default_exponent():
    # p_v = [0.7, 0.2, 0.1], p_d = [0.1, 0.2, 0.7], a = 0.7
    # |diff| = [0.6, 0, 0.6]; 0.6^0.7 = e^(0.7 ln 0.6) = e^-0.357578 = 0.699368; log2(1.699368) = 0.764998;
    # p_v + p_d = [0.8, 0.4, 0.8]
    # BD = 0.5 * 2 * 0.8 * 0.764998 = 0.611999; alpha_t = 0.388001
    # mask: p_v < 0.611999 * 0.7 = 0.428399 -> tokens 1 (0.2) and 2 (0.1) masked
    lv, ld = torch.log(T([0.7, 0.2, 0.1])), torch.log(T([0.1, 0.2, 0.7]))
    assert 0.6**0.7 == pytest.approx(0.699368, abs=1e-6)
    bd = 0.8 * math.log2(1 + 0.6**0.7)
    assert bd == pytest.approx(0.611999, abs=1e-6)
    assert code_divergence(lv, ld).item() == pytest.approx(bd, abs=1e-6)
    a_t = 1 - bd
    # token 0: (1 + 0.388001) * ln 0.7 - 0.388001 * ln 0.1 = 1.388001 * -0.356675 + 0.388001 * 2.302585
    #        = -0.495065 + 0.893405 = 0.398341
    first = (1 + a_t) * math.log(0.7) - a_t * math.log(0.1)
    assert first == pytest.approx(0.398341, abs=1e-5)
    assert_logits(code(lv, ld), [[first, NEG_INF, NEG_INF]])


def test_code_identical_branches_is_exactly_original():
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        g = torch.Generator().manual_seed(3)
        l = (torch.randn(5, 64, generator=g) * 4).to(dtype)
        out = code(l, l.clone())
        assert torch.equal(code_divergence(l, l.clone()), torch.zeros(5))
        assert torch.equal(out, l.to(torch.float32))  # BD = 0: nothing masked, 2l - l == l exactly


def test_code_keeps_minus_inf_original_tokens_at_minus_inf():
    l = T([1.0, 0.0, NEG_INF])
    out = code(l, l.clone())
    assert_logits(out, [[1.0, 0.0, NEG_INF]])
    assert not torch.isnan(out).any()


def test_code_divergence_bounds():
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        a, b = torch.randn(4, 50, generator=g) * 10, torch.randn(4, 50, generator=g) * 10
        bd = code_divergence(a, b)
        assert torch.all((bd >= 0) & (bd <= 1))
    # disjoint one-hot-like distributions: BD -> 1 (|diff|^a = 1 where either is ~1)
    a = T([100.0, -100.0])
    b = T([-100.0, 100.0])
    assert code_divergence(a, b).item() == pytest.approx(1.0, abs=1e-5)
    out = code(a, b)  # alpha_t = 0, threshold = max(p_v): only the argmax survives, with its own logit
    assert_logits(out, [[100.0, NEG_INF]], tol=1e-3)


def test_code_divergence_at_a_confident_step_does_not_collapse():
    """Both branches give the top token 1 - 8e-10 / 1 - 2e-9 (57 tokens, as the embedded model's vocabulary). float32
    rounds both to 1, so a float32 BD loses the top token's term (~1e-6) and the cut keeps all 57 tokens."""
    l = torch.full((1, 57), -25.0)
    d = torch.full((1, 57), -24.0)
    l[0, 0] = d[0, 0] = 0.0
    p_v, p_d = torch.softmax(l.double(), -1), torch.softmax(d.double(), -1)
    expected = float(0.5 * (torch.log2((p_v - p_d).abs() ** 0.7 + 1) * (p_v + p_d)).sum())
    assert 1e-7 < expected < 1e-5
    assert code_divergence(l, d).item() == pytest.approx(expected, rel=1e-5)
    out = code(l, d)
    assert torch.isfinite(out).sum() == 1 and torch.isfinite(out[0, 0])
    # the same logits in float16 and bfloat16 (as a GPU model gives them) agree
    assert code_divergence(l.half(), d.half()).item() == pytest.approx(expected, rel=1e-3)


def test_m3id_hand():
    u = T([1.0, 1.0, 0.0, -1.0])
    # step 10, lam 0.02: gamma = e^-0.2 = 0.818731; (1 - gamma) / gamma = e^0.2 - 1 = 0.221403
    # l + (l - u) * 0.221403 = [2 + 0.221403, 1 + 0, ., 0 + 0.221403]; token 2 masked
    assert m3id_gamma(10, 0.02) == pytest.approx(0.818731, abs=1e-6)
    assert m3id_weight(10, 0.02) == pytest.approx(0.221403, abs=1e-6)
    g = m3id_gamma(10, 0.02)
    assert m3id_weight(10, 0.02) == pytest.approx((1 - g) / g, rel=1e-12)
    assert_logits(m3id(L, u, step=10), [[2.221403, 1.0, NEG_INF, 0.221403]])


def test_m3id_step_zero_is_original_on_kept_set():
    g = torch.Generator().manual_seed(5)
    l, u = torch.randn(4, 40, generator=g) * 3, torch.randn(4, 40, generator=g) * 3
    out = m3id(l, u, step=0)
    keep = plausibility_mask(l, 0.1)
    assert torch.equal(out[keep], l[keep])
    assert torch.isneginf(out[~keep]).all()
    assert m3id_gamma(0) == 1.0 and m3id_weight(0) == 0.0


def test_m3id_overflow_is_a_value_error():
    with pytest.raises(ValueError, match="too large"):
        m3id(L, L, step=10_000, lam=0.02)  # lam * step = 200: e^200 overflows float32
    assert m3id_weight(100_000, 0.02) == math.inf


# ---------------------------------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["vcd", "icd", "savcd", "m3id"])
def test_identical_branches_give_the_baseline_distribution(method):
    g = torch.Generator().manual_seed(6)
    for step in (0, 7, 50):
        l = torch.randn(6, 80, generator=g) * 3
        out = call_rule(method, l, [l.clone()], step=step)
        keep = torch.isfinite(out)
        assert torch.equal(keep, ~torch.isneginf(out))
        baseline = torch.softmax(l.masked_fill(~keep, NEG_INF), -1)
        torch.testing.assert_close(torch.softmax(out, -1), baseline, atol=1e-6, rtol=1e-5)
        if method != "savcd":  # fixed beta: the kept set is exactly the plausibility mask
            assert torch.equal(keep, plausibility_mask(l, 0.1))


def test_ritual_sharpens_weights_sum_to_four():
    g = torch.Generator().manual_seed(7)
    l = torch.randn(3, 60, generator=g)
    out = ritual(l, l.clone())  # l + 3 l = 4 l on the plausible set
    keep = plausibility_mask(l, 0.1)
    torch.testing.assert_close(out[keep], 4 * l[keep])
    sharp = torch.softmax(out, -1)
    base = torch.softmax(l.masked_fill(~keep, NEG_INF), -1)
    assert torch.all(entropy_bits(torch.log(sharp)) < entropy_bits(torch.log(base)))
    # the same as the baseline at temperature 1/4
    torch.testing.assert_close(sharp, torch.softmax(4 * l.masked_fill(~keep, NEG_INF), -1))


@pytest.mark.parametrize("method", sorted(set(REGISTRY) - {"olm"}))  # OLM may trade the argmax for "yes" by design
def test_argmax_of_original_always_survives(method):
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        scale = [0.1, 1.0, 5.0, 30.0][seed % 4]
        l = torch.randn(4, 50, generator=g) * scale
        contrasts = [torch.randn(4, 50, generator=g) * scale for _ in REGISTRY[method].contrast_roles]
        out = call_rule(method, l, contrasts, step=seed)
        top = l.argmax(-1)
        assert torch.isfinite(out.gather(-1, top[:, None])).all(), (method, seed)
        assert not torch.isnan(out).any()


@pytest.mark.parametrize("method", sorted(REGISTRY))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_any_dtype_gives_float32(method, dtype):
    g = torch.Generator().manual_seed(8)
    l = torch.randn(2, 30, generator=g).to(dtype)
    contrasts = [torch.randn(2, 30, generator=g).to(dtype) for _ in REGISTRY[method].contrast_roles]
    out = call_rule(method, l, contrasts, step=3)
    assert out.dtype == torch.float32 and out.shape == (2, 30)
    # and the same values as with float32 inputs (the inputs are cast first)
    ref = call_rule(method, l.float(), [c.float() for c in contrasts], step=3)
    assert torch.equal(out, ref)


def test_mixed_dtypes_between_branches():
    out = vcd(L.to(torch.bfloat16), T([1.0, 2.0, 0.0, 0.0]).double())
    assert_logits(out, [[3.0, 0.0, NEG_INF, 0.0]])


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_inputs_are_not_modified(method):
    g = torch.Generator().manual_seed(9)
    l = torch.randn(2, 30, generator=g)
    contrasts = [torch.randn(2, 30, generator=g) for _ in REGISTRY[method].contrast_roles]
    before = [l.clone()] + [c.clone() for c in contrasts]
    out = call_rule(method, l, contrasts, step=2)
    assert out.data_ptr() != l.data_ptr()
    for a, b in zip([l] + contrasts, before):
        assert torch.equal(a, b)


def test_batch_rows_are_independent():
    g = torch.Generator().manual_seed(10)
    l, c = torch.randn(5, 40, generator=g) * 3, torch.randn(5, 40, generator=g) * 3
    for fn in (vcd, savcd, code):
        full = fn(l, c)
        for i in range(5):
            assert torch.equal(full[i : i + 1], fn(l[i : i + 1], c[i : i + 1]))


def test_distribution_l2():
    a, b = T([0.0, 0.0]), torch.log(T([0.75, 0.25]))
    # ||[0.5, 0.5] - [0.75, 0.25]|| = sqrt(2 * 0.0625) = 0.353553
    assert distribution_l2(a, b).item() == pytest.approx(0.353553, abs=1e-6)
    assert distribution_l2(a, a).item() == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------------------------------
C = T([1.0, 2.0, 0.0, 0.0])
NAN = float("nan")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: vcd(L, C, alpha=-0.1), "alpha"),
        (lambda: vcd(L, C, alpha=NAN), "alpha"),
        (lambda: vcd(L, C, alpha=float("inf")), "alpha"),
        (lambda: vcd(L, C, alpha="1"), "alpha"),
        (lambda: vcd(L, C, alpha=True), "alpha"),
        (lambda: vcd(L, C, beta=0.0), "beta"),
        (lambda: vcd(L, C, beta=1.5), "beta"),
        (lambda: vcd(L, C, beta=-0.1), "beta"),
        (lambda: vcd(L, C, beta=NAN), "beta"),
        (lambda: icd(L, C, alpha=-1), "alpha"),
        (lambda: icd(L, C, beta=2), "beta"),
        (lambda: ritual(L, C, alpha=-3), "alpha"),
        (lambda: ritual(L, C, beta=0), "beta"),
        (lambda: ritual_vcd(L, C, C, alpha_pos=-1), "alpha_pos"),
        (lambda: ritual_vcd(L, C, C, alpha=NAN), "alpha"),
        (lambda: ritual_vcd(L, C, C, beta=1.01), "beta"),
        (lambda: ritual_vcd(L, C, T([1.0, 2.0])), "shape"),
        (lambda: savcd(L, C, gamma=-0.5), "gamma"),
        (lambda: savcd(L, C, gamma=NAN), "gamma"),
        (lambda: savcd(L, C, alpha=-1), "alpha"),
        (lambda: savcd_beta(L, gamma=-1), "gamma"),
        (lambda: code(L, C, exponent=0.0), "exponent"),
        (lambda: code(L, C, exponent=-0.7), "exponent"),
        (lambda: code(L, C, exponent=NAN), "exponent"),
        (lambda: code_divergence(L, C, exponent=0), "exponent"),
        (lambda: m3id(L, C, step=-1), "step"),
        (lambda: m3id(L, C, step=1.5), "step"),
        (lambda: m3id(L, C, step=True), "step"),
        (lambda: m3id(L, C, step=1, lam=-0.02), "lam"),
        (lambda: m3id(L, C, step=1, lam=NAN), "lam"),
        (lambda: m3id(L, C, step=1, beta=0), "beta"),
        (lambda: m3id_gamma(-2), "step"),
        (lambda: plausibility_mask(L, 0.0), "beta"),
        (lambda: plausibility_mask(L, NAN), "beta"),
        # tensors
        (lambda: vcd(L, T([1.0, 2.0, 3.0])), "shape"),
        (lambda: vcd(L, torch.zeros(2, 4)), "shape"),
        (lambda: vcd(torch.zeros(4), torch.zeros(4)), "2-D"),
        (lambda: vcd(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)), "2-D"),
        (lambda: vcd(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4)), "floating"),
        (lambda: vcd([[1.0, 2.0]], [[1.0, 2.0]]), "Tensor"),
        (lambda: vcd(torch.zeros(0, 4), torch.zeros(0, 4)), "non-empty"),
        (lambda: code(L, torch.zeros(1, 5)), "shape"),
        (lambda: m3id(L, torch.zeros(1, 3), step=0), "shape"),
        (lambda: savcd(L, torch.zeros(4)), "2-D"),
        (lambda: plausibility_mask(torch.zeros(3), 0.1), "2-D"),
    ],
)
def test_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_boundary_parameter_values_are_accepted():
    vcd(L, C, alpha=0.0, beta=1.0)
    savcd(L, C, alpha=0.0, gamma=0.0)
    m3id(L, C, step=0, lam=0.0)
    code(L, C, exponent=1e-3)
    vcd(L, C, alpha=torch.tensor(1.0), beta=torch.tensor(0.1))  # 0-dim tensors are numbers too


def test_rules_do_not_depend_on_global_state():
    g = torch.Generator().manual_seed(11)
    l, c = torch.randn(3, 20, generator=g), torch.randn(3, 20, generator=g)
    a = savcd(l, c)
    torch.manual_seed(1234)
    torch.randn(100)
    assert torch.equal(a, savcd(l, c))
    assert rules.__name__ == "decoding.rules"


# ---- DoLa's candidate layers -----------------------------------------------------------------------------------------
# transformers 4.52's buckets (``_dola_decoding``, generation/utils.py L2915-2947), worked by hand at the depths where
# its special cases act: tied embeddings start at 2 (1 for 2 layers), a lower half starting at its end is one layer.
@pytest.mark.parametrize("layers, tied, low, high", [
    (32, False, range(0, 16, 2), range(16, 32, 2)),
    (32, True, range(2, 16, 2), range(16, 32, 2)),
    (48, True, range(2, 20, 2), range(28, 48, 2)),
    (4, True, [2], [2]),
    (4, False, [0], [2]),
    (2, True, [1], [1]),
    (2, False, [0], [1]),
    (1, True, [0], [0]),
    (3, True, [2], [1]),  # transformers' lower list is empty there (and it fails): the start layer alone
])
def test_dola_candidate_layers_are_transformers_buckets(layers, tied, low, high):
    from decoding.methods import dola_candidate_layers

    assert dola_candidate_layers(layers, high=False, tied_embeddings=tied) == tuple(low)
    assert dola_candidate_layers(layers, high=True, tied_embeddings=tied) == tuple(high)


def test_dola_reads_the_tie_flag_where_transformers_does():
    """The top-level config's flag (InternVL's says tied where its text config says untied), True where the config
    has none (InstructBLIP's; 4.52's default)."""
    from transformers import InstructBlipConfig, InternVLConfig

    from decoding.methods import dola_tied_embeddings

    text = {"model_type": "qwen2"}
    internvl = InternVLConfig(text_config={**text, "tie_word_embeddings": False}, tie_word_embeddings=True)
    untied = InternVLConfig(text_config={**text, "tie_word_embeddings": True}, tie_word_embeddings=False)
    assert not internvl.get_text_config().tie_word_embeddings and dola_tied_embeddings(internvl)
    assert untied.get_text_config().tie_word_embeddings and not dola_tied_embeddings(untied)
    assert not hasattr(InstructBlipConfig(), "tie_word_embeddings") and dola_tied_embeddings(InstructBlipConfig())
