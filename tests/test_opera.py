"""OPERA: its pure rules (penalty, rollback decision), the engine's beam path against transformers' own beam search
on every tiny family, and the penalty and the retrospection changing what the beams choose."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from decoding import answer_all, compare, rules
from decoding.beam import BeamSearch, Opera
from decoding.methods import get_method
from models import TINY_FAMILIES, build_tiny, load_model

QUESTION = "Is there a red circle in the picture?"


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def model(request, tmp_path_factory):
    return load_model(build_tiny(request.param, tmp_path_factory.mktemp(request.param), seed=1))


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return load_model(build_tiny("llava", tmp_path_factory.mktemp("llava-opera"), seed=1))


# ---- the rules ------------------------------------------------------------------------------------------------------
def test_candidates_keep_the_top_logits_lowered_by_their_penalty():
    l = torch.tensor([[0.5, 3.0, 2.0, -1.0, 1.0]])
    out = rules.opera_candidates(l, torch.tensor([[1.0, -2.0, 0.5]]), num_candidates=3, penalty_weight=2.0)
    assert out.tolist() == [[-999.0, 1.0, 6.0, -999.0, 0.0]]  # 3 - 2*1, 2 + 2*2, 1 - 2*0.5
    assert rules.opera_candidates(l, num_candidates=3).tolist() == [[-999.0, 3.0, 2.0, -999.0, 1.0]]
    with pytest.raises(ValueError, match="penalty must have shape"):
        rules.opera_candidates(l, torch.zeros(1, 2), num_candidates=3)
    assert torch.equal(rules.opera_candidates(l, num_candidates=6), l)  # C above the vocabulary: every token


def test_the_penalty_is_an_image_bonus_up_to_ten_tokens_then_the_column_score():
    for w in (10, 11):
        a = torch.full((w, w), 0.5).tril()
        pen, loc = rules.opera_penalty(a, torch.tensor(0.25), scale=4.0)
        phi = rules.opera_column_scores(a, scale=4.0)  # 2^(W-j) grows with the column's length: column 0 leads
        assert int(loc) == 0 and float(phi[0]) == pytest.approx(1e-7 * 2.0**w)
        assert float(pen) == pytest.approx(-0.25 if w <= 10 else float(phi[0]))


def test_rollback_needs_the_same_late_column_more_than_threshold_times_in_every_beam():
    history = torch.tensor([[12, 12, 12, 12], [12, 12, 5, 12]])
    assert rules.opera_rollback_loc(history, threshold=2) == 12  # 4 and 3 times > 2
    assert rules.opera_rollback_loc(history, threshold=3) is None  # beam 1 holds it 3 times, not more
    early = torch.tensor([[9, 9, 9, 9], [9, 9, 9, 9]])
    assert rules.opera_rollback_loc(early, threshold=0) is None  # never into the first 10 tokens
    assert rules.opera_rollback_loc(torch.tensor([[3, 12], [12, 12], [12, 12]]), threshold=0) == 12  # mode of beams


def test_rollback_position_shifts_then_stops_after_num_candidates_rollbacks():
    assert rules.opera_rollback_position(20, {}, window=30, num_candidates=2) == (21, 21)
    assert rules.opera_rollback_position(20, {21: 2}, window=30, num_candidates=2) == (20, 20)
    assert rules.opera_rollback_position(20, {21: 2, 20: 2}, window=30, num_candidates=2) is None
    assert rules.opera_rollback_position(20, {}, window=600, history=512) == (21, 87)  # clamped: 600 - 512 - 1


def test_the_step_rolled_back_to_drops_what_it_chose_before():
    l = torch.tensor([[1.0, 4.0, 2.0], [0.0, -1.0, 3.0]])
    rejected = torch.tensor([[False, True, False], [False, False, False]])
    out = rules.opera_rollback_logits(l, rejected)
    assert out.tolist() == [[-999.0, -999.0, -998.0], [-998.0, -999.0, -995.0]]
    assert int(out[0].argmax()) == 2  # the rejected argmax gives way to the next token


def test_the_registry_rule_reports_the_penalty_of_its_top_token():
    record = get_method("opera")
    l = torch.tensor([[2.0, 1.0, 0.0, -1.0, -2.0, -3.0]])
    out = record.rule({"original": l, "over_trust": torch.tensor([[3.0, 0.0, 0.0, 0.0, 0.0]])}, 0, record.defaults)
    assert int(out.logits[0].argmax()) == 1 and out.scalars == {"over_trust_penalty": 0.0}
    out = record.rule({"original": l, "over_trust": torch.tensor([[-1.0, 0.0, 0.0, 0.0, 0.0]])}, 0, record.defaults)
    assert int(out.logits[0].argmax()) == 0 and out.scalars == {"over_trust_penalty": -1.0}


def test_a_penalty_below_the_fill_leaves_a_non_candidate_on_top_and_decoding_goes_on():
    """sigma 200 on a long window: every candidate's penalised score falls below the -999 fill; the release decodes on
    from the fill (utils.py L3556-3557), and the top token, no candidate, had no penalty taken off."""
    record = get_method("opera")
    l = torch.tensor([[2.0, 1.0, 0.0, -1.0, -2.0, -3.0]])
    out = record.rule({"original": l, "over_trust": torch.full((1, 5), 5000.0)}, 12, record.defaults)
    assert int(out.logits[0].argmax()) == 5 and out.scalars == {"over_trust_penalty": 0.0}


# ---- the beam path --------------------------------------------------------------------------------------------------
class _TopCandidates(LogitsProcessor):
    """OPERA's candidate step with no penalty, for transformers' beam search: the top C log-probabilities kept and
    renormalised among themselves, all else -999 (rules.opera_candidates, then log_softmax)."""

    def __init__(self, c: int):
        self.c = c

    def __call__(self, input_ids, scores):
        top = scores.topk(self.c, dim=-1)
        return torch.log_softmax(torch.full_like(scores, -999.0).scatter(-1, top.indices, top.values), dim=-1)


def _beam_generate(adapter, row, max_new_tokens, processors=None):
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids)}
    inputs.update(row.token_kwargs)
    inputs.update(row.vision_kwargs)
    out = adapter.model.generate(
        **inputs, do_sample=False, num_beams=5, max_new_tokens=max_new_tokens, min_new_tokens=0,
        logits_processor=LogitsProcessorList(processors or []),
    )
    return out[0, row.length :].tolist()


def _answer(search: BeamSearch) -> list[int]:
    *_, last = search.run()
    assert last.done
    return [t.token_id for t in last.tokens]


def _cut_at_eos(tokens, adapter):
    eos = set(adapter.eos_token_ids)
    end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
    return tokens[:end]


def test_plain_beam_search_equals_transformers_beam_search(model, image):
    row = model.build_row(QUESTION, image)
    expected = _cut_at_eos(_beam_generate(model, row, 12), model)
    assert _answer(BeamSearch(model, row, max_new_tokens=12)) == expected


def test_opera_without_penalty_is_beam_search_among_its_candidates(model, image):
    """With penalty_weights 0 OPERA is not plain beam search: each beam chooses among its top 5 tokens, their
    probabilities renormalised; transformers' beam search with that restriction gives the same answer."""
    row = model.build_row(QUESTION, image)
    expected = _cut_at_eos(_beam_generate(model, row, 10, [_TopCandidates(5)]), model)
    assert _answer(BeamSearch(model, row, max_new_tokens=10, opera=Opera(penalty_weight=0.0))) == expected


def test_a_large_penalty_changes_the_beams_choice(llava, image):
    row = llava.build_row(QUESTION, image)
    plain = _answer(BeamSearch(llava, row, max_new_tokens=4, opera=Opera(penalty_weight=0.0)))
    penalised = _answer(BeamSearch(llava, row, max_new_tokens=4, opera=Opera(penalty_weight=1e4)))
    assert penalised != plain


def test_batched_look_ahead_equals_one_forward_per_candidate(llava, image):
    row = llava.build_row(QUESTION, image)
    runs = [list(BeamSearch(llava, row, max_new_tokens=8, opera=Opera(), batched=b).run()) for b in (True, False)]
    for a, b in zip(*runs, strict=True):
        assert [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens]
        for x, y in zip(a.tokens, b.tokens, strict=True):
            assert x.scalars["over_trust_penalty"] == pytest.approx(y.scalars["over_trust_penalty"], abs=1e-4)


def test_retrospection_rolls_back_and_changes_the_answer(llava, image):
    """At scale 1 the window's last column leads (fewest factors below 1); with threshold 0 the first late lead
    rolls the beams back, each position at most num_candidates times."""
    row = llava.build_row(QUESTION, image)
    opera = Opera(scale=1.0, threshold=0, num_candidates=3)
    search = BeamSearch(llava, row, max_new_tokens=16, ignore_eos=True, opera=opera)
    events = list(search.run())
    assert search.rollback_log and all(pos >= 9 for _, pos in search.rollback_log)
    assert max(search.rollbacks.values()) <= 3
    assert [e.rollback for e in events if e.rollback] == search.rollback_log
    never = BeamSearch(llava, row, max_new_tokens=16, ignore_eos=True, opera=Opera(scale=1.0, threshold=100))
    assert [t.token_id for t in events[-1].tokens] != _answer(never)
    assert len(events[-1].tokens) == 16


def test_rejections_as_released_outlive_the_steps_undone_and_the_fix_forgets_them(llava, image):
    """As released (L3478-3481, L3538-3550) what a rollback rejects is kept under its position and only the position
    after a rollback's own is cleared: a later rollback to an earlier step leaves rejections at later positions, which
    apply when the search reaches them again. The fix keys them by the step restored and forgets every undone step's."""
    row = llava.build_row(QUESTION, image)
    runs = {}
    for as_released in (True, False):
        opera = Opera(scale=1.0, threshold=0, num_candidates=3, as_released=as_released)
        search = BeamSearch(llava, row, max_new_tokens=16, ignore_eos=True, opera=opera)
        runs[as_released] = search, [t.token_id for t in list(search.run())[-1].tokens]
    fixed, released = runs[False][0], runs[True][0]
    assert fixed.rollback_log and released.rollback_log
    assert max(fixed.rejected) == fixed.rollback_log[-1][1]  # nothing kept past the step last restored
    last = released.rollback_log[-1][1]
    assert any(key > last + 1 for key in released.rejected)  # kept from a branch the search undid
    assert runs[True][1] != runs[False][1]


def test_opera_as_released_rolls_nothing_back_past_its_window_size(llava, image):
    """The release's rollback lists have window_size slots; a position past them fails inside its bare except: no
    rollback. The fix clamps the position into the window instead."""
    row = llava.build_row(QUESTION, image)
    logs = []
    for as_released in (True, False):
        opera = Opera(scale=1.0, threshold=0, num_candidates=3, history=8, as_released=as_released)
        search = BeamSearch(llava, row, max_new_tokens=13, ignore_eos=True, opera=opera)
        list(search.run())
        logs.append(search.rollback_log)
    assert logs[0] == [] and logs[1]


# ---- as a method ----------------------------------------------------------------------------------------------------
def test_opera_beside_the_greedy_baseline_is_deterministic_and_traced(llava, image):
    runs = [compare(llava, image, QUESTION, "opera", max_new_tokens=6, ignore_eos=True) for _ in range(2)]
    assert runs[0].to_json() == runs[1].to_json()
    side = runs[0].method_side
    assert side.finished and len(side.tokens) == 6 and side.text == "".join(t.piece for t in side.tokens)
    greedy = compare(llava, image, QUESTION, "vcd", max_new_tokens=6, ignore_eos=True)
    assert [t.token_id for t in runs[0].baseline.tokens] == [t.token_id for t in greedy.baseline.tokens]
    for token in side.tokens:
        assert token.plausible_set_size == 5 and set(token.branches) == {"original", "distorted"}
        assert token.image_attention is not None and token.visual_dependence is not None
        assert set(token.scalars) == {"over_trust_penalty"}
    assert runs[0].branches["rollbacks"] == [] and runs[0].params["num_beams"] == 5


def test_opera_refuses_sampling_and_runs_in_answer_all(llava, image):
    with pytest.raises(ValueError, match="beam search"):
        compare(llava, image, QUESTION, "opera", max_new_tokens=2, do_sample=True)
    with pytest.raises(ValueError, match="num_beams must be >= 2"):
        compare(llava, image, QUESTION, "opera", max_new_tokens=2, num_beams=1)
    sides, infos = answer_all(llava, image, QUESTION, ["opera", "vcd"], max_new_tokens=5, ignore_eos=True)
    assert list(sides) == ["baseline", "opera", "vcd"] and infos["opera"]["rollbacks"] == []
    alone = compare(llava, image, QUESTION, "opera", max_new_tokens=5, ignore_eos=True, attention_layers=None,
                    visual_dependence=False)
    assert [t.token_id for t in sides["opera"].tokens] == [t.token_id for t in alone.method_side.tokens]
