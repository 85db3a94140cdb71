"""eval.stats: intervals as scipy draws them, McNemar's exact test, Holm's step-down, and the benchmarks' intervals."""

import json
import math

import numpy as np
import pytest
from scipy.stats import bootstrap, norm

from eval import chair, mme, pope, stats


def _pope_data(n=120, seed=3):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < 0.5, "yes", "no")
    said = np.where(rng.random(n) < 0.8, labels, np.where(labels == "yes", "no", "yes"))
    return list(labels), list(said)


@pytest.mark.parametrize("rate", ["accuracy", "f1"])
def test_one_level_interval_is_scipys_percentile_bootstrap(rate):
    labels, said = _pope_data()
    truth, yes = np.array(labels) == "yes", np.array(said) == "yes"
    ours = pope.pope_intervals(labels, said, resamples=999, seed=11)[rate]
    theirs = bootstrap((truth, yes), lambda t, s, axis=-1: pope._rates(t, s)[rate], paired=True, vectorized=True,
                       n_resamples=999, method="percentile", rng=np.random.default_rng(11))
    assert (ours.low, ours.high) == pytest.approx(tuple(theirs.confidence_interval), abs=1e-12)
    assert ours.estimate == pytest.approx(pope.pope_metrics(labels, said)[rate])
    assert ours.low < ours.estimate < ours.high and ours.resamples == 999 and ours.over == "items"


def test_two_level_interval_draws_the_seeds_too():
    labels, said = _pope_data()
    one = pope.pope_intervals(labels, said, resamples=500, seed=2)["accuracy"]
    same = pope.pope_intervals(labels, [said, said, said], resamples=500, seed=2)["accuracy"]
    # identical seeds: drawing them changes nothing, the items are drawn first with the same generator
    assert (same.low, same.high) == pytest.approx((one.low, one.high)) and same.over == "items x seeds"
    rng = np.random.default_rng(0)
    runs = [[s if rng.random() < 0.9 else ("no" if s == "yes" else "yes") for s in said] for _ in range(3)]
    pooled = pope.pope_intervals(labels, runs, resamples=500, seed=2)["accuracy"]
    assert pooled.estimate == pytest.approx(np.mean([pope.pope_metrics(labels, r)["accuracy"] for r in runs]))


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    for b, c in ((7, 1), (3, 3), (0, 5), (12, 4)):
        tail = sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)
        assert stats.mcnemar_exact(b, c) == pytest.approx(min(1.0, 2 * tail))
    assert stats.mcnemar_exact(0, 0) == 1.0
    side = [True] * 10 + [False] * 2 + [True] * 20
    reference = [False] * 10 + [True] * 2 + [True] * 20
    test = stats.mcnemar(side, reference, ("vcd", "baseline"), "random")
    assert test.p_value == pytest.approx(stats.mcnemar_exact(10, 2))
    assert test.difference.estimate == pytest.approx(8 / 32) and "10 vs 2" in test.test


def test_holm_is_the_step_down_procedure():
    p = [0.01, 0.04, 0.03, 0.005]
    tests = [stats.PairedTest("accuracy", f"m{i}", "baseline", stats.Interval(0, 0, 0, 1, 0), v, "t")
             for i, v in enumerate(p)]
    adjusted = stats.holm(tests)
    assert [t.p_holm for t in adjusted] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [t.significant for t in adjusted] == [True, False, False, True]
    rng = np.random.default_rng(1)
    for _ in range(20):  # rejected by the step-down rule <=> adjusted p < α
        values = list(rng.random(6) * 0.1)
        rejected, m = set(), len(values)
        for rank, i in enumerate(sorted(range(m), key=values.__getitem__)):
            if values[i] >= 0.05 / (m - rank):
                break
            rejected.add(i)
        adjusted = stats.holm([stats.PairedTest("a", str(i), "b", tests[0].difference, v, "t")
                               for i, v in enumerate(values)])
        assert {i for i, t in enumerate(adjusted) if t.significant} == rejected


def test_paired_bootstrap_sees_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(5)
    base = rng.random(300) < 0.6
    better = base | (rng.random(300) < 0.3)
    real = stats.paired_bootstrap(stats.mean, [better], [base], "accuracy", ("m", "baseline"), resamples=999)
    null = stats.paired_bootstrap(stats.mean, [base], [base], "accuracy", ("m", "baseline"), resamples=999)
    assert real.p_value < 0.01 and real.difference.low > 0
    assert null.p_value == 1.0 and null.difference.estimate == 0
    drawn = np.array([0.1, 0.2, -0.05, 0.3])
    assert stats.bootstrap_p_value(0.1, drawn) == pytest.approx(2 * norm.sf(0.1 / np.std(drawn, ddof=1)))
    assert stats.bootstrap_p_value(0.0, np.zeros(5)) == 1.0 and stats.bootstrap_p_value(0.2, np.full(5, 0.2)) == 0
    # below α where 0 is outside the percentile interval, and back: the two agree on these clear cases
    assert (real.p_value < 0.05) == (real.difference.low > 0)


def test_chair_at_matched_length_counts_only_the_cut_caption():
    vocabulary = chair.coco_vocabulary("original")
    long = chair.caption_report("a dog on a couch with a cat .", {"dog"}, vocabulary)
    short = chair.caption_report("a dog on a", {"dog"}, vocabulary)
    assert long["tokens"] == 9 and short["tokens"] == 4 and long["mention_ends"] == [2, 5, 8]
    matched = chair.matched_lengths({"baseline": [long], "method": [short]})
    assert matched == [4]
    arrays = chair.chair_arrays([long], matched)
    assert arrays["mentions_matched"].tolist() == [1] and arrays["hallucinated_matched"].tolist() == [0]
    found = chair.chair_intervals(chair.chair_arrays([long, short] * 5, [4] * 10), resamples=200)
    assert found["chair_i"].estimate == pytest.approx(10 / 20) and found["chair_i_matched"].estimate == 0


def test_mme_total_interval_and_a_side_against_itself():
    triples = [(f"img{i}", "yes" if k == 0 else "no", "yes" if (i + k) % 3 else "no") for i in range(20)
               for k in range(2)]
    arrays = {"existence": mme.image_arrays(triples), "count": mme.image_arrays(triples[:20])}
    found = mme.mme_intervals(arrays, resamples=300)
    expected = {s: mme.mme_subtask_score(t)["score"] for s, t in (("existence", triples), ("count", triples[:20]))}
    assert found["existence"].estimate == pytest.approx(expected["existence"])
    assert found["total"].estimate == pytest.approx(sum(expected.values()))
    assert found["total"].low <= found["total"].estimate <= found["total"].high
    same = mme.mme_paired(arrays, arrays, ("m", "baseline"), resamples=300)
    assert same.difference.estimate == 0 and same.p_value == 1.0


def test_a_clear_difference_survives_holm_over_a_whole_run():
    # 40 of 400 answers flipped wrong -> right and none back: Holm over a lab run's 105 comparisons must still see
    # it (a p-value counted from the draws beyond zero cannot go below 2 / 2001, which x 105 is 0.1)
    base = np.array([True] * 300 + [False] * 100)
    better = base.copy()
    better[300:340] = True
    test = stats.paired_bootstrap(stats.mean, [better], [base], "accuracy", ("m", "baseline"))
    assert test.p_value * 105 < 0.05
    others = [stats.PairedTest("accuracy", f"m{i}", "baseline", test.difference, 0.5, "t") for i in range(104)]
    assert stats.holm([test, *others])[0].significant


def test_the_pope_table_reads_both_readouts_and_an_empty_answer_is_neither(tmp_path):
    from eval.benchmarks import pope_benchmark

    (tmp_path / "img.png").write_bytes(b"")
    rows = [{"question_id": i, "image": "img.png", "text": f"Is there a q{i}?", "label": label}
            for i, label in enumerate(["yes", "no", "yes"])]
    (tmp_path / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = pope_benchmark([str(tmp_path / "coco_pope_random.json")], str(tmp_path))
    keys = [r.key for r in bench.requests]
    answers = {k: {"baseline": a} for k, a in zip(keys, ["Yes", "No", ""])}
    first = [{"yes": 0.9, "no": 0.1}, {"yes": 0.6, "no": 0.3}, None]  # the second: text "No", first token "yes"
    records = {k: {"first_token": {"baseline": f}} for k, f in zip(keys, first)}
    scored = bench.score(answers, ["baseline"], records)
    read = scored.statistics["readouts"]["random"]["baseline"]
    # text rule: yes, no, yes (an empty answer reads "yes"); first token: yes, yes, neither
    assert read["disagreement"] == pytest.approx(2 / 3) and read["first_token"]["accuracy"] == pytest.approx(1 / 3)
    assert scored.table.rows[0]["disagreement"] == pytest.approx(200 / 3)
    older = bench.score(answers, ["baseline"], {k: {} for k in keys})  # a run from before the readout: no column
    assert "first_token_accuracy" not in older.table.rows[0] and not older.statistics["readouts"]
