"""The shapes-world lab: every method beside its controls, greedy and sampled, on toy-POPE, through the same harness
as the real benchmarks (`python -m eval pope`), with what a method's gain is made of.

    python -m eval.shapes_world.lab --model assets/shapes-llava --out runs/lab [--n 200] [--seeds 3]

writes toy-POPE's three splits (held-out scenes, `benchmark.write_pope`), decodes them once greedily and once per
sampling seed (temperature 1; each run derives a seed per question from its own seed, so runs are independent) with
the baseline, every ``--method`` and the controls (APC-only, PBA, OLM) in one batched run per question
(`eval.runner.run_benchmark`: each run's folder holds the usual answers.jsonl and metrics files, and resumes), then
writes under ``--out``:

    lab.md            the tables: accuracy and yes-ratio per split and side (greedy; sampled mean ± std over seeds),
                      each with its 95 % bootstrap interval (over the questions; sampled, over questions x seeds),
                      the paired tests of every method against the baseline and each control (greedy: McNemar's
                      exact test; sampled: paired bootstrap over questions x seeds; Holm-corrected per decoding
                      mode, significant ones marked *), the answers each method flipped against the baseline (the
                      greedy flips are McNemar's table), accuracy by the asked object's visibility
    lab.csv, lab-tests.csv   the rates with their intervals (one row per split, side and mode), the paired tests
    lab.json          every figure behind them, the intervals and tests, and each question's p("yes") per side and
                      run
    accuracy.png, p_yes.png, visibility.png, flips.png     the plots (matplotlib)

Why the controls: under sampling, much of a contrastive method's POPE gain on LLaVA-1.5 is its plausibility cut
alone, or a push toward "yes" ("Mirage" critique; see README's Evaluation section). APC-only is the cut without
the contrast, PBA and OLM push toward "yes" by the prompt and by the logits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import Counter

from decoding import agla
from models.shapes_world import world

from .. import pope, stats
from ..benchmarks import comparisons, pope_benchmark
from ..cli import control_methods, parse_method
from ..report import Column, Table, interval_fields, tests_table, write_json
from ..runner import RunConfig, run_benchmark
from . import benchmark, evaluate

DEFAULT_METHODS = ("vcd", "ritual", "m3id", "icd", "pai", "sid", "avisc", "dola")
SPLITS = benchmark.SPLITS
MAX_NEW_TOKENS = 4  # "yes" / "no" and the end of the answer
FLIPS = ("wrong_to_right", "right_to_wrong", "yes_to_no", "no_to_yes")
P_YES_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0)


# ---- the questions and their ground truth -----------------------------------------------------------------------

def write_questions(out: str, n: int, seed: int) -> tuple[dict[str, str], dict[tuple[str, str], dict]]:
    """Toy-POPE's files under ``out/pope``, and per (image, question) its split-independent facts: the label and the
    visibility band of the asked object (``evaluate.asked_visibility``; "absent" for a "no" question)."""
    folder = os.path.join(out, "pope")
    files = benchmark.write_pope(folder, n, seed)
    scenes = evaluate.pope_scenes(n, seed)
    agla.remember_scenes(scenes)  # their ground truth, for AGLA-like's oracle mask (--method agla:mask=1)
    facts = {}
    for path in files.values():
        for item in pope.read_pope(path):
            index = int(item.image.rsplit("_", 1)[1].split(".")[0])  # shapes_pope_00042.png -> scene 42
            question = world.existence_question(scenes[index], item.question.split()[3])
            if question.text != item.question or question.answer != item.label:
                raise RuntimeError(f"{path}: question {item.question_id} does not match its scene")
            facts[(item.image, item.question)] = {"label": item.label,
                                                  "visibility": evaluate.asked_visibility(scenes[index], question)}
    return files, facts


# ---- the runs --------------------------------------------------------------------------------------------------

def runs(seeds: int, base_seed: int) -> list[tuple[str, dict]]:
    """(folder name, SamplingConfig fields) of every run: greedy, then one sampled run per seed."""
    sampled = [(f"sampled-seed{base_seed + k}", {"do_sample": True, "temperature": 1.0, "seed": base_seed + k})
               for k in range(seeds)]
    return [("greedy", {"do_sample": False, "seed": base_seed})] + sampled


def decode_runs(model: str, files: dict[str, str], out: str, methods: list[tuple[str, dict]], seeds: int,
                base_seed: int, progress: bool) -> dict[str, dict[str, list[dict]]]:
    """Every run's answer records, by run name and split (in the files' question order)."""
    from decoding.sampling import SamplingConfig

    bench = pope_benchmark(list(files.values()), os.path.join(out, "pope", "images"), "none")
    by_run = {}
    for name, sampling in runs(seeds, base_seed):
        config = RunConfig(model=model, methods=methods, max_new_tokens=MAX_NEW_TOKENS,
                           sampling=SamplingConfig(**sampling))
        folder = os.path.join(out, name)
        print(f"{name}: {config.decoding_label()}", file=sys.stderr, flush=True)
        run_benchmark(bench, config, folder, progress=progress)
        with open(os.path.join(folder, "answers.jsonl"), encoding="utf-8") as f:
            records = {(r["image"], r["prompt"]): r for r in map(json.loads, f)}
        by_run[name] = {split: [records[(item.image, item.question)] for item in pope.read_pope(path)]
                        for split, path in files.items()}
    return by_run


# ---- scoring ---------------------------------------------------------------------------------------------------

def score_side(records: list[dict], facts: dict, side: str) -> dict:
    """Accuracy, yes-ratio and accuracy per visibility band of one side on one split of one run."""
    said = [pope.parse_pope_answer(r["answers"][side]) for r in records]
    labels = [facts[(r["image"], r["prompt"])]["label"] for r in records]
    bands = [facts[(r["image"], r["prompt"])]["visibility"] for r in records]
    correct = [s == t for s, t in zip(said, labels)]
    by_band = {}
    for band in (*world.VISIBILITY_BANDS, "absent"):
        idx = [i for i, b in enumerate(bands) if b == band]
        if idx:
            by_band[band] = {"n": len(idx), "accuracy": sum(correct[i] for i in idx) / len(idx)}
    return {"n": len(said), "accuracy": sum(correct) / len(said), "yes_ratio": said.count("yes") / len(said),
            "by_visibility": by_band}


def flips(records: list[dict], facts: dict, side: str) -> dict[str, int]:
    """How ``side``'s answers differ from the baseline's on the same questions of the same run."""
    out = Counter({name: 0 for name in FLIPS})
    for r in records:
        label = facts[(r["image"], r["prompt"])]["label"]
        base, other = (pope.parse_pope_answer(r["answers"][s]) for s in ("baseline", side))
        if base == other:
            continue
        out["wrong_to_right" if other == label else "right_to_wrong"] += 1
        out["yes_to_no" if base == "yes" else "no_to_yes"] += 1
    return dict(out)


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(by_run: dict, facts: dict, sides: list[str]) -> dict:
    """Per split and side: the greedy scores, the sampled ones as mean ± std over seeds, the flips of each."""
    greedy, sampled_runs = by_run["greedy"], [v for k, v in by_run.items() if k != "greedy"]
    summary = {}
    for split in SPLITS:
        for side in sides:
            g = score_side(greedy[split], facts, side)
            s = [score_side(run[split], facts, side) for run in sampled_runs]
            entry = {"greedy": g, "sampled": {key: mean_std([x[key] for x in s]) for key in ("accuracy", "yes_ratio")}}
            entry["sampled"]["by_visibility"] = {
                band: mean_std([x["by_visibility"][band]["accuracy"] for x in s]) for band in g["by_visibility"]}
            if side != "baseline":
                entry["flips_greedy"] = flips(greedy[split], facts, side)
                per_run = [flips(run[split], facts, side) for run in sampled_runs]
                entry["flips_sampled"] = {k: mean_std([f[k] for f in per_run]) for k in FLIPS}
            summary.setdefault(split, {})[side] = entry
    return summary


def _said(records: list[dict], side: str) -> list[str]:
    return [pope.parse_pope_answer(r["answers"][side]) for r in records]


def _labels(records: list[dict], facts: dict) -> list[str]:
    return [facts[(r["image"], r["prompt"])]["label"] for r in records]


def intervals(by_run: dict, facts: dict, sides: list[str]) -> dict:
    """Per split and side, POPE's rates with their 95 % bootstrap intervals: greedy over the questions, sampled over
    questions x seeds (``pope.pope_intervals``); and under "by_visibility", per band of the asked object, the
    accuracy's interval in each mode."""
    greedy, sampled_runs = by_run["greedy"], [v for k, v in by_run.items() if k != "greedy"]
    out = {}
    for split in SPLITS:
        labels = _labels(greedy[split], facts)
        bands = [facts[(r["image"], r["prompt"])]["visibility"] for r in greedy[split]]
        for side in sides:
            said = {"greedy": [_said(greedy[split], side)],
                    "sampled": [_said(run[split], side) for run in sampled_runs]}
            out.setdefault(split, {})[side] = entry = {
                "greedy": pope.pope_intervals(labels, said["greedy"][0]),
                "sampled": pope.pope_intervals(labels, said["sampled"])}
            entry["by_visibility"] = {band: {mode: _band_accuracy(labels, runs, [b == band for b in bands])
                                             for mode, runs in said.items()} for band in sorted(set(bands))}
    return out


def _plain(value):
    """``intervals``' nested dicts with each ``stats.Interval`` as a dict (lab.json)."""
    if isinstance(value, stats.Interval):
        return value.to_dict()
    return {k: _plain(v) for k, v in value.items()}


def _band_accuracy(labels: list[str], runs: list[list[str]], keep: list[bool]) -> stats.Interval:
    """The accuracy's interval over the questions ``keep`` marks (and the runs' seeds)."""
    correct = [[a == t for a, t, k in zip(run, labels, keep) if k] for run in runs]
    return stats.interval(stats.mean, [correct])


def paired_tests(by_run: dict, facts: dict, sides: list[str]) -> dict[str, list[stats.PairedTest]]:
    """Every method against the baseline and each control (``benchmarks.comparisons``) on the same questions, per
    split: greedy by McNemar's exact test, sampled by a paired bootstrap of the accuracy over questions x seeds;
    Holm's correction over each mode's comparisons."""
    greedy, sampled_runs = by_run["greedy"], [v for k, v in by_run.items() if k != "greedy"]
    tests: dict[str, list] = {"greedy": [], "sampled": []}
    for split in SPLITS:
        labels = _labels(greedy[split], facts)

        def correct(run, side, labels=labels, split=split):
            return [a == t for a, t in zip(_said(run[split], side), labels)]

        for side, reference in comparisons(sides):
            tests["greedy"].append(stats.mcnemar(correct(greedy, side), correct(greedy, reference),
                                                 (side, reference), split))
            tests["sampled"].append(stats.paired_bootstrap(
                stats.mean, [[correct(run, side) for run in sampled_runs]],
                [[correct(run, reference) for run in sampled_runs]], "accuracy", (side, reference), split))
    return {mode: stats.holm(found) for mode, found in tests.items()}


def readouts(by_run: dict, facts: dict, sides: list[str]) -> dict | None:
    """Per split and side, the greedy answers read two ways: POPE's text rule (the lab's figures, and the papers') and
    the first token's p("yes") > p("no") (``pope.first_token_answer``): the first-token accuracy and how often the two
    readouts disagree. None where the answers carry no first-token record (a run decoded before it was recorded)."""
    greedy = by_run["greedy"]
    if any("first_token" not in r for records in greedy.values() for r in records):
        return None
    out = {}
    for split in SPLITS:
        labels = _labels(greedy[split], facts)
        for side in sides:
            probs = [r["first_token"][side] or {"yes": None, "no": None} for r in greedy[split]]
            first = [pope.first_token_answer(p["yes"], p["no"]) for p in probs]
            text = _said(greedy[split], side)
            out.setdefault(split, {})[side] = {
                "first_token_accuracy": sum(a == t for a, t in zip(first, labels)) / len(labels),
                "disagreement": sum(a != b for a, b in zip(first, text)) / len(labels)}
    return out


def false_yes_p_yes(records_by_split: dict[str, list[dict]], facts: dict, side: str = "baseline") -> list[float]:
    """p("yes") of ``side``'s false "yes" answers over every split of one run (a question asked in two splits counts
    once)."""
    seen, values = set(), []
    for records in records_by_split.values():
        for r in records:
            key = (r["image"], r["prompt"])
            if key in seen or facts[key]["label"] != "no" or r["p_yes"][side] is None:
                continue
            seen.add(key)
            if pope.parse_pope_answer(r["answers"][side]) == "yes":
                values.append(r["p_yes"][side])
    return values


# ---- the report -------------------------------------------------------------------------------------------------

def _pm(entry: dict) -> str:
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def _ci(found: stats.Interval) -> str:
    return f"[{100 * found.low:.1f}, {100 * found.high:.1f}]"


def markdown(summary: dict, sides: list[str], seeds: list[int], p_yes: list[float], model: str, found: dict,
             tests: dict[str, list[stats.PairedTest]], read: dict | None = None) -> str:
    seed_list = ", ".join(map(str, seeds))
    lines = [f"## Shapes-world lab: {model}", "",
             f"### Toy-POPE accuracy / yes-ratio (%) — greedy, and sampling at T = 1 over seeds {seed_list} "
             "(mean ± std)", "", f"[low, high]: 95 % percentile-bootstrap interval ({stats.RESAMPLES} resamples, seed "
             f"{stats.SEED}): greedy over the questions, sampled over questions x seeds.", "",
             "| split | side | greedy acc. | greedy yes | sampled acc. | sampled yes |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for split in SPLITS:
        for side in sides:
            e, g, m = summary[split][side], found[split][side]["greedy"], found[split][side]["sampled"]
            lines.append(f"| {split} | {side} | {100 * e['greedy']['accuracy']:.1f} {_ci(g['accuracy'])} | "
                         f"{100 * e['greedy']['yes_ratio']:.1f} {_ci(g['yes_ratio'])} | "
                         f"{_pm(e['sampled']['accuracy'])} {_ci(m['accuracy'])} | "
                         f"{_pm(e['sampled']['yes_ratio'])} {_ci(m['yes_ratio'])} |")
    lines += ["", *tests_markdown(tests, seed_list), *readouts_markdown(read, sides)]
    lines += ["", f"### Answers flipped against the baseline — greedy; sampled (mean per seed, seeds {seed_list})",
              "", "| split | side | " + " | ".join(k.replace("_", " ") for k in FLIPS) + " |",
              "| --- | --- |" + " ---: |" * len(FLIPS)]
    for split in SPLITS:
        for side in sides[1:]:
            e = summary[split][side]
            cells = [f"{e['flips_greedy'][k]}; {e['flips_sampled'][k]['mean']:.1f}" for k in FLIPS]
            lines.append(f"| {split} | {side} | " + " | ".join(cells) + " |")
    bands = [b for b in (*world.VISIBILITY_BANDS, "absent") if b in summary["random"]["baseline"]["greedy"]
             ["by_visibility"]]
    lines += ["", f"### Accuracy (%) by the asked object's visibility, adversarial split — greedy; sampled "
              f"(seeds {seed_list}), each with its 95 % interval", "", "| side | " + " | ".join(bands) + " |",
              "| --- |" + " ---: |" * len(bands)]
    for side in sides:
        e = summary["adversarial"][side]
        v = found["adversarial"][side]["by_visibility"]
        cells = [f"{100 * e['greedy']['by_visibility'][b]['accuracy']:.1f} {_ci(v[b]['greedy'])}; "
                 f"{100 * e['sampled']['by_visibility'][b]['mean']:.1f} {_ci(v[b]['sampled'])}" for b in bands]
        lines.append(f"| {side} | " + " | ".join(cells) + " |")
    counts = histogram(p_yes)
    lines += ["", f"### p(\"yes\") of the baseline's false \"yes\" answers — greedy, all splits ({len(p_yes)} answers, "
              f"median {statistics.median(p_yes) if p_yes else float('nan'):.3f})", "",
              "| p(yes) | " + " | ".join(f"{a:g}–{b:g}" for a, b in zip(P_YES_BINS, P_YES_BINS[1:])) + " |",
              "| --- |" + " ---: |" * (len(P_YES_BINS) - 1), "| answers | " + " | ".join(map(str, counts)) + " |"]
    return "\n".join(lines) + "\n"


def tests_markdown(tests: dict[str, list[stats.PairedTest]], seed_list: str) -> list[str]:
    """The paired tests' table: accuracy difference (points) with its interval, Holm-adjusted p, * if significant."""
    count = {mode: len(found) for mode, found in tests.items()}
    lines = ["### Paired tests of accuracy — method − the side it is against, same questions (points, 95 % "
             "interval; p after Holm)", "",
             f"Greedy: McNemar's exact test on the flipped answers, Holm over its {count['greedy']} comparisons; "
             f"sampled (seeds {seed_list}): paired bootstrap over questions x seeds, Holm over its "
             f"{count['sampled']}. * : p (Holm) < 0.05.", "",
             "| split | side | against | greedy Δ acc. | greedy p | sampled Δ acc. | sampled p |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for greedy, sampled in zip(tests["greedy"], tests["sampled"]):
        cells = [f"{100 * t.difference.estimate:+.1f} {_ci(t.difference)}{' *' if t.significant else ''} | "
                 f"{t.p_holm:.3g}" for t in (greedy, sampled)]
        lines.append(f"| {greedy.group} | {greedy.side} | {greedy.reference} | {cells[0]} | {cells[1]} |")
    return lines


def readouts_markdown(read: dict | None, sides: list[str]) -> list[str]:
    if read is None:
        return []
    lines = ["", "### Two readouts of the greedy answers: POPE's text rule (above) and the first token (p(\"yes\") > "
             "p(\"no\") over the tokenizer's own yes / no tokens): first-token accuracy (%) / readouts disagree (%)",
             "", "| side | " + " | ".join(SPLITS) + " |", "| --- |" + " ---: |" * len(SPLITS)]
    for side in sides:
        cells = [f"{100 * read[s][side]['first_token_accuracy']:.1f} / {100 * read[s][side]['disagreement']:.1f}"
                 for s in SPLITS]
        lines.append(f"| {side} | " + " | ".join(cells) + " |")
    return lines


def histogram(values: list[float], bins=P_YES_BINS) -> list[int]:
    """Counts per bin [bins[i], bins[i+1]) (the last bin closed): ``evaluate.bin_counts``."""
    return evaluate.bin_counts(values, bins)


def write_csv(found: dict, tests: dict[str, list[stats.PairedTest]], out: str) -> list[str]:
    """lab.csv: per split, side and decoding mode, POPE's rates (%) with ``_low`` / ``_high``; lab-tests.csv: the
    paired tests of both modes. Returns the paths."""
    rows = [{"split": split, "side": side, "mode": mode,
             **{k: v for rate in pope.RATES for k, v in interval_fields(rate, entry[mode][rate], 100).items()}}
            for split, by_side in found.items() for side, entry in by_side.items() for mode in ("greedy", "sampled")]
    columns = [Column("split", "split"), Column("side", "side"), Column("mode", "mode")]
    columns += [Column(rate, rate, 2, interval=True) for rate in pope.RATES]
    paths = [os.path.join(out, "lab.csv"), os.path.join(out, "lab-tests.csv")]
    Table("lab", columns, rows).write_csv(paths[0])
    both = tests_table([t for mode in ("greedy", "sampled") for t in tests[mode]], {"accuracy": 100})
    both.columns = [Column("mode", "mode")] + both.columns
    for k, row in enumerate(both.rows):
        row["mode"] = "greedy" if k < len(tests["greedy"]) else "sampled"
    both.write_csv(paths[1])
    return paths


# ---- the plots ----------------------------------------------------------------------------------------------------

def _error_bars(found: dict, split: str, sides: list[str], mode: str) -> list[list[float]]:
    """matplotlib's asymmetric yerr (points below, points above) of the accuracy's 95 % intervals."""
    values = [found[split][s][mode]["accuracy"] for s in sides]
    return [[100 * (v.estimate - v.low) for v in values], [100 * (v.high - v.estimate) for v in values]]


def _band_error_bars(found: dict, band: str, sides: list[str]) -> list[list[float]]:
    values = [found["adversarial"][s]["by_visibility"][band]["sampled"] for s in sides]
    return [[100 * (v.estimate - v.low) for v in values], [100 * (v.high - v.estimate) for v in values]]


def plot(summary: dict, sides: list[str], p_yes: list[float], out: str, found: dict) -> list[str]:
    """The lab's four PNGs under ``out``; returns their paths. Accuracy bars carry their 95 % bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    import numpy as np

    x, paths = np.arange(len(sides)), []

    def save(fig, name, top=1.0):
        fig.tight_layout(rect=(0, 0, 1, top))
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        paths.append(os.path.join(out, name))

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(4.2 * len(SPLITS), 3.6), sharey=True)
    for ax, split in zip(axes, SPLITS):
        entries = [summary[split][s] for s in sides]
        ax.bar(x - 0.2, [100 * e["greedy"]["accuracy"] for e in entries], 0.4,
               yerr=_error_bars(found, split, sides, "greedy"), capsize=2, label="greedy")
        ax.bar(x + 0.2, [100 * e["sampled"]["accuracy"]["mean"] for e in entries], 0.4,
               yerr=_error_bars(found, split, sides, "sampled"), capsize=2, label="sampled, T = 1")
        ax.set_title(f"toy-POPE {split}")
        ax.set_xticks(x, sides, rotation=60, ha="right")
    lowest = min(found[split][s][mode]["accuracy"].low for split in SPLITS for s in sides
                 for mode in ("greedy", "sampled"))
    axes[0].set_ylim(max(0, 10 * (100 * lowest // 10) - 10), 100)  # sharey: one limit for all
    axes[0].set_ylabel("accuracy (%), 95 % interval")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncols=2, fontsize="small")
    save(fig, "accuracy.png", top=0.92)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(p_yes, bins=P_YES_BINS, edgecolor="black")
    ax.set_xlabel('p("yes") of the baseline\'s false "yes" answers (greedy)')
    ax.set_ylabel("answers")
    save(fig, "p_yes.png")

    bands = list(summary["adversarial"]["baseline"]["greedy"]["by_visibility"])
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(sides) * len(bands) / 2), 3.6))
    width = 0.8 / len(bands)
    for k, band in enumerate(bands):
        ax.bar(x + (k - (len(bands) - 1) / 2) * width,
               [100 * summary["adversarial"][s]["sampled"]["by_visibility"][band]["mean"] for s in sides], width,
               yerr=_band_error_bars(found, band, sides), capsize=1.5, label=band)
    ax.set_xticks(x, sides, rotation=60, ha="right")
    ax.set_ylabel("accuracy (%), sampled, 95 % interval")
    ax.set_title("adversarial split, by the asked object's visibility")
    ax.legend(fontsize="small")
    save(fig, "visibility.png")

    others = sides[1:]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(others)), 3.6))
    xo = np.arange(len(others))
    for offset, key, label in ((-0.2, "flips_greedy", "greedy"), (0.2, "flips_sampled", "sampled")):
        def value(side, flip, key=key):
            v = summary["adversarial"][side][key][flip]
            return v["mean"] if isinstance(v, dict) else v
        ax.bar(xo + offset, [value(s, "wrong_to_right") for s in others], 0.4, label=f"wrong → right ({label})")
        ax.bar(xo + offset, [-value(s, "right_to_wrong") for s in others], 0.4, label=f"right → wrong ({label})")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(xo, others, rotation=60, ha="right")
    ax.set_ylabel("answers flipped vs baseline")
    ax.set_title("adversarial split")
    ax.legend(fontsize="x-small")
    save(fig, "flips.png")
    return paths


# ---- the command ------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-llava")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--n", type=int, default=200, help="toy-POPE scenes (two questions each per split)")
    parser.add_argument("--seeds", type=int, default=3, help="sampled runs, one seed each (at least 1)")
    parser.add_argument("--seed", type=int, default=0, help="the first sampling seed, and the scenes' seed")
    parser.add_argument("--method", action="append", default=None, metavar="NAME[:k=v,...]",
                        help=f"a method to run (repeatable; default: {', '.join(DEFAULT_METHODS)})")
    parser.add_argument("--no-controls", action="store_true", help="leave out APC-only, PBA and OLM")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.n < 1:
        parser.error("--n and --seeds must be at least 1")
    import torch

    torch.set_num_threads(args.threads)
    methods = [parse_method(spec) for spec in (args.method or DEFAULT_METHODS)]
    if not args.no_controls:
        methods += [c for c in control_methods() if c[0] not in {m for m, _ in methods}]
    sides = ["baseline"] + [name for name, _ in methods]
    os.makedirs(args.out, exist_ok=True)
    files, facts = write_questions(args.out, args.n, args.seed)
    by_run = decode_runs(args.model, files, args.out, methods, args.seeds, args.seed, not args.no_progress)
    summary = summarise(by_run, facts, sides)
    p_yes = false_yes_p_yes(by_run["greedy"], facts)
    seeds = [args.seed + k for k in range(args.seeds)]
    found, tests = intervals(by_run, facts, sides), paired_tests(by_run, facts, sides)
    read = readouts(by_run, facts, sides)
    text = markdown(summary, sides, seeds, p_yes, args.model, found, tests, read)
    with open(os.path.join(args.out, "lab.md"), "w", encoding="utf-8") as f:
        f.write(text)
    write_json(os.path.join(args.out, "lab.json"), {
        "model": args.model, "n": args.n, "seeds": seeds, "methods": [[m, p] for m, p in methods],
        "summary": summary, "baseline_false_yes_p_yes": p_yes, "bootstrap": {
            "resamples": stats.RESAMPLES, "seed": stats.SEED, "confidence": stats.CONFIDENCE},
        "intervals": _plain(found),
        "readouts": read,
        "paired_tests": {mode: [t.to_dict() for t in found_tests] for mode, found_tests in tests.items()},
        "p_yes": {run: {split: [r["p_yes"] for r in records] for split, records in splits.items()}
                  for run, splits in by_run.items()}})
    paths = write_csv(found, tests, args.out) + plot(summary, sides, p_yes, args.out, found)
    print(text)
    print("wrote " + ", ".join([os.path.join(args.out, n) for n in ("lab.md", "lab.json")] + paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
