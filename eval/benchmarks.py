"""Each benchmark as the runner sees it: what to decode (image + prompt requests) and how to score the answers.

A request is one image with one prompt; items that share both (a POPE question that appears in several splits)
share one request, so they are decoded once. Its key is a hash of the image path and the prompt, so the same answer is
found again on a rerun whatever the order, the limit or the number of processes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import chair, mme, pope, stats
from .chair_words import CHAIR_VARIANTS, DEFAULT_CHAIR_VARIANT, Tagger
from .errors import EvalInputError
from .report import Column, Table, interval_fields, tests_table

CHAIR_PROMPT = "Please describe this image in detail."  # OPERA's CHAIR prompt, taken up by later decoding papers

DEFAULT_MAX_NEW_TOKENS = {"pope": 64, "mme": 64, "chair": 512}


@dataclass(frozen=True)
class Request:
    key: str
    image: str  # path relative to the benchmark's image root
    prompt: str


def request_key(image: str, prompt: str) -> str:
    return hashlib.sha1(f"{image}\n{prompt}".encode("utf-8")).hexdigest()[:16]


@dataclass
class Scored:
    """table: the results; details: every count behind it (metrics.json's "metrics"); statistics: the intervals and
    paired tests (metrics.json's "statistics"); tables: more tables (the paired tests); plot(out_dir) -> the files
    it wrote, or None."""

    table: Table
    details: dict[str, Any]
    statistics: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    plot: Callable[[str], list[str]] | None = None


@dataclass
class Benchmark:
    """name; image_root: folder the requests' image paths are relative to; requests: what to decode, in order;
    score(answers, sides, records): answers maps request key -> side name -> answer text; sides: "baseline" then the
    methods; records (optional): request key -> the runner's whole answer record (POPE's first-token readout).
    settings: the benchmark's choices, recorded with the results."""

    name: str
    image_root: str
    requests: list[Request]
    score: Callable[..., Scored]
    settings: dict[str, Any] = field(default_factory=dict)


class _Requests:
    """Requests in first-seen order, one per distinct (image, prompt)."""

    def __init__(self):
        self.by_key: dict[str, Request] = {}

    def add(self, image: str, prompt: str) -> str:
        key = request_key(image, prompt)
        self.by_key.setdefault(key, Request(key, image, prompt))
        return key

    def all(self) -> list[Request]:
        return list(self.by_key.values())


def resolve_suffix(suffix: str | None) -> str:
    """A named suffix of ``pope.PROMPT_SUFFIXES``, else the given text appended after a space."""
    if suffix is None:
        return ""
    if suffix in pope.PROMPT_SUFFIXES:
        return pope.PROMPT_SUFFIXES[suffix]
    return " " + suffix.strip()


def _check_image(root: str, image: str, named_in: str) -> None:
    path = os.path.join(root, image)
    if not os.path.isfile(path):
        raise EvalInputError(f"image {path!r} (named in {named_in}) does not exist")


def comparisons(sides: list[str]) -> list[tuple[str, str]]:
    """The paired comparisons of one run: every side against the baseline, and every method (not a control) against
    every control of the run (APC-only, PBA, OLM: ``decoding.methods`` kind "control")."""
    from decoding.methods import REGISTRY

    controls = [s for s in sides if s in REGISTRY and REGISTRY[s].kind == "control"]
    pairs = [(side, "baseline") for side in sides if side != "baseline"]
    return pairs + [(side, c) for side in sides if side != "baseline" and side not in controls for c in controls]


def bootstrap_settings() -> dict[str, Any]:
    return {"resamples": stats.RESAMPLES, "seed": stats.SEED, "confidence": stats.CONFIDENCE}


def _intervals_note(what: str) -> str:
    return (f"[low, high]: 95 % percentile-bootstrap interval over {what} ({stats.RESAMPLES} resamples, seed "
            f"{stats.SEED}).")


# ---- POPE ------------------------------------------------------------------------------------------------------------

_POPE_COLUMNS = [
    Column("split", "Split"), Column("method", "Method"), Column("accuracy", "Accuracy", 2, interval=True),
    Column("precision", "Precision", 2, interval=True), Column("recall", "Recall", 2, interval=True),
    Column("f1", "F1", 2, interval=True), Column("yes_ratio", "Yes ratio", 2, interval=True),
    Column("n", "Questions", 0),
]
_FIRST_TOKEN_COLUMNS = [Column("first_token_accuracy", "Acc., first token", 2),
                        Column("disagreement", "Readouts disagree", 2)]


def pope_benchmark(
    question_files: list[str],
    image_dir: str,
    prompt_suffix: str | None = "none",
    limit: int | None = None,
) -> Benchmark:
    """POPE over the given split files (e.g. coco_pope_random.json ...), images from ``image_dir``; ``limit``: the
    first N questions of each split."""
    if not os.path.isdir(image_dir):
        raise EvalInputError(f"image folder {image_dir!r} does not exist (expected the COCO val2014 images)")
    suffix = resolve_suffix(prompt_suffix)
    splits: dict[str, list[pope.PopeItem]] = {}
    sources: dict[str, str] = {}
    for path in question_files:
        items = pope.read_pope(path)
        split = items[0].split
        if split in splits:
            raise EvalInputError(f"{path} and {sources[split]} are both the {split!r} split")
        splits[split] = items[:limit] if limit else items
        sources[split] = path
    requests = _Requests()
    item_keys: dict[str, list[tuple[pope.PopeItem, str]]] = {}
    for split, items in splits.items():
        for item in items:
            _check_image(image_dir, item.image, f"{sources[split]}, question_id {item.question_id}")
            item_keys.setdefault(split, []).append((item, requests.add(item.image, item.question + suffix)))

    def score(answers: dict[str, dict[str, str]], sides: list[str], records: dict | None = None) -> Scored:
        rows, details, intervals, readout, tests = [], {}, {}, {}, []
        for split, keyed in item_keys.items():
            labels = [item.label for item, _ in keyed]
            said = {side: [pope.parse_pope_answer(answers[key][side]) for _, key in keyed] for side in sides}
            for side in sides:
                details.setdefault(split, {})[side] = metrics = pope.pope_metrics(labels, said[side])
                found = pope.pope_intervals(labels, said[side])
                intervals.setdefault(split, {})[side] = {k: v.to_dict() for k, v in found.items()}
                row = {"split": split, "method": side, **{k: _percent(k, v) for k, v in metrics.items()}}
                for rate, value in found.items():
                    row.update(interval_fields(rate, value, 100))
                first = _first_token_said(records, keyed, side)
                if first is not None:
                    readout.setdefault(split, {})[side] = _readouts(labels, said[side], first)
                    row["first_token_accuracy"] = 100 * readout[split][side]["first_token"]["accuracy"]
                    row["disagreement"] = 100 * readout[split][side]["disagreement"]
                rows.append(row)
            correct = {side: [p == t for p, t in zip(said[side], labels)] for side in sides}
            tests += [stats.mcnemar(correct[a], correct[b], (a, b), split) for a, b in comparisons(sides)]
        tests = stats.holm(tests)
        columns = _POPE_COLUMNS + (_FIRST_TOKEN_COLUMNS if readout else [])
        notes = [_intervals_note("the questions")] + ([_FIRST_TOKEN_NOTE] if readout else [])
        statistics = {"bootstrap": bootstrap_settings(), "intervals": intervals, "readouts": readout,
                      "paired_tests": [t.to_dict() for t in tests]}
        tables = [tests_table(tests, {"accuracy": 100}, "POPE: paired tests of accuracy (McNemar's exact test)")]
        return Scored(Table("POPE (%)", columns, rows, notes), details, statistics, tables if tests else [])

    return Benchmark(
        "pope", image_dir, requests.all(), score,
        {"questions": {split: os.path.abspath(path) for split, path in sources.items()},
         "prompt_suffix": suffix, "limit": limit},
    )


_FIRST_TOKEN_NOTE = (
    "Acc., first token: accuracy when the answer is read from its first token, \"yes\" where p(yes) > p(no) summed "
    "over the tokenizer's own yes / no tokens (among the first token's recorded top candidates); Readouts disagree: "
    "% of questions where that and POPE's text rule (the figures before it, and what the papers report) differ.")


def _first_token_said(records: dict | None, keyed: list, side: str) -> list[str] | None:
    """The first-token readout of every question for ``side``, or None where a record lacks it (an older run)."""
    if not records:
        return None
    said = []
    for _, key in keyed:
        recorded = records[key].get("first_token") or {}
        if side not in recorded:
            return None
        probs = recorded[side] or {"yes": None, "no": None}  # None: an empty answer, read as neither
        said.append(pope.first_token_answer(probs["yes"], probs["no"]))
    return said


def _readouts(labels: list[str], text_said: list[str], first_said: list[str]) -> dict:
    return {"first_token": pope.pope_metrics(labels, first_said),
            "disagreement": sum(a != b for a, b in zip(text_said, first_said)) / len(labels)}


_PERCENT_KEYS = {"accuracy", "precision", "recall", "f1", "yes_ratio", "chair_s", "chair_i"}


def _percent(key: str, value):
    return 100 * value if key in _PERCENT_KEYS else value


# ---- CHAIR -----------------------------------------------------------------------------------------------------------

_CHAIR_COLUMNS = [
    Column("method", "Method"), Column("chair_s", "CHAIR_s", 1, interval=True),
    Column("chair_i", "CHAIR_i", 1, interval=True), Column("recall", "Recall", 1, interval=True),
    Column("length", "Len", 1, interval=True), Column("chair_i_matched", "CHAIR_i at matched length", 1, interval=True),
    Column("n", "Images", 0),
]
_CHAIR_TESTED = ("chair_s", "chair_i", "chair_i_matched", "recall")  # matched: see _MATCHED_NOTE


def chair_benchmark(
    image_dir: str,
    instances_path: str,
    captions_path: str | None = None,
    image_list: str | None = None,
    num_images: int = 500,
    sample_seed: int = 0,
    prompt: str = CHAIR_PROMPT,
    synonyms_path: str | None = None,
    limit: int | None = None,
    variant: str = DEFAULT_CHAIR_VARIANT,
    tagger: Tagger | None = None,
) -> Benchmark:
    """CHAIR on COCO images: those of ``image_list`` (ids or file names), else ``num_images`` drawn with
    ``sample_seed`` from the instances file; ``limit``: the first N of them. ``variant``: the reference chair.py to
    reproduce, "lvlm" or "original" (``chair_words.CHAIR_VARIANTS``); ``tagger`` replaces nltk's for lvlm."""
    if not os.path.isdir(image_dir):
        raise EvalInputError(f"image folder {image_dir!r} does not exist (expected the COCO val2014 images)")
    vocabulary = _chair_vocabulary(synonyms_path, variant, tagger)
    instances = chair.read_coco_instances(instances_path)
    captions = chair.read_coco_captions(captions_path) if captions_path else None
    image_ids = _chair_image_ids(instances, instances_path, image_list, num_images, sample_seed, limit)
    for image_id in image_ids:
        _check_image(image_dir, instances.file_names[image_id], f"{instances_path}, image id {image_id}")
    truth = chair.ground_truth_objects(vocabulary, instances, captions, image_ids)
    requests = _Requests()
    keys = {image_id: requests.add(instances.file_names[image_id], prompt) for image_id in image_ids}
    settings = {
        "instances": os.path.abspath(instances_path),
        "captions": os.path.abspath(captions_path) if captions_path else None,
        "image_list": os.path.abspath(image_list) if image_list else None,
        "num_images": None if image_list else num_images, "sample_seed": None if image_list else sample_seed,
        "synonyms": os.path.abspath(synonyms_path) if synonyms_path else "CHAIR's COCO table",
        "chair_variant": variant, "prompt": prompt, "limit": limit, "image_ids": image_ids,
    }

    def score(answers: dict[str, dict[str, str]], sides: list[str], records: dict | None = None) -> Scored:
        reports = {side: [chair.caption_report(answers[keys[i]][side], truth[i], vocabulary) for i in image_ids]
                   for side in sides}
        matched = chair.matched_lengths(reports)
        arrays = {side: chair.chair_arrays(reports[side], matched) for side in sides}
        rows, details, intervals = [], {}, {}
        for side in sides:
            details[side] = metrics = chair.chair_metrics(reports[side])
            found = chair.chair_intervals(arrays[side])
            intervals[side] = {k: v.to_dict() for k, v in found.items()}
            row = {"method": side, **{k: _percent(k, v) for k, v in metrics.items()}}
            for figure, value in found.items():
                row.update(interval_fields(figure, value, 1 if figure == "length" else 100))
            rows.append(row)
        tests = stats.holm([_chair_test(arrays, figure, pair)
                            for pair in comparisons(sides) for figure in _CHAIR_TESTED])
        settings["chair_words"] = vocabulary.caption_words.provenance()  # what the words came from (metrics.json)
        statistics = {"bootstrap": bootstrap_settings(), "intervals": intervals, "matched_tokens": matched,
                      "paired_tests": [t.to_dict() for t in tests]}
        table = Table(_chair_title(variant), _CHAIR_COLUMNS, rows,
                      _chair_notes(captions is not None) + [_intervals_note("the images"), _MATCHED_NOTE])
        tables = [tests_table(tests, {f: 100 for f in _CHAIR_TESTED}, "CHAIR: paired tests (paired bootstrap)")]
        return Scored(table, details, statistics, tables if tests else [],
                      lambda out_dir: [chair_frontier_plot(intervals, out_dir)])

    return Benchmark("chair", image_dir, requests.all(), score, settings)


_MATCHED_NOTE = (
    "CHAIR_i at matched length: each image's descriptions cut to the shortest one among the methods of this run (in "
    "tokens), then CHAIR_i as above; the fixed-length comparison OPERA (Huang et al., CVPR 2024) makes by decoding "
    "at most 64 tokens, made per image at scoring time. A method that writes less hallucinates less: compare here.")


def _chair_test(arrays: dict, figure: str, pair: tuple[str, str]) -> stats.PairedTest:
    keys = chair.CHAIR_FIGURES[figure]
    statistic = stats.mean if len(keys) == 1 else stats.ratio
    return stats.paired_bootstrap(statistic, [arrays[pair[0]][k] for k in keys], [arrays[pair[1]][k] for k in keys],
                                  figure, pair)


def chair_frontier_plot(intervals: dict[str, dict], out_dir: str, name: str = "chair_frontier.png") -> str:
    """Recall against CHAIR_i, one point per side with both 95 % intervals as error bars: up and to the left is
    better. Returns the file written."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for side, found in intervals.items():
        x, y = (100 * found[k]["estimate"] for k in ("chair_i", "recall"))
        xerr = [[x - 100 * found["chair_i"]["low"]], [100 * found["chair_i"]["high"] - x]]
        yerr = [[y - 100 * found["recall"]["low"]], [100 * found["recall"]["high"] - y]]
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=side)
    ax.set_xlabel("CHAIR_i (%), lower is better")
    ax.set_ylabel("recall (%), higher is better")
    ax.set_title("CHAIR: recall vs CHAIR_i (95 % bootstrap intervals)")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _chair_vocabulary(synonyms_path: str | None, variant: str, tagger: Tagger | None) -> chair.ObjectVocabulary:
    """The given synonym table, else CHAIR's COCO table, read for ``variant``."""
    if synonyms_path:
        return chair.read_synonyms(synonyms_path, variant=variant, tagger=tagger)
    vocabulary = chair.coco_vocabulary(variant, tagger)
    vocabulary.caption_words.require_data()  # COCO descriptions are open text: fail now, not after decoding them
    return vocabulary


def _chair_title(variant: str) -> str:
    return f"CHAIR, {variant} variant ({CHAIR_VARIANTS[variant]}); CHAIR_s, CHAIR_i, recall in %"


def _chair_notes(with_captions: bool) -> list[str]:
    notes = ["Len: tokens a description, punctuation included, a double word (\"hot dog\") counting once."]
    if not with_captions:
        notes.append("Ground truth from instance annotations only (no --captions): CHAIR's published figures also use "
                     "the objects the human captions name, so these overcount hallucinations.")
    return notes


def _chair_image_ids(instances, instances_path: str, image_list: str | None, num_images: int, sample_seed: int,
                     limit: int | None) -> list[int]:
    """The images to describe: those of ``image_list``, else ``num_images`` drawn with ``sample_seed``; the first
    ``limit`` of them."""
    if image_list:
        image_ids = chair.read_image_list(image_list, instances)
    else:
        image_ids = chair.sample_images(instances, num_images, sample_seed)
    if limit:
        image_ids = image_ids[:limit]
    if not image_ids:
        raise EvalInputError(f"{instances_path} lists no images")
    return image_ids


# ---- MME -------------------------------------------------------------------------------------------------------------

def mme_benchmark(
    root: str,
    subtasks: list[str] | tuple[str, ...] = mme.HALLUCINATION_SUBTASKS,
    prompt_suffix: str | None = "none",
    limit: int | None = None,
) -> Benchmark:
    """MME's ``subtasks`` from the folder ``root``; ``limit``: the first N images of each subtask."""
    suffix = resolve_suffix(prompt_suffix)
    items = mme.read_mme(root, subtasks)
    if limit:
        kept: list[mme.MmeItem] = []
        images: dict[str, set[str]] = {}
        for item in items:
            seen = images.setdefault(item.subtask, set())
            if item.image in seen or len(seen) < limit:
                seen.add(item.image)
                kept.append(item)
        items = kept
    requests = _Requests()
    keyed = [(item, requests.add(item.image, item.question + suffix)) for item in items]

    def score(answers: dict[str, dict[str, str]], sides: list[str], records: dict | None = None) -> Scored:
        rows, details, arrays, intervals = [], {}, {}, {}
        for side in sides:
            row = {"method": side}
            for subtask in subtasks:
                triples = [(item.image, item.answer, mme.parse_mme_answer(answers[key][side]))
                           for item, key in keyed if item.subtask == subtask]
                result = mme.mme_subtask_score(triples)
                details.setdefault(side, {})[subtask] = result
                arrays.setdefault(side, {})[subtask] = mme.image_arrays(triples)
                row[subtask] = result["score"]
            row["total"] = sum(row[subtask] for subtask in subtasks)
            details[side]["total"] = row["total"]
            found = mme.mme_intervals(arrays[side])
            intervals[side] = {k: v.to_dict() for k, v in found.items()}
            for part, value in found.items():
                row.update(interval_fields(part, value))
            rows.append(row)
        tests = stats.holm([mme.mme_paired(arrays[a], arrays[b], (a, b)) for a, b in comparisons(sides)])
        columns = [Column("method", "Method")]
        columns += [Column(subtask, subtask.capitalize(), 2, interval=True) for subtask in subtasks]
        columns.append(Column("total", "Total", 2, interval=True))
        statistics = {"bootstrap": bootstrap_settings(), "intervals": intervals,
                      "paired_tests": [t.to_dict() for t in tests]}
        table = Table("MME perception (score = 100·acc + 100·acc+ per subtask)", columns, rows,
                      [_intervals_note("the images, within each subtask")])
        tables = [tests_table(tests, {}, "MME: paired tests of the total score (paired bootstrap)")]
        return Scored(table, details, statistics, tables if tests else [])

    return Benchmark(
        "mme", root, requests.all(), score,
        {"root": os.path.abspath(root), "subtasks": list(subtasks), "prompt_suffix": suffix, "limit": limit},
    )
