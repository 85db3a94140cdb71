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


# ---- Instructive Decoding ------------------------------------------------------------------------------------------
N = torch.tensor([[0.0, 2.0, 0.0, 0.0]])


def test_instructive_decoding_adds_eps_times_the_noisy_branch_with_no_cut():
    torch.testing.assert_close(rules.instructive(L, N), torch.tensor([[2.0, 0.4, 0.0, -1.0]]))
    torch.testing.assert_close(rules.instructive(L, N, eps=0.0), L)
    # greedy, ID is ICD's form (1+a)l − a·l_n with a = 0.3/0.7 and no cut, scaled by the weights' sum 0.7
    torch.testing.assert_close(rules.instructive(L, U, eps=-0.3), 0.7 * rules.cad(L, U, alpha=0.3 / 0.7))
    with pytest.raises(ValueError, match="eps must be finite"):
        rules.instructive(L, N, eps=math.inf)


def test_trunc_shuf_keeps_sixty_percent_of_the_question_s_words_in_a_seeded_order():
    from decoding import branches

    question = "Is there a red square above the blue circle in the image?"
    words = question.split()
    noisy = branches.truncated_shuffled(question, 7)
    assert noisy.endswith(".") and len(noisy[:-1].split()) == int(0.6 * len(words))
    assert all(noisy[:-1].split().count(w) <= words.count(w) for w in noisy[:-1].split())
    assert noisy == branches.truncated_shuffled(question, 7) != branches.truncated_shuffled(question, 8)


@pytest.fixture(scope="module")
def plan_for(embedded_model, image):
    from decoding.methods import BranchRequest, plan_method

    question = "is there a red square in the image ?"  # the shapes world's words, as its tokenizer splits them
    request = BranchRequest(embedded_model, image, question, embedded_model.build_row(question, image), seed=5)
    return lambda **params: plan_method(request, "instructive", get_method("instructive").resolve(params))


def test_each_noisy_instruction_is_the_contrast_row_with_the_image(plan_for, embedded_model, image):
    from decoding import branches

    question, instruction = "is there a red square in the image ?", branches.ID_OPPOSITE_INSTRUCTION
    expected = {0: f"{instruction}\n{question}", 1: instruction, 2: "",
                3: branches.truncated_shuffled(question, 5)}
    for variant, text in expected.items():
        plan = plan_for(variant=variant)
        assert plan.info["noisy_instruction"] == text and plan.info["variant"] == branches.ID_VARIANTS[variant]
        row = plan.contrast_rows["noisy"]
        assert torch.equal(row.input_ids, embedded_model.build_row(text, image).input_ids)
        assert row.image_token_positions.numel() > 0  # the image is kept: only the instruction is noisy
    word = plan_for(variant=4).info["noisy_instruction"]
    assert word[:-1] in branches.vocabulary_words(embedded_model.tokenizer.convert_ids_to_tokens(
        list(range(len(embedded_model.tokenizer)))))


def test_the_page_says_when_the_embedded_model_cannot_read_the_instruction(plan_for):
    from decoding import branches

    record = get_method("instructive")
    default, blank = plan_for(), plan_for(variant=2)
    words = len(branches.ID_OPPOSITE_INSTRUCTION.split())  # English the 57-word shapes world does not have
    assert default.info["unknown_tokens"] >= words // 2 and blank.info["unknown_tokens"] == 0
    assert "unknown" in record.notes(default.info)[0].text and "no question" in record.notes(blank.info)[0].text
    with pytest.raises(ValueError, match="ID's instruction holds a character"):
        plan_for(instruction="bad \x00 text")
