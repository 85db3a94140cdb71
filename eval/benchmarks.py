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

from . import chair, mme, pope
from .chair_words import CHAIR_VARIANTS, DEFAULT_CHAIR_VARIANT, Tagger
from .errors import EvalInputError
from .report import Column, Table

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
    table: Table
    details: dict[str, Any]


@dataclass
class Benchmark:
    """name; image_root: folder the requests' image paths are relative to; requests: what to decode, in order;
    score(answers, sides): answers maps request key -> side name -> answer text; sides: "baseline" then the methods.
    settings: the benchmark's choices, recorded with the results."""

    name: str
    image_root: str
    requests: list[Request]
    score: Callable[[dict[str, dict[str, str]], list[str]], Scored]
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


# ---- POPE ------------------------------------------------------------------------------------------------------------

_POPE_COLUMNS = [
    Column("split", "Split"), Column("method", "Method"), Column("accuracy", "Accuracy", 2),
    Column("precision", "Precision", 2), Column("recall", "Recall", 2), Column("f1", "F1", 2),
    Column("yes_ratio", "Yes ratio", 2), Column("n", "Questions", 0),
]


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

    def score(answers: dict[str, dict[str, str]], sides: list[str]) -> Scored:
        rows, details = [], {}
        for split, keyed in item_keys.items():
            labels = [item.label for item, _ in keyed]
            for side in sides:
                predictions = [pope.parse_pope_answer(answers[key][side]) for _, key in keyed]
                metrics = pope.pope_metrics(labels, predictions)
                details.setdefault(split, {})[side] = metrics
                rows.append({"split": split, "method": side, **{k: _percent(k, v) for k, v in metrics.items()}})
        return Scored(Table("POPE (%)", _POPE_COLUMNS, rows), details)

    return Benchmark(
        "pope", image_dir, requests.all(), score,
        {"questions": {split: os.path.abspath(path) for split, path in sources.items()},
         "prompt_suffix": suffix, "limit": limit},
    )


_PERCENT_KEYS = {"accuracy", "precision", "recall", "f1", "yes_ratio", "chair_s", "chair_i"}


def _percent(key: str, value):
    return 100 * value if key in _PERCENT_KEYS else value


# ---- CHAIR -----------------------------------------------------------------------------------------------------------

_CHAIR_COLUMNS = [
    Column("method", "Method"), Column("chair_s", "CHAIR_s", 1), Column("chair_i", "CHAIR_i", 1),
    Column("recall", "Recall", 1), Column("length", "Len", 1), Column("n", "Images", 0),
]


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

    def score(answers: dict[str, dict[str, str]], sides: list[str]) -> Scored:
        rows, details = [], {}
        for side in sides:
            reports = [chair.caption_report(answers[keys[i]][side], truth[i], vocabulary) for i in image_ids]
            details[side] = metrics = chair.chair_metrics(reports)
            rows.append({"method": side, **{k: _percent(k, v) for k, v in metrics.items()}})
        settings["chair_words"] = vocabulary.caption_words.provenance()  # what the words came from (metrics.json)
        return Scored(Table(_chair_title(variant), _CHAIR_COLUMNS, rows, _chair_notes(captions is not None)), details)

    return Benchmark("chair", image_dir, requests.all(), score, settings)


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

    def score(answers: dict[str, dict[str, str]], sides: list[str]) -> Scored:
        rows, details = [], {}
        for side in sides:
            row = {"method": side}
            for subtask in subtasks:
                triples = [(item.image, item.answer, mme.parse_mme_answer(answers[key][side]))
                           for item, key in keyed if item.subtask == subtask]
                result = mme.mme_subtask_score(triples)
                details.setdefault(side, {})[subtask] = result
                row[subtask] = result["score"]
            row["total"] = sum(row[subtask] for subtask in subtasks)
            details[side]["total"] = row["total"]
            rows.append(row)
        columns = [Column("method", "Method")]
        columns += [Column(subtask, subtask.capitalize(), 2) for subtask in subtasks]
        columns.append(Column("total", "Total", 2))
        return Scored(Table("MME perception (score = 100·acc + 100·acc+ per subtask)", columns, rows), details)

    return Benchmark(
        "mme", root, requests.all(), score,
        {"root": os.path.abspath(root), "subtasks": list(subtasks), "prompt_suffix": suffix, "limit": limit},
    )
