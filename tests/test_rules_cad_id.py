"""CAD, AdaCAD and Instructive Decoding: their rules against the spec's test vectors (methods-3.md §1, §2, computed
from the authors' formulas) and the records' bindings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from decoding import rules
from decoding.methods import get_method

L = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
U = torch.tensor([[0.0, 1.0, 2.0, 0.0]])


def test_cad_is_one_plus_alpha_times_l_minus_alpha_times_the_row_without_the_image():
    torch.testing.assert_close(rules.cad(L, U, alpha=0.5), torch.tensor([[3.0, 1.0, -1.0, -1.5]]))
    torch.testing.assert_close(rules.cad(L, U, alpha=0.0), L)
    assert torch.isfinite(rules.cad(L, U)).all()  # no cut as released
    cut = rules.cad(L, U, alpha=1.0, beta=0.1)  # l >= max(l) + log 0.1 = -0.303 drops the last token only
    assert torch.isinf(cut[0, 3]) and torch.equal(cut[0, :3], (2 * L - U)[0, :3])


def test_adacad_weight_is_the_release_s_jsd_and_its_floor():
    assert float(rules.adacad_weight(L, U)[0]) == pytest.approx(0.239350, abs=1e-6)
    p, q = L.softmax(-1), U.softmax(-1)
    m = (0.5 * (p + q)).log()  # get_jsd, batchmean over one row
    released = 0.5 * (F.kl_div(m, p, reduction="batchmean") + F.kl_div(m, q, reduction="batchmean"))
    assert float(rules.adacad_weight(L, U)[0]) == pytest.approx(float(released), abs=1e-7)
    assert float(rules.adacad_weight(L, L)[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(rules.adacad_weight(L, U, threshold=0.3)[0]) == pytest.approx(0.3)
    apart = torch.tensor([[100.0, -100.0]]), torch.tensor([[-100.0, 100.0]])  # disjoint: JSD at its ln 2 bound
    assert float(rules.adacad_weight(*apart)[0]) == pytest.approx(math.log(2), abs=1e-6)


def test_adacad_vectors_and_rows_stay_independent():
    torch.testing.assert_close(rules.adacad(L, U), torch.tensor([[2.478699, 1.0, -0.478699, -1.239350]]))
    torch.testing.assert_close(rules.adacad(L, U, threshold=0.3), torch.tensor([[2.6, 1.0, -0.6, -1.3]]))
    torch.testing.assert_close(rules.adacad(L, L), L)  # the image changes nothing: alpha_t = 0
    both = rules.adacad(torch.cat([L, L]), torch.cat([U, L]))
    torch.testing.assert_close(both, torch.cat([rules.adacad(L, U), L]))


@pytest.mark.parametrize("call, match", [
    (lambda: rules.cad(L, U, alpha=-1.0), "alpha must be >= 0"),
    (lambda: rules.cad(L, U, beta=1.5), r"beta must be in \[0, 1\]"),
    (lambda: rules.adacad(L, U, threshold=-0.1), "threshold must be >= 0"),
    (lambda: rules.adacad(L, U[:, :3]), "shape mismatch"),
])
def test_bad_arguments_are_refused_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_adacad_reports_its_weight_and_cad_none():
    adacad, cad = get_method("adacad"), get_method("cad")
    out = adacad.rule({"original": L, "text_only": U}, 3, adacad.defaults)
    assert out.scalars == {"contrast_weight": pytest.approx(0.239350, abs=1e-6)}
    assert cad.defaults == {"alpha": 1.0, "beta": 0.0} and adacad.defaults == {"threshold": 0.0, "beta": 0.0}
    assert cad.rule({"original": L, "text_only": U}, 0, cad.defaults).scalars == {}
