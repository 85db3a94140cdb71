"""Tests of the shapes-world lab command (eval/shapes_world/lab.py): its arithmetic on hand-made answer records, and
one small end-to-end run of the shipped model through the same harness as `python -m eval pope`."""

from __future__ import annotations

import json
import os

import pytest

from eval.shapes_world import lab

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "shapes-llava")


def _record(image, label_question, answers, p_yes=None):
    return {"image": image, "prompt": label_question, "answers": answers,
            "p_yes": p_yes or {side: 0.5 for side in answers}}


FACTS = {("a.png", "q1"): {"label": "yes", "visibility": "clear"},
         ("a.png", "q2"): {"label": "no", "visibility": "absent"},
         ("b.png", "q1"): {"label": "yes", "visibility": "low"},
         ("b.png", "q2"): {"label": "no", "visibility": "absent"}}


def test_flips_count_each_changed_answer_once_each_way():
    records = [_record("a.png", "q1", {"baseline": "yes", "m": "no"}),   # right -> wrong, yes -> no
               _record("a.png", "q2", {"baseline": "yes", "m": "no"}),   # wrong -> right, yes -> no
               _record("b.png", "q1", {"baseline": "no", "m": "yes"}),   # wrong -> right, no -> yes
               _record("b.png", "q2", {"baseline": "no", "m": "no"})]    # unchanged
    assert lab.flips(records, FACTS, "m") == {"wrong_to_right": 2, "right_to_wrong": 1, "yes_to_no": 2,
                                              "no_to_yes": 1}


def test_side_scores_split_by_visibility():
    records = [_record("a.png", "q1", {"baseline": "yes"}), _record("a.png", "q2", {"baseline": "yes"}),
               _record("b.png", "q1", {"baseline": "no"}), _record("b.png", "q2", {"baseline": "no"})]
    score = lab.score_side(records, FACTS, "baseline")
    assert score["accuracy"] == 0.5 and score["yes_ratio"] == 0.5
    assert score["by_visibility"] == {"clear": {"n": 1, "accuracy": 1.0}, "low": {"n": 1, "accuracy": 0.0},
                                      "absent": {"n": 2, "accuracy": 0.5}}


def test_false_yes_confidence_counts_a_question_once_over_splits():
    wrong = _record("a.png", "q2", {"baseline": "Yes"}, {"baseline": 0.7})
    right = _record("b.png", "q2", {"baseline": "no"}, {"baseline": 0.2})
    assert lab.false_yes_p_yes({"random": [wrong, right], "adversarial": [wrong]}, FACTS) == [0.7]


def test_histogram_bins_and_mean_std():
    assert lab.histogram([0.0, 0.55, 0.95, 0.995, 1.0]) == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 2]
    assert lab.mean_std([0.5, 0.7]) == pytest.approx({"mean": 0.6, "std": 0.1414, }, abs=1e-4)
    assert lab.mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
    assert [name for name, _ in lab.runs(2, 5)] == ["greedy", "sampled-seed5", "sampled-seed6"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "model.safetensors")), reason="no shipped checkpoint")
def test_the_lab_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "lab"
    assert lab.main(["--model", SHIPPED, "--out", str(out), "--n", "3", "--seeds", "2", "--method", "vcd",
                     "--no-progress"]) == 0
    report = json.loads((out / "lab.json").read_text())
    sides = ["baseline", "vcd", "apc_only", "pba", "olm"]
    assert list(report["summary"]["random"]) == sides and report["seeds"] == [0, 1]
    for split in lab.SPLITS:
        for side in sides:
            entry = report["summary"][split][side]
            assert entry["greedy"]["n"] == 6 and 0 <= entry["greedy"]["accuracy"] <= 1
            assert 0 <= entry["sampled"]["accuracy"]["mean"] <= 1
        flipped = report["summary"][split]["vcd"]["flips_greedy"]
        assert flipped["wrong_to_right"] + flipped["right_to_wrong"] == flipped["yes_to_no"] + flipped["no_to_yes"]
    for run in ("greedy", "sampled-seed0", "sampled-seed1"):  # each run is an ordinary eval run folder
        assert (out / run / "metrics.json").exists()
        assert all(0 <= p <= 1 for p in report["p_yes"][run]["random"][0].values())
    for png in ("accuracy.png", "p_yes.png", "visibility.png", "flips.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "lab.md").read_text()
    assert "greedy, and sampling at T = 1 over seeds 0, 1 (mean ± std)" in text and "| adversarial | olm |" in text
    assert text in capsys.readouterr().out
