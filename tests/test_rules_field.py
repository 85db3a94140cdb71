"""Tests of the methods-2 rules in decoding.rules (PAI, SID, AvisC, VACoDe, DoLa, APC-only, OLM, OPERA's column
scores): hand-computed vectors with the arithmetic in comments, the worked examples of the Mirage controls,
properties (argmax survives, inputs unmodified, float32 out, rows independent, no host sync) and argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from logits import NEG_INF, T, assert_logits

from decoding.rules import (
    apc_only,
    avisc,
    avisc_blind_tokens,
    dola,
    dola_select_layer,
    olm,
    opera_column_scores,
    pai_amplify,
    pai_cfg,
    sid,
    sid_keep_tokens,
    vacode_choice,
    vcd,
)

# Shared example (as in test_rules.py): l = [2, 1, -1, 0], l' = [1, 2, 0, 0].
# logsumexp(l)  = ln(e^2 + e + e^-1 + 1) = ln(7.389056 + 2.718282 + 0.367879 + 1) = ln 11.475217 = 2.440189
# logsumexp(l') = ln(e + e^2 + 1 + 1) = ln 12.107338 = 2.493812
# s = log_softmax(l)  = [-0.440189, -1.440189, -3.440189, -2.440189]
# u = log_softmax(l') = [-1.493812, -0.493812, -2.493812, -2.493812]
# beta = 0.1 cut: max + ln 0.1 = max - 2.302585 -> token 2 is out (l: -1 < -0.302585; s: -3.44 < -2.742774).
L = T([2.0, 1.0, -1.0, 0.0])
C = T([1.0, 2.0, 0.0, 0.0])
LSE_L, LSE_C = 2.440189, 2.493812


def test_shared_constants():
    assert torch.logsumexp(L, -1).item() == pytest.approx(LSE_L, abs=1e-6)
    assert torch.logsumexp(C, -1).item() == pytest.approx(LSE_C, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# PAI
# ---------------------------------------------------------------------------------------------------------------------
def test_pai_cfg_hand():
    # gamma = 1.1: out = 1.1 s - 0.1 u
    # = [-0.484208 + 0.149381, -1.584208 + 0.049381, ., -2.684208 + 0.249381] = [-0.334827, -1.534827, ., -2.434827]
    assert_logits(pai_cfg(L, C), [[-0.334827, -1.534827, NEG_INF, -2.434827]])
    # gamma = 2 (the .py default): out = 2 s - u = [-0.880378 + 1.493812, -2.880378 + 0.493812, ., -4.880378 + 2.493812]
    # = [0.613434, -2.386566, ., -2.386566]
    assert_logits(pai_cfg(L, C, gamma=2.0), [[0.613434, -2.386566, NEG_INF, -2.386566]])
    # beta = 0.5: cut s < -0.440189 - 0.693147 = -1.133336 -> only token 0
    assert_logits(pai_cfg(L, C, gamma=2.0, beta=0.5), [[0.613434, NEG_INF, NEG_INF, NEG_INF]])


def test_pai_cfg_gamma_one_is_log_softmax_without_cut():
    # CFG.py L30-31: guidance_scale == 1 returns log_softmax(l) itself, nothing masked
    assert_logits(pai_cfg(L, C, gamma=1.0), [[-0.440189, -1.440189, -3.440189, -2.440189]])
    # gamma = 0 gives u on the plausible set (the cut is still the original's)
    assert_logits(pai_cfg(L, C, gamma=0.0), [[-1.493812, -0.493812, NEG_INF, -2.493812]])


def test_pai_cfg_same_distribution_from_raw_or_normalised_inputs():
    # log_softmax first: shifting either branch by a constant changes nothing
    torch.testing.assert_close(pai_cfg(L + 7.0, C - 3.0), pai_cfg(L, C))


def test_pai_amplify_hand():
    scores = T([1.0, -2.0, NEG_INF, 0.5])
    mask = torch.tensor([False, True, True, True])
    # column 0 not an image column: 1 stays; -2 + 0.2 * 2 = -1.6; -inf stays -inf (no NaN); 0.5 + 0.2 * 0.5 = 0.6
    assert_logits(pai_amplify(scores, mask), [[1.0, -1.6, NEG_INF, 0.6]])
    # alpha = 1: positive doubled, negative to 0: [1, 0, -inf, 1]
    assert_logits(pai_amplify(scores, mask, alpha=1.0), [[1.0, 0.0, NEG_INF, 1.0]])
    assert_logits(pai_amplify(scores, mask, alpha=0.0), scores)


def test_pai_amplify_special_values_and_clamped_mask():
    # +inf stays +inf, NaN stays NaN, -inf stays -inf; the release's finfo.min clamp is raised by alpha|.|:
    # float16 min -65504 -> -65504 + 0.2 * 65504 = -52403.2 (still nothing after softmax)
    scores = torch.tensor([[float("inf"), float("nan"), NEG_INF, -65504.0]], dtype=torch.float16)
    out = pai_amplify(scores, torch.ones(4, dtype=torch.bool))
    assert out.dtype == torch.float32
    assert out[0, 0] == float("inf") and torch.isnan(out[0, 1]) and out[0, 2] == NEG_INF
    assert out[0, 3].item() == pytest.approx(-52403.2, rel=1e-6)


def test_pai_amplify_broadcasting_and_last_row_use():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 4, 6, generator=g)  # (batch, heads, queries, keys)
    mask = torch.tensor([False, False, True, True, True, False])
    # as PAI: only the last query row, image columns 2..4, all heads
    expected = scores.clone()
    expected[:, :, -1, 2:5] = scores[:, :, -1, 2:5] + 0.2 * scores[:, :, -1, 2:5].abs()
    edited = scores.clone()
    edited[:, :, -1] = pai_amplify(scores[:, :, -1], mask)
    torch.testing.assert_close(edited, expected)
    # per-row image spans: (batch, 1, keys) broadcasts over heads
    rows = torch.zeros(2, 1, 6, dtype=torch.bool)
    rows[0, 0, 1] = True
    rows[1, 0, 4] = True
    out = pai_amplify(scores[:, :, -1], rows)
    last = scores[:, :, -1]
    torch.testing.assert_close(out[0, :, 1], last[0, :, 1] + 0.2 * last[0, :, 1].abs())
    torch.testing.assert_close(out[0, :, 4], last[0, :, 4])
    torch.testing.assert_close(out[1, :, 4], last[1, :, 4] + 0.2 * last[1, :, 4].abs())
    # image scores never go down
    assert bool((pai_amplify(last, mask) >= last).all())


# ---------------------------------------------------------------------------------------------------------------------
# SID
# ---------------------------------------------------------------------------------------------------------------------
def test_sid_hand():
    # alpha = 0.5 (what the release runs): 1.5 l - 0.5 l' = [3 - 0.5, 1.5 - 1, ., 0 - 0] = [2.5, 0.5, ., 0]
    assert_logits(sid(L, C), [[2.5, 0.5, NEG_INF, 0.0]])
    # alpha = 1: 2 l - l' = [3, 0, ., 0]
    assert_logits(sid(L, C, alpha=1.0), [[3.0, 0.0, NEG_INF, 0.0]])
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(3, 20, generator=g), torch.randn(3, 20, generator=g)
    assert torch.equal(sid(a, b, alpha=0.7, beta=0.2), vcd(a, b, alpha=0.7, beta=0.2))


def test_sid_keep_tokens_hand():
    a = T([0.4, 0.1, 0.3, 0.1])[0]
    # two smallest: 0.1 (index 1), 0.1 (index 3)
    assert sid_keep_tokens(a, k=2).tolist() == [1, 3]
    # three smallest: 0.1, 0.1, 0.3 -> indices {1, 3, 2}, returned ascending
    assert sid_keep_tokens(a, k=3).tolist() == [1, 2, 3]
    # k larger than the count keeps all; k = 0 keeps none
    assert sid_keep_tokens(a, k=10).tolist() == [0, 1, 2, 3]
    assert sid_keep_tokens(a, k=0).tolist() == []
    assert sid_keep_tokens(a, k=2).dtype == torch.int64


def test_sid_keep_tokens_ties_lower_index_first():
    # three tokens at 0.1: the lower indices win the two places
    assert sid_keep_tokens(torch.tensor([0.1, 0.2, 0.1, 0.1]), k=2).tolist() == [0, 2]
    assert sid_keep_tokens(torch.full((6,), 0.5), k=3).tolist() == [0, 1, 2]


def test_sid_keep_tokens_matches_topk_smallest_and_rows():
    g = torch.Generator().manual_seed(4)
    a = torch.rand(3, 576, generator=g)  # distinct values: topk is unambiguous
    out = sid_keep_tokens(a, k=100)
    assert out.shape == (3, 100)
    for row in range(3):
        expected = torch.topk(a[row], 100, largest=False).indices.sort().values
        assert torch.equal(out[row], expected)
        assert torch.equal(sid_keep_tokens(a[row], k=100), out[row])
    assert bool((out[:, 1:] > out[:, :-1]).all())  # ascending


# ---------------------------------------------------------------------------------------------------------------------
# AvisC
# ---------------------------------------------------------------------------------------------------------------------
def test_avisc_hand():
    # 2 l - l' = [3, 0, ., 0]; alpha = 2.5 (AMBER script): 3.5 l - 2.5 l' = [7 - 2.5, 3.5 - 5, ., 0] = [4.5, -1.5, ., 0]
    assert_logits(avisc(L, C), [[3.0, 0.0, NEG_INF, 0.0]])
    assert_logits(avisc(L, C, alpha=2.5), [[4.5, -1.5, NEG_INF, 0.0]])


def test_avisc_nan_contrast_row_falls_back_to_original_per_row():
    nan_row = T([float("nan"), 0.0, 0.0, 0.0])
    out = avisc(torch.cat([L, L]), torch.cat([nan_row, C]))
    # row 0: l' := l, so 2l - l = l on the plausible set; row 1 untouched by row 0's NaN
    assert_logits(out[:1], [[2.0, 1.0, NEG_INF, 0.0]])
    assert_logits(out[1:], [[3.0, 0.0, NEG_INF, 0.0]])


# 3 layers x 4 image tokens.
# layer sums [0.9, 0.25, 0.8], total 1.95 -> shares [0.461538, 0.128205, 0.410256]
# sorted desc [0.4615 (L0), 0.4103 (L2), 0.1282 (L1)], cumsum [0.4615, 0.8718, 1.0]
AVISC_A = T([0.1, 0.1, 0.6, 0.1], [0.05, 0.05, 0.1, 0.05], [0.2, 0.1, 0.4, 0.1])


def test_avisc_blind_tokens_hand():
    # gamma 0.5: #{cumsum < 0.5} = 1 -> k = 2 -> layers 0 and 2
    # m = mean([0.1, 0.1, 0.6, 0.1], [0.2, 0.1, 0.4, 0.1]) = [0.15, 0.1, 0.5, 0.1]; mean(m) = 0.2125
    # deviations [-0.0625, -0.1125, 0.2875, -0.1125]; squares sum 0.111875; / 3 = 0.037292; std = 0.193111
    # threshold 0.2125 + 0.193111 = 0.405611 -> only token 2 (0.5) is blind (True = kept intact)
    out = avisc_blind_tokens(AVISC_A, gamma=0.5, lam=1.0)
    assert out.dtype == torch.bool
    assert out.tolist() == [False, False, True, False]
    m = T([0.15, 0.1, 0.5, 0.1])[0]
    assert (m.mean() + m.std()).item() == pytest.approx(0.405611, abs=1e-5)


def test_avisc_blind_tokens_layer_count():
    # gamma 0: #{cumsum < 0} = 0 -> k = 1 -> layer 0 only: m = [0.1, 0.1, 0.6, 0.1], mean 0.225,
    # deviations [-0.125, -0.125, 0.375, -0.125], squares 0.1875 / 3 = 0.0625, std 0.25 -> threshold 0.475 -> token 2
    assert avisc_blind_tokens(AVISC_A, gamma=0.0, lam=1.0).tolist() == [False, False, True, False]
    # lam 0.5 with layer 0 only: threshold 0.225 + 0.125 = 0.35 -> still token 2; with lam 0 threshold = mean 0.225
    assert avisc_blind_tokens(AVISC_A, gamma=0.0, lam=0.0).tolist() == [False, False, True, False]
    # gamma 1: all three layers (k clamped to the layer count); m = [0.116667, 0.083333, 0.366667, 0.083333],
    # mean 0.1625, std 0.137015, threshold 0.299515 -> token 2
    assert avisc_blind_tokens(AVISC_A, gamma=1.0, lam=1.0).tolist() == [False, False, True, False]


def test_avisc_blind_tokens_threshold_and_lambda():
    # one layer; m = [0.5, 0.25, 0.25, 0] (exact in binary), mean 0.25
    a = T([0.5, 0.25, 0.25, 0.0])
    # lam 0: threshold = mean = 0.25; tokens equal to it are kept (only "< threshold" is masked)
    assert avisc_blind_tokens(a, lam=0.0).tolist() == [True, True, True, False]
    # std: deviations [0.25, 0, 0, -0.25] -> 0.125 / 3 = 0.041667 -> 0.204124; lam 1: threshold 0.454124
    assert avisc_blind_tokens(a, lam=1.0).tolist() == [True, False, False, False]
    # lam 2: threshold 0.658248 > max -> nothing blind, every image token overwritten in the contrast row
    assert avisc_blind_tokens(a, lam=2.0).tolist() == [False, False, False, False]


def test_avisc_blind_tokens_layer_ties_go_to_the_lower_layer():
    # layer sums 0.4, 0.4, 0.1 (shares 0.444, 0.444, 0.111); gamma 0.3 -> k = 1: layer 0 (not layer 1)
    # m = [0.3, 0.1]: mean 0.2, unbiased std sqrt(0.02 / 1) = 0.141421; lam 0.5 -> threshold 0.270711 -> token 0
    a = T([0.3, 0.1], [0.1, 0.3], [0.05, 0.05])
    assert avisc_blind_tokens(a, gamma=0.3, lam=0.5).tolist() == [True, False]


def test_avisc_blind_tokens_single_token_and_random_rows():
    # one image token: unbiased std is NaN, the release masks nothing -> True
    assert avisc_blind_tokens(T([0.3], [0.2]), gamma=0.5).tolist() == [True]
    g = torch.Generator().manual_seed(5)
    a = torch.rand(32, 40, generator=g) ** 3
    out = avisc_blind_tokens(a)
    # independent check: explicit topk over distinct shares, then the threshold
    share = a.sum(-1) / a.sum()
    k = int((torch.cumsum(share.sort(descending=True).values, 0) < 0.5).sum()) + 1
    m = a[share.topk(k).indices].mean(0)
    assert torch.equal(out, m >= m.mean() + m.std())


# ---------------------------------------------------------------------------------------------------------------------
# VACoDe
# ---------------------------------------------------------------------------------------------------------------------
def test_vacode_choice_hand():
    # p = softmax(l) = e^l / 11.475217 = [0.643914, 0.236883, 0.032059, 0.087144]
    # candidate 0 = l itself: d = 0
    # candidate 1 = l': q = [0.224515, 0.610296, 0.082595, 0.082595]; diff [0.419399, -0.373413, -0.050536, 0.004549];
    #   d = sqrt(0.175895 + 0.139437 + 0.002554 + 0.000021) = 0.563832
    # candidate 2 = uniform: diff [0.393914, -0.013117, -0.217941, -0.162856]; d = sqrt(0.229360) = 0.478916
    cands = torch.cat([L, C, torch.zeros(1, 4)])
    out = vacode_choice(L, cands)
    assert out.dim() == 0 and out.dtype == torch.int64 and int(out) == 1
    assert int(vacode_choice(L, cands[[0, 2]])) == 1  # without l': the uniform one (index 1 of the two)


def test_vacode_choice_ties_first_wins_and_nan_never_wins():
    cands = torch.cat([L, C, C, L])
    assert int(vacode_choice(L, cands)) == 1
    nan_first = torch.cat([T([float("nan"), 0.0, 0.0, 0.0]), L, C])
    assert int(vacode_choice(L, nan_first)) == 2


# ---------------------------------------------------------------------------------------------------------------------
# DoLa
# ---------------------------------------------------------------------------------------------------------------------
def _voidism_criterion(p, q):
    """Reference (written here from the formula): 0.5 * (mean_v M (log M - log p) + mean_v M (log M - log q))."""
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl1 = sum(x * math.log(x / y) for x, y in zip(m, p)) / len(p)
    kl2 = sum(x * math.log(x / y) for x, y in zip(m, q)) / len(p)
    return 0.5 * (kl1 + kl2)


def _textbook_jsd(p, q):
    m = [(a + b) / 2 for a, b in zip(p, q)]
    return 0.5 * (sum(x * math.log(x / y) for x, y in zip(p, m)) + sum(x * math.log(x / y) for x, y in zip(q, m)))


def test_dola_select_layer_hand():
    # final p = [0.5, 0.5]; candidates q_A = [0.75, 0.25], q_B = [0.25, 0.75] (same distance), q_C = [0.9, 0.1]
    # A: M = [0.625, 0.375]; kl1 = (0.625 ln 1.25 + 0.375 ln 0.75) / 2 = (0.139465 - 0.107881) / 2 = 0.015792
    #    kl2 = (0.625 ln(0.625/0.75) + 0.375 ln(0.375/0.25)) / 2 = (-0.113951 + 0.152049) / 2 = 0.019049
    #    criterion = 0.5 * (0.015792 + 0.019049) = 0.017421 (= B's by symmetry); C is farther
    assert _voidism_criterion([0.5, 0.5], [0.75, 0.25]) == pytest.approx(0.017421, abs=1e-6)
    final = torch.log(T([0.5, 0.5]))
    qa, qb, qc = (torch.log(T(q)) for q in ([0.75, 0.25], [0.25, 0.75], [0.9, 0.1]))
    assert dola_select_layer(final, torch.stack([qa, qb])).tolist() == [0]  # tie: first candidate
    assert dola_select_layer(final, torch.stack([qa, qb, qc])).tolist() == [2]
    assert dola_select_layer(final, torch.stack([final, qb])).tolist() == [1]  # the final layer itself has JSD 0


def test_dola_select_layer_is_voidisms_criterion_not_the_textbook_jsd():
    # p = [0.5, 0.3, 0.2], q1 = [0.05, 0.25, 0.7], q2 = [0.1, 0.1, 0.8]
    # textbook JSD: q1 0.181527 < q2 0.195311 -> would pick q2
    # voidism (F.kl_div(log p, M) = KL(M || p), times 3 for the mean): q1 0.236388/3 > q2 0.228508/3 -> picks q1
    p, q1, q2 = [0.5, 0.3, 0.2], [0.05, 0.25, 0.7], [0.1, 0.1, 0.8]
    assert _textbook_jsd(p, q1) == pytest.approx(0.181527, abs=1e-6)
    assert _textbook_jsd(p, q2) == pytest.approx(0.195311, abs=1e-6)
    assert 3 * _voidism_criterion(p, q1) == pytest.approx(0.236388, abs=1e-6)
    assert 3 * _voidism_criterion(p, q2) == pytest.approx(0.228508, abs=1e-6)
    out = dola_select_layer(torch.log(T(p)), torch.stack([torch.log(T(q1)), torch.log(T(q2))]))
    assert out.tolist() == [0]


def test_dola_select_layer_rows_independent():
    g = torch.Generator().manual_seed(6)
    final = torch.randn(4, 30, generator=g) * 2
    cands = torch.randn(5, 4, 30, generator=g) * 2
    out = dola_select_layer(final, cands)
    assert out.shape == (4,) and out.dtype == torch.int64
    for row in range(4):
        assert dola_select_layer(final[row : row + 1], cands[:, row : row + 1]).tolist() == [out[row].item()]
        crit = [_voidism_criterion(*(torch.softmax(t, -1).double().tolist() for t in (final[row], cands[j, row])))
                for j in range(5)]
        assert out[row].item() == max(range(5), key=lambda j: crit[j])


def test_dola_hand():
    # f - b = (l - lse(l)) - (l' - lse(l')) = (l - l') + (2.493812 - 2.440189) = [1, -1, ., 0] + 0.053623
    assert_logits(dola(L, C), [[1.053623, -0.946377, NEG_INF, 0.053623]])
    # beta = 0.5: f < max f - 0.693147 is out -> only token 0
    assert_logits(dola(L, C, beta=0.5), [[1.053623, NEG_INF, NEG_INF, NEG_INF]])
    # premature == final: 0 on the plausible set
    assert_logits(dola(L, L), [[0.0, 0.0, NEG_INF, 0.0]])
    # beta = 1 keeps the maximum only (min_tokens_to_keep = 1: never empty)
    assert_logits(dola(L, C, beta=1.0), [[1.053623, NEG_INF, NEG_INF, NEG_INF]])


# ---------------------------------------------------------------------------------------------------------------------
# The Mirage controls: APC-only and OLM (worked examples of methods-2 section 7)
# ---------------------------------------------------------------------------------------------------------------------
def test_apc_only_worked_example():
    l = T([2.0, 1.0, 0.0, -1.0])
    # beta = 0.2: cut 2 + ln 0.2 = 2 - 1.609438 = 0.390562 -> [2, 1, -inf, -inf] -> softmax [0.731059, 0.268941, 0, 0]
    out = apc_only(l)
    assert_logits(out, [[2.0, 1.0, NEG_INF, NEG_INF]])
    torch.testing.assert_close(torch.softmax(out, -1), T([0.731059, 0.268941, 0.0, 0.0]), atol=1e-6, rtol=0)
    # beta = 0.1: cut -0.302585 -> token 2 (0) stays; softmax of [2, 1, 0] = [0.665241, 0.244728, 0.090031, 0]
    out = apc_only(l, beta=0.1)
    assert_logits(out, [[2.0, 1.0, 0.0, NEG_INF]])
    torch.testing.assert_close(torch.softmax(out, -1), T([0.665241, 0.244728, 0.090031, 0.0]), atol=1e-6, rtol=0)


def test_apc_only_is_vcd_with_identical_branches():
    g = torch.Generator().manual_seed(7)
    l = torch.randn(3, 25, generator=g) * 2
    # (1 + alpha) l - alpha l = l up to rounding; the cut is the same
    torch.testing.assert_close(apc_only(l, beta=0.2), vcd(l, l, alpha=1.0, beta=0.2))


def test_olm_worked_examples():
    # vocab [Yes, No, x, y]
    # l = [1, 1.2, 0, -1]: p = [0.367024, 0.448284, 0.135021, 0.049671]; Yes + No = 0.815308 > 0.2 and
    #   |Yes - No| = 0.081260 < 0.5 -> Yes (0), although argmax is No (1)
    p = torch.softmax(T([1.0, 1.2, 0.0, -1.0]), -1)
    torch.testing.assert_close(p, T([0.367024, 0.448284, 0.135021, 0.049671]), atol=1e-6, rtol=0)
    assert olm(T([1.0, 1.2, 0.0, -1.0]), yes_id=0, no_id=1).tolist() == [0]
    # l = [0, 3, 0, 0]: p = [0.043317, 0.870049, 0.043317, 0.043317]; gap 0.826732 >= 0.5 -> argmax No (1)
    assert olm(T([0.0, 3.0, 0.0, 0.0]), yes_id=0, no_id=1).tolist() == [1]
    # l = [-3, -3, 2, 2]: Yes + No = 2 e^-3 / (2 e^-3 + 2 e^2) = 0.006693 <= 0.2 -> argmax, first of the tie: 2
    assert olm(T([-3.0, -3.0, 2.0, 2.0]), yes_id=0, no_id=1).tolist() == [2]
    # the three as one batch: rows are independent
    batch = T([1.0, 1.2, 0.0, -1.0], [0.0, 3.0, 0.0, 0.0], [-3.0, -3.0, 2.0, 2.0])
    out = olm(batch, yes_id=0, no_id=1)
    assert out.tolist() == [0, 1, 2] and out.dtype == torch.int64


def test_olm_thresholds_and_ids():
    l = T([1.0, 1.2, 0.0, -1.0])
    assert olm(l, 0, 1, mass=0.9).tolist() == [1]  # 0.815 is not > 0.9
    assert olm(l, 0, 1, margin=0.05).tolist() == [1]  # 0.081 is not < 0.05
    assert olm(l, 0, 1, margin=0.0).tolist() == [1]  # margin 0 never nudges
    # ids anywhere in the vocabulary: Yes = 3, No = 2 on l = [5, -1, 0.2, 0] (p[3] = 0.0065, p[2] = 0.0080: mass
    # 0.0145 <= 0.2 -> argmax 0); with mass 0.01 the nudge fires (gap 0.0015 < 0.5) -> 3
    l2 = T([5.0, -1.0, 0.2, 0.0])
    assert olm(l2, yes_id=3, no_id=2).tolist() == [0]
    assert olm(l2, yes_id=3, no_id=2, mass=0.01).tolist() == [3]


# ---------------------------------------------------------------------------------------------------------------------
# OPERA
# ---------------------------------------------------------------------------------------------------------------------
def test_opera_column_scores_hand():
    # 50 A = [[50, ., .], [25, 25, .], [10, 15, 25]]
    # phi_0 = 1e-7 * 50 * 25 * 10 = 1.25e-3; phi_1 = 1e-7 * 25 * 15 = 3.75e-5; phi_2 = 1e-7 * 25 = 2.5e-6
    a = T([1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5])
    out = opera_column_scores(a)
    assert out.dtype == torch.float32 and out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor([1.25e-3, 3.75e-5, 2.5e-6]), rtol=1e-6, atol=0)
    score, loc = out.max(-1)
    assert loc.item() == 0 and score.item() == pytest.approx(1.25e-3, rel=1e-6)
    # entries above the diagonal are ignored
    junk = a + torch.triu(torch.full((3, 3), 9.0), diagonal=1)
    torch.testing.assert_close(opera_column_scores(junk), out, rtol=0, atol=0)
    # scale 1: phi_j = 1e-7 * prod A: [1e-7 * 0.1, 1e-7 * 0.15, 1e-7 * 0.5]
    torch.testing.assert_close(opera_column_scores(a, scale=1.0), torch.tensor([1e-8, 1.5e-8, 5e-8]), rtol=1e-6, atol=0)


def test_opera_column_scores_zero_attention_and_window_of_one():
    # a zero entry zeroes its column: column 0 has A_10 = 0
    out = opera_column_scores(T([1.0, 0.0], [0.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([0.0, 5e-6]), rtol=1e-6, atol=0)
    torch.testing.assert_close(opera_column_scores(T([1.0])), torch.tensor([5e-6]), rtol=1e-6, atol=0)


def test_opera_column_scores_no_float16_underflow_or_overflow():
    # 30 x 30, every lower entry 0.01 (50 A = 0.5): phi_0 = 1e-7 * 0.5^30 = 9.31e-17 (float16 would store 0)
    w = 30
    a = torch.full((w, w), 0.01).tril()
    out = opera_column_scores(a)
    assert out[0].item() == pytest.approx(1e-7 * 0.5**30, rel=1e-5)
    assert out[-1].item() == pytest.approx(1e-7 * 0.5, rel=1e-5)
    assert out.argmax().item() == w - 1  # the shortest product is the largest: true argmax, no all-zero tie
    # 4 x 4 of ones: product 50^4 = 6.25e6 overflows float16 (65504); phi_0 = 0.625 here
    out = opera_column_scores(torch.ones(4, 4).tril())
    torch.testing.assert_close(out, torch.tensor([0.625, 1.25e-2, 2.5e-4, 5e-6]), rtol=1e-6, atol=0)
    assert bool(torch.isinf((50.0 * torch.ones(4, dtype=torch.float16)).prod()))  # the release's intermediate


def test_opera_column_scores_batched_matches_loop():
    g = torch.Generator().manual_seed(8)
    a = torch.rand(2, 3, 6, 6, generator=g).tril()  # (beams, candidates, W, W)
    a = a / a.sum(-1, keepdim=True)
    out = opera_column_scores(a)
    assert out.shape == (2, 3, 6)
    ref = torch.stack([1e-7 * (50.0 * a.double())[..., j:, j].prod(-1) for j in range(6)], -1)
    torch.testing.assert_close(out, ref.float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(opera_column_scores(a[1, 2]), out[1, 2])


# ---------------------------------------------------------------------------------------------------------------------
# properties shared by the rules
# ---------------------------------------------------------------------------------------------------------------------
LOGIT_RULES = {
    "pai_cfg": lambda l, c: pai_cfg(l, c, gamma=1.5),
    "sid": lambda l, c: sid(l, c),
    "avisc": lambda l, c: avisc(l, c, alpha=2.5),
    "dola": lambda l, c: dola(l, c),
    "apc_only": lambda l, c: apc_only(l),
}


@pytest.mark.parametrize("name", sorted(LOGIT_RULES))
def test_argmax_of_original_survives_the_cut(name):
    g = torch.Generator().manual_seed(9)
    l = torch.randn(16, 50, generator=g) * 4
    c = torch.randn(16, 50, generator=g) * 4
    out = LOGIT_RULES[name](l, c)
    top = l.argmax(-1)
    assert torch.isfinite(out.gather(1, top[:, None])).all()
    assert bool(torch.isneginf(out).any())  # something is cut at these scales


@pytest.mark.parametrize("name", sorted(LOGIT_RULES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_any_float_dtype_gives_float32(name, dtype):
    out = LOGIT_RULES[name](L.to(dtype), C.to(dtype))
    assert out.dtype == torch.float32 and out.shape == (1, 4)
    assert_logits(out, LOGIT_RULES[name](L, C), tol=1e-2)


@pytest.mark.parametrize("name", sorted(LOGIT_RULES))
def test_logit_rules_rows_independent(name):
    g = torch.Generator().manual_seed(10)
    l = torch.randn(5, 30, generator=g) * 3
    c = torch.randn(5, 30, generator=g) * 3
    out = LOGIT_RULES[name](l, c)
    for row in range(5):
        torch.testing.assert_close(LOGIT_RULES[name](l[row : row + 1], c[row : row + 1]), out[row : row + 1])


def test_other_outputs_any_float_dtype():
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert pai_amplify(L.to(dtype), torch.ones(4, dtype=torch.bool)).dtype == torch.float32
        assert opera_column_scores(torch.eye(3, dtype=dtype)).dtype == torch.float32
        assert sid_keep_tokens(L[0].to(dtype), 2).dtype == torch.int64
        assert avisc_blind_tokens(AVISC_A.to(dtype)).dtype == torch.bool
        assert int(vacode_choice(L.to(dtype), torch.cat([L, C]).to(dtype))) == 1
        assert olm(T([1.0, 1.2, 0.0, -1.0]).to(dtype), 0, 1).tolist() == [0]
        assert dola_select_layer(L.to(dtype), torch.stack([L, C]).to(dtype)).tolist() == [1]


def _all_calls(l, c):
    """Every new function once, on tensors derived from (l, c) of shape (2, 6)."""
    mask = torch.tensor([False, True, True, False, True, False], device=l.device)
    return [
        lambda: pai_cfg(l, c),
        lambda: pai_amplify(l, mask),
        lambda: sid(l, c),
        lambda: sid_keep_tokens(l, 3),
        lambda: avisc(l, c),
        lambda: avisc_blind_tokens(l.abs()),
        lambda: vacode_choice(l[:1], c),
        lambda: dola_select_layer(l, torch.stack([c, l])),
        lambda: dola(l, c),
        lambda: apc_only(l),
        lambda: olm(l, 0, 1),
        lambda: opera_column_scores(torch.softmax(l[:, :2], -1)),
    ]


def test_inputs_are_not_modified():
    g = torch.Generator().manual_seed(11)
    for dtype in (torch.float32, torch.float16):
        l = (torch.randn(2, 6, generator=g) * 3).to(dtype)
        c = (torch.randn(2, 6, generator=g) * 3).to(dtype)
        if dtype == torch.float32:
            c[1, 2] = float("nan")  # a NaN contrast row must not be "repaired" in place (AvisC's fallback)
        l0, c0 = l.clone(), c.clone()
        for call in _all_calls(l, c):
            call()
            assert torch.equal(l, l0) and torch.equal(c.nan_to_num(), c0.nan_to_num())
            assert torch.equal(torch.isnan(c), torch.isnan(c0))


def test_no_host_sync_runs_on_the_meta_device():
    # .item(), bool(tensor), nonzero() and data-dependent shapes fail on "meta" tensors: none of the rules needs them
    l = torch.zeros(2, 6, device="meta")
    for call in _all_calls(l, l):
        assert call().device.type == "meta"


# ---------------------------------------------------------------------------------------------------------------------
# argument validation: ValueError naming the argument
# ---------------------------------------------------------------------------------------------------------------------
_M4 = torch.ones(4, dtype=torch.bool)
BAD = [
    (lambda: pai_cfg(L, C, gamma=-1.0), "gamma"),
    (lambda: pai_cfg(L, C, gamma=float("nan")), "gamma"),
    (lambda: pai_cfg(L, C, beta=0.0), "beta"),
    (lambda: pai_cfg(L, T([1.0, 2.0, 3.0])), "text_only_logits"),
    (lambda: pai_cfg(L[0], C), "logits"),
    (lambda: pai_amplify([1.0, 2.0], _M4), "scores"),
    (lambda: pai_amplify(torch.ones(1, 4, dtype=torch.int64), _M4), "scores"),
    (lambda: pai_amplify(L, torch.ones(4)), "image_mask"),
    (lambda: pai_amplify(L, torch.ones(3, dtype=torch.bool)), "image_mask"),
    (lambda: pai_amplify(L, torch.ones(2, 4, dtype=torch.bool)), "image_mask"),
    (lambda: pai_amplify(L[0], torch.ones(1, 4, dtype=torch.bool)), "image_mask"),
    (lambda: pai_amplify(L, [True] * 4), "image_mask"),
    (lambda: pai_amplify(L, _M4, alpha=-0.2), "alpha"),
    (lambda: pai_amplify(L, _M4, alpha="0.2"), "alpha"),
    (lambda: sid(L, C, alpha=-0.5), "alpha"),
    (lambda: sid(L, C, beta=1.5), "beta"),
    (lambda: sid(L, [1.0, 2.0]), "contrast_logits"),
    (lambda: sid_keep_tokens(L[0], k=-1), "k"),
    (lambda: sid_keep_tokens(L[0], k=2.0), "k"),
    (lambda: sid_keep_tokens(L[0], k=True), "k"),
    (lambda: sid_keep_tokens(torch.tensor([1, 2, 3]), k=1), "image_attention"),
    (lambda: sid_keep_tokens(torch.tensor(0.5), k=1), "image_attention"),
    (lambda: avisc(L, C, alpha=-1.0), "alpha"),
    (lambda: avisc(L, C, beta=0.0), "beta"),
    (lambda: avisc(L, C.double().unsqueeze(0)), "contrast_logits"),
    (lambda: avisc_blind_tokens(AVISC_A[0]), "layer_image_attention"),
    (lambda: avisc_blind_tokens(AVISC_A.unsqueeze(0)), "layer_image_attention"),
    (lambda: avisc_blind_tokens(AVISC_A, gamma=1.5), "gamma"),
    (lambda: avisc_blind_tokens(AVISC_A, gamma=-0.1), "gamma"),
    (lambda: avisc_blind_tokens(AVISC_A, lam=-1.0), "lam"),
    (lambda: vacode_choice(torch.cat([L, L]), C), "first_logits"),
    (lambda: vacode_choice(L, T([1.0, 2.0, 3.0])), "candidate_first_logits"),
    (lambda: vacode_choice(L, C[0]), "candidate_first_logits"),
    (lambda: dola_select_layer(L, C), "candidate_logits"),
    (lambda: dola_select_layer(L, torch.zeros(2, 2, 4)), "candidate_logits"),
    (lambda: dola_select_layer(L[0], torch.zeros(2, 1, 4)), "final_logits"),
    (lambda: dola(L, C, beta=0.0), "beta"),
    (lambda: dola(L, T([1.0, 2.0, 3.0])), "premature_logits"),
    (lambda: dola(torch.zeros(1, 0), torch.zeros(1, 0)), "final_logits"),
    (lambda: apc_only(L, beta=-0.2), "beta"),
    (lambda: apc_only(torch.ones(1, 4, dtype=torch.int64)), "logits"),
    (lambda: olm(L, yes_id=4, no_id=1), "yes_id"),
    (lambda: olm(L, yes_id=0, no_id=-1), "no_id"),
    (lambda: olm(L, yes_id=0.0, no_id=1), "yes_id"),
    (lambda: olm(L, yes_id=2, no_id=2), "yes_id and no_id"),
    (lambda: olm(L, 0, 1, mass=-0.2), "mass"),
    (lambda: olm(L, 0, 1, margin=float("inf")), "margin"),
    (lambda: opera_column_scores(torch.ones(2, 3)), "local_attention"),
    (lambda: opera_column_scores(torch.ones(3)), "local_attention"),
    (lambda: opera_column_scores(torch.eye(3, dtype=torch.int64)), "local_attention"),
    (lambda: opera_column_scores(torch.eye(3), scale=0.0), "scale"),
]


@pytest.mark.parametrize("call, name", BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_bad_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_boundary_parameter_values_are_accepted():
    pai_cfg(L, C, gamma=0.0, beta=1.0)
    pai_amplify(L, _M4, alpha=0.0)
    sid(L, C, alpha=0.0, beta=1.0)
    sid_keep_tokens(L[0], k=torch.tensor(2))
    avisc(L, C, alpha=0.0, beta=1.0)
    avisc_blind_tokens(AVISC_A, gamma=0.0, lam=0.0)
    avisc_blind_tokens(AVISC_A, gamma=1.0)
    dola(L, C, beta=1.0)
    apc_only(L, beta=1.0)
    olm(L, yes_id=torch.tensor(3), no_id=0, mass=0.0, margin=0.0)
    opera_column_scores(torch.eye(2), scale=1e-3)
