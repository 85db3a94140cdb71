"""POPE (Li et al., "Evaluating Object Hallucination in Large Vision-Language Models", EMNLP 2023).

Yes/no questions "Is there a <object> in the image?" about COCO val2014 images, half with the object present. The
published question files (github.com/RUCAIBox/POPE, ``output/coco/coco_pope_{random,popular,adversarial}.json``)
hold one JSON object per line::

    {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?",
     "label": "yes"}

The three splits differ in how the absent objects were drawn: at random, among the most frequent COCO objects, or
among the objects that co-occur most with the ones present.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from .errors import EvalInputError

SPLITS = ("random", "popular", "adversarial")

# The suffixes the papers append to the question; the name is what `--prompt-suffix` takes.
PROMPT_SUFFIXES = {
    "none": "",
    # VCD's released POPE script (and the scripts built on it) appends this after a space.
    "one-word": " Please answer this question with one word.",
    # LLaVA-1.5's own evaluation scripts append this on a new line.
    "single-word-or-phrase": "\nAnswer the question using a single word or phrase.",
}


@dataclass(frozen=True)
class PopeItem:
    """One POPE question: the image's file name (relative to the images folder), the question, the true answer."""

    split: str
    question_id: int | str
    image: str
    question: str
    label: str  # "yes" or "no"


def split_name(path: str | os.PathLike) -> str:
    """The split a question file holds, from its name: coco_pope_adversarial.json -> "adversarial"; a name without
    random / popular / adversarial in it is its own split name (its stem)."""
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    found = re.search(r"(random|popular|adversarial)", stem)
    return found.group(1) if found else stem


def read_pope(path: str | os.PathLike, split: str | None = None) -> list[PopeItem]:
    """Read a POPE question file (one JSON object a line with question_id, image, text, label "yes"/"no").

    split: the split's name; default: from the file name (``split_name``). Blank lines are skipped; anything else
    that is not such an object raises ``EvalInputError`` naming the file and line.
    """
    path = os.fspath(path)
    split = split or split_name(path)
    if not os.path.isfile(path):
        raise EvalInputError(
            f"POPE question file {path!r} does not exist; expected a file like coco_pope_random.json with one JSON "
            'object a line: {"question_id", "image", "text", "label"}'
        )
    items: list[PopeItem] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalInputError(
                    f"{where}: not a JSON object ({e.msg}); POPE files hold one JSON object a line, not a JSON list"
                ) from None
            if not isinstance(record, dict):
                raise EvalInputError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in ("question_id", "image", "text", "label") if key not in record]
            if missing:
                raise EvalInputError(f"{where}: missing {', '.join(missing)}; a POPE question has question_id, "
                                     "image, text and label")
            label = record["label"]
            if label not in ("yes", "no"):
                raise EvalInputError(f'{where}: label must be "yes" or "no", got {label!r}')
            if not isinstance(record["image"], str) or not record["image"]:
                raise EvalInputError(f"{where}: image must be an image file name, got {record['image']!r}")
            if not isinstance(record["text"], str) or not record["text"].strip():
                raise EvalInputError(f"{where}: text (the question) is empty")
            qid = record["question_id"]
            if str(qid) in seen:
                raise EvalInputError(f"{where}: question_id {qid!r} appears twice in the file")
            seen.add(str(qid))
            items.append(PopeItem(split, qid, record["image"], record["text"], label))
    if not items:
        raise EvalInputError(f"POPE question file {path!r} holds no questions")
    return items


def parse_pope_answer(text: str) -> str:
    """A free-form answer as POPE's own scorer reads it: "yes" or "no".

    Reproduces ``evaluate.py`` of github.com/RUCAIBox/POPE exactly (also LLaVA's ``eval_pope.py``): keep only the
    text before the first ".", drop the commas, split on single spaces; "no" if "No", "not" or "no" is one of the
    words, else "yes". So an empty answer, "Not really" (capital "Not") and "NO" all count as "yes", and a "no"
    after the first full stop is not seen. That is the rule the published figures were computed with.
    """
    if text.find(".") != -1:
        text = text.split(".")[0]
    text = text.replace(",", "")
    words = text.split(" ")
    if "No" in words or "not" in words or "no" in words:
        return "no"
    return "yes"


def pope_metrics(labels: list[str], predictions: list[str]) -> dict[str, float | int]:
    """Accuracy, precision, recall, F1 and yes-ratio with "yes" as the positive class (POPE's ``evaluate.py``).

    labels / predictions: "yes" / "no" lists of the same length. Fractions in [0, 1]. Where POPE's script would
    divide by zero (no "yes" predicted, or no positive question), precision / recall / F1 are 0.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    tp = sum(1 for label, pred in zip(labels, predictions) if label == "yes" and pred == "yes")
    fp = sum(1 for label, pred in zip(labels, predictions) if label == "no" and pred == "yes")
    tn = sum(1 for label, pred in zip(labels, predictions) if label == "no" and pred == "no")
    fn = sum(1 for label, pred in zip(labels, predictions) if label == "yes" and pred == "no")
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n if n else 0.0,
    }
