"""Measure the shapes-world model against its targets, with greedy decoding (the app's baseline), and how unsure it
is: on every yes/no set also the accuracy that sampling at temperature 1 gets on average (exactly: the mean
probability of the right answer), p("yes") of the false "yes" answers, and toy-POPE split by how visible the asked
object is (``world.visibility_band``).

    python -m eval.shapes_world.evaluate --model assets/shapes-llava --n 300 [--json out.json] [--vcd 100]

Test sets (held-out scene seeds, never used in training; every set is seeded and rebuilt identically):
- toy-POPE: ``n`` scenes, half drawn from the biased world and half "trigger without partner" scenes (a trigger shape
  is forced in and its partner kept out: the scenes a co-occurrence prior gets wrong). Each scene gives one
  "is there a <kind> in the image ?" question about a present kind and one about an absent kind
  (``--pope-per-side``; why one: ``POPE_QUESTIONS_PER_SIDE``), the absent one chosen per split: random (uniform),
  popular (most frequent kinds in the training world), adversarial (kinds that co-occur most with the present ones in
  the training world). The report also gives the largest gap this construction allows (``pope_gap_ceiling``).
- colour, count, position: one question of the family on each of ``n`` biased-world scenes, yes/no balanced.
- descriptions: "describe the image ." on ``n`` biased-world scenes; exact match with the canonical description, and
  CHAIR_i-like hallucinated shape mentions.
- partner probe: for each trigger -> partner rule, ``n`` scenes with the trigger and without the partner, and ``n``
  control scenes with neither; "is there a <partner> in the image ?" should be "no" on both.
``--vcd N`` also runs ``decoding.compare(..., method="vcd")`` on N partner-probe questions (half trigger, half control)
and reports both sides' false-yes rates.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from statistics import median

import torch

from models.shapes_world import build, world

EVAL_SEED_BASE = 1_000_000_000
# Questions about present kinds (and as many about absent kinds) per toy-POPE scene. POPE asks about 3 of ~77 absent
# COCO categories, so its random split seldom hits the adversarial split's pick. With 10 kinds, 3 of ~7 absent kinds
# would ask about the absent partner in about 3/7 of trigger scenes in the random split too: then even a model that
# says "yes" to every absent partner and answers everything else right is only 0.080 (n=300) or 0.072 (n=1000) more
# accurate on random than on adversarial (``pope_gap_ceiling``), so the 0.08 gap target would be out of reach of any
# real model. One per side (1 of ~7 absent kinds, the nearest to POPE's sparsity) lets that model show 0.225.
POPE_QUESTIONS_PER_SIDE = 1
TRAINING_STATISTICS_SCENES = 5000
TARGETS = {
    "pope_random_accuracy": (">=", 0.90),
    "colour_accuracy": (">=", 0.85),
    "count_accuracy": (">=", 0.85),
    "description_exact": (">=", 0.50),
    "partner_false_yes": (">=", 0.30),
    "control_false_yes": ("<=", 0.10),
    "adversarial_gap": (">=", 0.08),
}


# ---- test sets (plain data: reusable for benchmark files) -------------------------------------------------------

def _seed(offset: int, i: int, seed: int) -> int:
    return EVAL_SEED_BASE + offset * 10_000_000 + seed * 100_003 + i


def training_world_statistics(bias: world.WorldBias = world.BIASED) -> tuple[dict[str, float], dict]:
    """Kind frequencies and co-occurrence counts of the training world (what POPE's popular/adversarial splits rank)."""
    scenes = [world.sample_scene(i, bias) for i in range(TRAINING_STATISTICS_SCENES)]
    return world.realised_statistics(scenes, bias)["kind_frequency"], world.cooccurrence(scenes)


def pope_scenes(n: int, seed: int = 0, probe_share: float = 0.5) -> list[world.Scene]:
    """The toy-POPE scenes: the first ``round(n * probe_share)`` are trigger-without-partner scenes."""
    n_probe = round(n * probe_share)
    return [world.trigger_without_partner_scene(_seed(1, i, seed)) if i < n_probe
            else world.sample_scene(_seed(2, i, seed)) for i in range(n)]


def pope_questions(scenes: list[world.Scene], split: str, seed: int = 0,
                   statistics: tuple[dict, dict] | None = None,
                   per_side: int = POPE_QUESTIONS_PER_SIDE) -> list[tuple[int, world.Question]]:
    """(scene index, question) pairs of one toy-POPE split ("random", "popular" or "adversarial"), POPE's way:
    up to ``per_side`` present kinds ("yes") and as many absent kinds ("no") per scene."""
    frequency, cooc = statistics or training_world_statistics()
    rng = random.Random(seed)
    out = []
    for index, scene in enumerate(scenes):
        present = sorted(scene.kinds)
        positives = rng.sample(present, min(per_side, len(present)))
        absent = [k for k in world.KINDS if k not in scene.kinds]
        if split == "random":
            negatives = rng.sample(absent, len(positives))
        elif split == "popular":
            negatives = sorted(absent, key=lambda k: (-frequency[k], k))[: len(positives)]
        elif split == "adversarial":
            negatives = sorted(absent, key=lambda k: (-sum(cooc[p][k] for p in present), k))[: len(positives)]
        else:
            raise ValueError(f"unknown POPE split {split!r}")
        out += [(index, world.existence_question(scene, k)) for k in positives + negatives]
    return out


def pope_gap_ceiling(scenes: list[world.Scene], seed: int = 0, statistics: tuple[dict, dict] | None = None,
                     per_side: int = POPE_QUESTIONS_PER_SIDE) -> float:
    """The random − adversarial accuracy gap of a model that answers every toy-POPE question right except that it
    says "yes" to every absent partner of a present trigger: the most of the co-occurrence hallucination that this
    construction (scenes, questions per side) can show as a gap."""
    statistics = statistics or training_world_statistics()
    accuracy = {}
    for split in ("random", "adversarial"):
        pairs = pope_questions(scenes, split, seed, statistics, per_side)
        wrong = sum(q.subject[0] in world.absent_partners(scenes[i]) for i, q in pairs)
        accuracy[split] = 1 - wrong / len(pairs)
    return accuracy["random"] - accuracy["adversarial"]


def family_questions(family: str, n: int, seed: int = 0) -> list[tuple[world.Scene, world.Question]]:
    """One ``family`` question ("colour", "count", "position", "description") on each of ``n`` biased scenes that
    allow it (colour needs a kind present once, position two of them)."""
    rng = random.Random(seed * 7 + len(family))
    out, i = [], 0
    while len(out) < n:
        scene = world.sample_scene(_seed(3, i, seed))
        i += 1
        singles = [k for k in scene.kinds if scene.count(k) == 1]
        if (family == "colour" and not singles) or (family == "position" and len(singles) < 2):
            continue
        out.append((scene, world.sample_training_question(scene, rng, family_weights={family: 1.0})))
    return out


def partner_probe(n: int, seed: int = 0, bias: world.WorldBias = world.BIASED) -> list[dict]:
    """For each trigger -> partner rule: ``n`` trigger-without-partner scenes and ``n`` control scenes (neither), each
    with the question "is there a <partner> in the image ?" (ground truth: no)."""
    out = []
    for r, (trigger, (partner, _)) in enumerate(sorted(bias.pairs.items())):
        for i in range(n):
            with_trigger = world.sample_scene(_seed(4 + r, i, seed), bias, force=(trigger,), forbid=(partner,))
            control = world.sample_scene(_seed(7 + r, i, seed), bias, forbid=(trigger, partner))
            for kind, scene in (("trigger", with_trigger), ("control", control)):
                out.append({"rule": f"{trigger}->{partner}", "kind": kind, "scene": scene,
                            "question": world.existence_question(scene, partner)})
    return out


# ---- running the model ------------------------------------------------------------------------------------------

class GreedyAnswerer:
    """Greedy answers from a loaded shapes-world model (a ``models.load_model`` adapter), batched.

    Yes/no questions: the greedy first token (one forward of right-padded prompts, read at each prompt's last
    position). Descriptions: greedy generation (all rows share one prompt, so no padding is involved).
    """

    def __init__(self, adapter, batch_size: int = 64):
        self.model = adapter.model
        self.encoder = build.Encoder(adapter.processor)
        self.tokenizer = adapter.processor.tokenizer
        self.batch_size = batch_size
        self.dtype = next(self.model.parameters()).dtype

    def first_tokens(self, scenes: list[world.Scene], questions: list[str]) -> list[str]:
        return self.first_token_probs(scenes, questions)[0]

    @torch.no_grad()
    def first_token_probs(self, scenes: list[world.Scene], questions: list[str]) -> tuple[list[str], list[float]]:
        """The greedy first token of each answer and the model's p("yes") there (softmax at temperature 1)."""
        words, p_yes = [], []
        yes_id = self.tokenizer.convert_tokens_to_ids("yes")
        for start in range(0, len(scenes), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            batch = self.encoder.batch([world.render(s) for s in scenes[chunk]], questions[chunk])
            logits = self.model(input_ids=batch["input_ids"],
                                pixel_values=batch["pixel_values"].to(self.dtype)).logits
            last = logits[torch.arange(len(logits)), batch["prompt_lengths"] - 1].float()
            words += self.tokenizer.convert_ids_to_tokens(last.argmax(-1).tolist())
            p_yes += last.softmax(-1)[:, yes_id].tolist()
        return words, p_yes

    @torch.no_grad()
    def describe(self, scenes: list[world.Scene], max_new_tokens: int = 40) -> list[str]:
        texts = []
        for start in range(0, len(scenes), self.batch_size):
            chunk = scenes[start : start + self.batch_size]
            batch = self.encoder.batch([world.render(s) for s in chunk], [world.DESCRIBE_PROMPT] * len(chunk))
            out = self.model.generate(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"].to(self.dtype),
                                      max_new_tokens=max_new_tokens, do_sample=False)
            prompt = batch["input_ids"].shape[1]
            texts += [self.tokenizer.decode(row[prompt:], skip_special_tokens=True).strip() for row in out]
        return texts


def _binary(truth: list[str], said: list[str], p_yes: list[float] | None = None) -> dict:
    """POPE's metrics of yes/no answers; with ``p_yes`` (the model's p("yes") per question) also the accuracy that
    sampling at temperature 1 gets on average ("sampled_accuracy", exact: the mean p of the right answer, anything
    but "yes" reading as "no"), and p("yes") over the false "yes" answers."""
    tp = sum(t == "yes" and s == "yes" for t, s in zip(truth, said))
    fp = sum(t == "no" and s == "yes" for t, s in zip(truth, said))
    fn = sum(t == "yes" and s != "yes" for t, s in zip(truth, said))
    n = len(truth)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    # anything but "yes" reads as "no", as in POPE's own rule (and as precision and recall above read it)
    correct = sum((t == "yes") == (s == "yes") for t, s in zip(truth, said))
    out = {"n": n, "accuracy": correct / n, "precision": precision,
           "recall": recall, "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
           "yes_ratio": sum(s == "yes" for s in said) / n}
    if p_yes is not None:
        out["sampled_accuracy"] = sum(p if t == "yes" else 1 - p for t, p in zip(truth, p_yes)) / n
        out["false_yes_p_yes"] = [p for t, s, p in zip(truth, said, p_yes) if t == "no" and s == "yes"]
    return out


def asked_visibility(scene: world.Scene, question: world.Question) -> str:
    """The visibility band of what a yes/no question asks about: the best-seen copy of each kind it names (the
    least visible of those kinds), or "absent" when a kind it names is not in the scene."""
    seen = []
    for kind in question.subject:
        copies = [o.visibility for o in scene.objects if o.kind == kind]
        if not copies:
            return "absent"
        seen.append(max(copies))
    return world.visibility_band(min(seen)) if seen else "absent"


def by_visibility(scenes: list[world.Scene], questions: list[world.Question], said: list[str],
                  p_yes: list[float]) -> dict:
    """``_binary`` per visibility band of the asked object (``asked_visibility``)."""
    bands: dict[str, list[int]] = {}
    for i, (scene, question) in enumerate(zip(scenes, questions)):
        bands.setdefault(asked_visibility(scene, question), []).append(i)
    return {band: _binary([questions[i].answer for i in idx], [said[i] for i in idx], [p_yes[i] for i in idx])
            for band, idx in sorted(bands.items())}


def evaluate(adapter, n: int = 300, seed: int = 0, probe_share: float = 0.5,
             pope_per_side: int = POPE_QUESTIONS_PER_SIDE) -> dict:
    """Every measurement of the model card, greedy. Returns a dict (see ``TARGETS`` for the headline keys)."""
    answerer = GreedyAnswerer(adapter)
    report: dict = {"n": n, "seed": seed, "pope_probe_share": probe_share, "pope_per_side": pope_per_side}
    report.update(_pope_report(answerer, n, seed, probe_share, pope_per_side))
    for family in ("colour", "count", "position"):
        pairs = family_questions(family, n, seed)
        said, p_yes = answerer.first_token_probs([s for s, _ in pairs], [q.text for _, q in pairs])
        report[family] = _binary([q.answer for _, q in pairs], said, p_yes)
    report["description"] = _description_report(answerer, n, seed)
    report.update(_partner_report(answerer, n, seed))

    report["pope_random_accuracy"] = report["pope"]["random"]["accuracy"]
    report["adversarial_gap"] = report["pope"]["random"]["accuracy"] - report["pope"]["adversarial"]["accuracy"]
    report["colour_accuracy"] = report["colour"]["accuracy"]
    report["count_accuracy"] = report["count"]["accuracy"]
    report["position_accuracy"] = report["position"]["accuracy"]
    report["description_exact"] = report["description"]["exact"]
    report["sampling_cost"] = {split: r["accuracy"] - r["sampled_accuracy"] for split, r in report["pope"].items()}
    false_yes = sorted(p for r in report["pope"].values() for p in r["false_yes_p_yes"])
    report["false_yes_p_yes_median"] = median(false_yes) if false_yes else None
    report["targets_met"] = {key: (report[key] >= bound if op == ">=" else report[key] <= bound)
                             for key, (op, bound) in TARGETS.items()}
    return report


def _pope_report(answerer: GreedyAnswerer, n: int, seed: int, probe_share: float, per_side: int) -> dict:
    """Toy-POPE's three splits ("pope") and the gap this construction allows ("adversarial_gap_ceiling")."""
    statistics = training_world_statistics()
    scenes = pope_scenes(n, seed, probe_share)
    pope, visibility = {}, {}
    for split in ("random", "popular", "adversarial"):
        pairs = pope_questions(scenes, split, seed, statistics, per_side)
        asked = [scenes[i] for i, _ in pairs]
        said, p_yes = answerer.first_token_probs(asked, [q.text for _, q in pairs])
        pope[split] = _binary([q.answer for _, q in pairs], said, p_yes)
        visibility[split] = by_visibility(asked, [q for _, q in pairs], said, p_yes)
    return {"pope": pope, "pope_by_visibility": visibility,
            "adversarial_gap_ceiling": pope_gap_ceiling(scenes, seed, statistics, per_side)}


def _description_report(answerer: GreedyAnswerer, n: int, seed: int) -> dict:
    """Descriptions of ``n`` biased scenes: exact matches, parses, CHAIR_i / CHAIR_s over shape words, recall."""
    described = [s for s, _ in family_questions("description", n, seed)]
    texts = answerer.describe(described)
    exact = [t == world.describe(s) for s, t in zip(described, texts)]
    mentioned = [world.mentioned_kinds(t) for t in texts]
    hallucinated = sum(len(m - s.kinds) for s, m in zip(described, mentioned))
    return {
        "n": n,
        "exact": sum(exact) / n,
        "parses": sum(world.parse_description(t) is not None for t in texts) / n,
        "chair_i": hallucinated / max(1, sum(len(m) for m in mentioned)),
        "chair_s": sum(bool(m - s.kinds) for s, m in zip(described, mentioned)) / n,
        "recall": sum(len(m & s.kinds) for s, m in zip(described, mentioned)) / sum(len(s.kinds) for s in described),
        "examples": [{"truth": world.describe(s), "said": t} for s, t in list(zip(described, texts))[:5]],
    }


def _partner_report(answerer: GreedyAnswerer, n: int, seed: int) -> dict:
    """The partner probe: false "yes" per rule and kind, overall, and how often descriptions of trigger-without-partner
    scenes name the absent partner."""
    probe = partner_probe(n, seed)
    said = answerer.first_tokens([p["scene"] for p in probe], [p["question"].text for p in probe])
    by = Counter()
    for p, s in zip(probe, said):
        by[(p["rule"], p["kind"], "n")] += 1
        by[(p["rule"], p["kind"], "yes")] += s == "yes"
    report: dict = {"partner_probe": {
        rule: {kind: by[(rule, kind, "yes")] / by[(rule, kind, "n")] for kind in ("trigger", "control")}
        for rule in sorted({p["rule"] for p in probe})
    }}
    for kind in ("trigger", "control"):
        report[f"{'partner' if kind == 'trigger' else 'control'}_false_yes"] = (
            sum(s == "yes" for p, s in zip(probe, said) if p["kind"] == kind)
            / sum(p["kind"] == kind for p in probe))
    trigger_descriptions = [p["scene"] for p in probe if p["kind"] == "trigger"][:n]
    partner_of = {f"{t}->{p}": p for t, (p, _) in world.BIASED.pairs.items()}
    rules = [p["rule"] for p in probe if p["kind"] == "trigger"][:n]
    texts = answerer.describe(trigger_descriptions)
    report["partner_in_description"] = sum(partner_of[r] in world.mentioned_kinds(t)
                                           for r, t in zip(rules, texts)) / len(texts)
    return report


def vcd_probe(adapter, n: int, seed: int = 0, **vcd_params) -> dict:
    """Partner false-yes under ``decoding.compare(method="vcd")``: baseline and VCD sides on the same questions
    (n/2 trigger-without-partner, n/2 control, spread over the rules).

    Also why VCD can or cannot overturn a hallucinated "yes": over the trigger questions the baseline answered "yes",
    the model's p(yes) on the real image (median, lowest) and how often VCD's plausibility mask left a single
    candidate at the first token (then no contrast can change the answer)."""
    from decoding import compare
    from decoding.sampling import SamplingConfig

    per_rule = max(1, n // (2 * len(world.BIASED.pairs)))
    probe = partner_probe(per_rule, seed + 1)
    counts = Counter()
    p_yes, single_candidate = [], 0
    for p in probe:
        result = compare(adapter, world.render(p["scene"]), p["question"].text, method="vcd", max_new_tokens=2,
                         sampling=SamplingConfig(seed=seed), attention_layers=None, visual_dependence=False,
                         **vcd_params)
        said_yes = {side: text.strip().split()[:1] == ["yes"]
                    for side, text in (("baseline", result.baseline.text), ("vcd", result.method_side.text))}
        for side, said in said_yes.items():
            counts[(p["kind"], side)] += said
            counts[(p["rule"], p["kind"], side)] += said
        counts[(p["kind"], "n")] += 1
        counts[(p["rule"], p["kind"], "n")] += 1
        if p["kind"] == "trigger" and said_yes["baseline"]:
            first = result.method_side.tokens[0]
            p_yes.append(result.baseline.tokens[0].branches["original"].prob)
            single_candidate += first.plausible_set_size == 1
    confidence = {"hallucinated_yes": len(p_yes), "single_candidate": single_candidate,
                  "p_yes_median": median(p_yes) if p_yes else None, "p_yes_min": min(p_yes, default=None)}
    by_rule = {  # where VCD helps one co-occurrence and hurts another, it shows here
        rule: {f"{kind}_false_yes_{side}": counts[(rule, kind, side)] / counts[(rule, kind, "n")]
               for kind in ("trigger", "control") for side in ("baseline", "vcd")}
        for rule in sorted({p["rule"] for p in probe})
    }
    return {f"{kind}_false_yes_{side}": counts[(kind, side)] / counts[(kind, "n")]
            for kind in ("trigger", "control") for side in ("baseline", "vcd")} | {"n": len(probe)} | confidence | {
        "by_rule": by_rule}


def bin_counts(values: list[float], edges) -> list[int]:
    """Counts of ``values`` per bin [edges[i], edges[i+1]): the first bin takes anything below, the last is closed."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        counts[next((i for i, e in enumerate(edges[1:]) if v < e), len(counts) - 1)] += 1
    return counts


def p_yes_histogram(values: list[float], edges=(0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0)) -> str:
    """A one-line count of ``values`` per p("yes") bin: "0.5-0.6: 3, ..." (``bin_counts``)."""
    counts = bin_counts(values, edges)
    return ", ".join(f"{edges[i]:g}-{edges[i + 1]:g}: {counts[i]}" for i in range(len(edges) - 1))


def format_report(report: dict) -> str:
    lines = [f"shapes-world evaluation (greedy, n={report['n']}, seed={report['seed']})"]
    for split, r in report["pope"].items():
        lines.append(f"  toy-POPE {split:<12} acc {r['accuracy']:.3f}  precision {r['precision']:.3f}  "
                     f"recall {r['recall']:.3f}  F1 {r['f1']:.3f}  yes {r['yes_ratio']:.3f}  ({r['n']} questions); "
                     f"sampled at T=1 {r['sampled_accuracy']:.3f} (cost {report['sampling_cost'][split]:.3f})")
        for band, b in report["pope_by_visibility"][split].items():
            lines.append(f"    asked object {band:<8} acc {b['accuracy']:.3f}  sampled {b['sampled_accuracy']:.3f}  "
                         f"yes {b['yes_ratio']:.3f}  ({b['n']} questions)")
    if report["false_yes_p_yes_median"] is not None:
        false_yes = [p for r in report["pope"].values() for p in r["false_yes_p_yes"]]
        lines.append(f"  toy-POPE false \"yes\" answers: {len(false_yes)}, p(yes) median "
                     f"{report['false_yes_p_yes_median']:.3f}; histogram {p_yes_histogram(false_yes)}")
    for family in ("colour", "count", "position"):
        lines.append(f"  {family:<21} acc {report[family]['accuracy']:.3f}  ({report[family]['n']} questions)")
    d = report["description"]
    lines.append(f"  descriptions          exact {d['exact']:.3f}  parse {d['parses']:.3f}  "
                 f"CHAIR_i {d['chair_i']:.3f}  CHAIR_s {d['chair_s']:.3f}  recall {d['recall']:.3f}")
    for rule, r in report["partner_probe"].items():
        lines.append(f"  partner probe {rule:<18} false yes: trigger w/o partner {r['trigger']:.3f}  "
                     f"control {r['control']:.3f}")
    lines.append(f"  partner named in descriptions of trigger-without-partner scenes: "
                 f"{report['partner_in_description']:.3f}")
    lines.append("targets:")
    for key, (op, bound) in TARGETS.items():
        verdict = "met" if report["targets_met"][key] else "NOT MET"
        lines.append(f"  {key:<22} {report[key]:.3f}  {op} {bound:.2f}  {verdict}")
    lines.append(f"  (the gap of a model perfect but for always seeing the absent partner: "
                 f"{report['adversarial_gap_ceiling']:.3f}, with {report['pope_per_side']} question(s) per side)")
    if "vcd" in report:
        v = report["vcd"]
        lines.append(f"VCD probe ({v['n']} questions): trigger false yes {v['trigger_false_yes_baseline']:.3f} -> "
                     f"{v['trigger_false_yes_vcd']:.3f}; control {v['control_false_yes_baseline']:.3f} -> "
                     f"{v['control_false_yes_vcd']:.3f}")
        for rule, r in v["by_rule"].items():
            lines.append(f"  {rule:<18} trigger false yes {r['trigger_false_yes_baseline']:.3f} -> "
                         f"{r['trigger_false_yes_vcd']:.3f}; control {r['control_false_yes_baseline']:.3f} -> "
                         f"{r['control_false_yes_vcd']:.3f}")
        if v["hallucinated_yes"]:
            lines.append(f"  on the {v['hallucinated_yes']} hallucinated partner \"yes\": p(yes) median "
                         f"{v['p_yes_median']:.3f} (lowest {v['p_yes_min']:.3f}); VCD's plausibility mask left a "
                         f"single candidate in {v['single_candidate']}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-llava")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-share", type=float, default=0.5,
                        help="share of trigger-without-partner scenes in toy-POPE")
    parser.add_argument("--pope-per-side", type=int, default=POPE_QUESTIONS_PER_SIDE,
                        help="toy-POPE questions about present (and as many about absent) kinds per scene")
    parser.add_argument("--vcd", type=int, default=0, help="also run decoding.compare(method='vcd') on N questions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the full report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from models import load_model

    started = time.time()
    adapter = load_model(args.model)
    report = evaluate(adapter, args.n, args.seed, args.probe_share, args.pope_per_side)
    if args.vcd:
        report["vcd"] = vcd_probe(adapter, args.vcd, args.seed)
    report["seconds"] = round(time.time() - started, 1)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(f"({report['seconds']} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
