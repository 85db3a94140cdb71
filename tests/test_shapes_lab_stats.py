"""The shapes-world lab's intervals and paired tests (eval/shapes_world/lab.py), on hand-made answer records."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from eval import stats
from eval.shapes_world import lab


def _runs(n=60, seeds=2, seed=0):
    """Records of a greedy run and ``seeds`` sampled runs over n questions per split: the baseline right 70 % of the
    time, "m" right wherever the baseline is and on half of the rest, the control "apc_only" the baseline's answers."""
    rng = np.random.default_rng(seed)
    facts, by_run = {}, {}
    for run in ["greedy"] + [f"sampled-seed{k}" for k in range(seeds)]:
        by_run[run] = {}
        for split in lab.SPLITS:
            records = []
            for i in range(n):
                label = "yes" if i % 2 else "no"
                wrong = "no" if label == "yes" else "yes"
                facts[(f"{i}.png", "q")] = {"label": label, "visibility": "clear"}
                base = label if rng.random() < 0.7 else wrong
                m = label if base == label or rng.random() < 0.5 else wrong
                records.append({"image": f"{i}.png", "prompt": "q",
                                "answers": {"baseline": base, "m": m, "apc_only": base}})
            by_run[run][split] = records
    return by_run, facts


def test_every_method_meets_the_baseline_and_each_control_and_holm_covers_one_mode():
    by_run, facts = _runs()
    tests = lab.paired_tests(by_run, facts, ["baseline", "m", "apc_only"])
    pairs = [("m", "baseline"), ("apc_only", "baseline"), ("m", "apc_only")]
    for mode in ("greedy", "sampled"):
        assert [(t.group, t.side, t.reference) for t in tests[mode]] == [(s, *p) for s in lab.SPLITS for p in pairs]
        assert stats.holm(tests[mode]) == tests[mode]  # already adjusted over exactly this mode's comparisons
    for t in tests["greedy"]:
        if t.side == "apc_only":  # the same answers: no discordant pair, no difference
            assert t.p_value == 1.0 and t.difference.estimate == 0 and not t.significant
        else:  # only ever wrong -> right: McNemar's exact p of (flips, 0)
            flips = lab.flips(by_run["greedy"][t.group], facts, "m")
            assert flips["right_to_wrong"] == 0
            assert t.p_value == pytest.approx(stats.mcnemar_exact(flips["wrong_to_right"], 0))
            assert t.difference.estimate == pytest.approx(flips["wrong_to_right"] / 60)
    gains = [t for t in tests["sampled"] if t.side == "m"]
    assert all(t.difference.low > 0 for t in gains) and any(t.significant for t in gains)
    assert all(t.difference.over == "items x seeds" for t in tests["sampled"])


def test_intervals_hold_the_tables_figures(tmp_path):
    by_run, facts = _runs(seeds=3)
    sides = ["baseline", "m", "apc_only"]
    found, summary = lab.intervals(by_run, facts, sides), lab.summarise(by_run, facts, sides)
    for split in lab.SPLITS:
        for side in sides:
            greedy, sampled = found[split][side]["greedy"], found[split][side]["sampled"]
            assert greedy["accuracy"].estimate == pytest.approx(summary[split][side]["greedy"]["accuracy"])
            assert sampled["accuracy"].estimate == pytest.approx(summary[split][side]["sampled"]["accuracy"]["mean"])
            assert sampled["accuracy"].low < sampled["accuracy"].estimate < sampled["accuracy"].high
            band = found[split][side]["by_visibility"]["clear"]  # every question of _runs is "clear"
            assert band["greedy"].estimate == pytest.approx(greedy["accuracy"].estimate)
            assert (band["sampled"].low, band["sampled"].high) == pytest.approx(
                (sampled["accuracy"].low, sampled["accuracy"].high))
    tests = lab.paired_tests(by_run, facts, sides)
    text = lab.markdown(summary, sides, [0, 1, 2], [0.7, 0.9], "tiny", found, tests)
    assert "### Paired tests of accuracy" in text and "| random | m | baseline |" in text and " * |" in text
    rates, tested = (list(csv.DictReader(open(path, encoding="utf-8")))
                     for path in lab.write_csv(found, tests, tmp_path))
    assert len(rates) == 3 * 3 * 2 and len(tested) == 2 * len(tests["greedy"])
    first = rates[0]
    assert (first["split"], first["side"], first["mode"]) == ("random", "baseline", "greedy")
    assert float(first["accuracy_low"]) == pytest.approx(100 * found["random"]["baseline"]["greedy"]["accuracy"].low)
    assert [r["mode"] for r in tested] == ["greedy"] * len(tests["greedy"]) + ["sampled"] * len(tests["sampled"])


def test_the_two_readouts_and_their_disagreement():
    by_run, facts = _runs(n=4, seeds=1)
    sides = ["baseline", "m", "apc_only"]
    assert lab.readouts(by_run, facts, sides) is None  # no first-token record: no table
    for split in lab.SPLITS:
        for k, r in enumerate(by_run["greedy"][split]):  # the first token says "yes" on the first question only
            r["first_token"] = {s: {"yes": 0.9, "no": 0.1} if k == 0 else {"yes": 0.2, "no": 0.7} for s in sides}
    read = lab.readouts(by_run, facts, sides)
    for split in lab.SPLITS:
        for side in sides:
            text = [a["answers"][side] for a in by_run["greedy"][split]]
            first = ["yes", "no", "no", "no"]
            assert read[split][side]["disagreement"] == sum(a != b for a, b in zip(first, text)) / 4
            labels = [facts[(r["image"], r["prompt"])]["label"] for r in by_run["greedy"][split]]
            assert read[split][side]["first_token_accuracy"] == sum(a == b for a, b in zip(first, labels)) / 4
    assert "first-token accuracy (%) / readouts disagree (%)" in "\n".join(lab.readouts_markdown(read, sides))
