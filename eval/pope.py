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

import functools
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


# ---- intervals and the first-token readout ---------------------------------------------------------------------------

def _rates(label_yes, said_yes):
    """POPE's five rates on arrays (draws, questions) of bools: ``stats.draws``'s statistic form."""
    import numpy as np

    tp = np.sum(label_yes * said_yes, axis=-1)
    said, truth, n = np.sum(said_yes, axis=-1), np.sum(label_yes, axis=-1), label_yes.shape[-1]
    precision = np.divide(tp, said, out=np.zeros_like(tp, dtype=float), where=said != 0)
    recall = np.divide(tp, truth, out=np.zeros_like(tp, dtype=float), where=truth != 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both != 0)
    return {"accuracy": np.sum(label_yes == said_yes, axis=-1) / n, "precision": precision, "recall": recall,
            "f1": f1, "yes_ratio": said / n}


RATES = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def pope_intervals(labels: list[str], predictions, resamples: int | None = None, seed: int | None = None) -> dict:
    """Each of POPE's rates (fractions) with its 95 % bootstrap interval (``eval.stats``): over the questions, or
    over questions x seeds when ``predictions`` is a list of runs (one list of "yes"/"no" per seed). One set of
    draws serves all five rates."""
    import numpy as np

    from . import stats

    said = np.asarray(predictions) == "yes"
    truth = np.broadcast_to(np.asarray(labels) == "yes", said.shape)
    resamples, seed = resamples or stats.RESAMPLES, stats.SEED if seed is None else seed

    def all_rates(t, s):
        found = _rates(t, s)
        return np.stack([found[rate] for rate in RATES])

    drawn = stats.draws(all_rates, [truth, said], resamples, seed)
    estimates = all_rates(truth.reshape(1, -1), said.reshape(1, -1))[:, 0]
    over = "items x seeds" if said.ndim == 2 and said.shape[0] > 1 else "items"
    return {rate: stats.percentile_interval(float(estimates[k]), drawn[k], resamples, seed, over)
            for k, rate in enumerate(RATES)}


def answer_spellings(word: str) -> list[str]:
    """How an answer may start with ``word``: "yes", "Yes", "YES", " yes", " Yes"."""
    return [word, word.capitalize(), word.upper(), " " + word, " " + word.capitalize()]


@functools.lru_cache(maxsize=8)  # once per tokenizer: it decodes the whole vocabulary
def answer_token_ids(tokenizer) -> dict[str, frozenset[int]]:
    """The tokens of ``tokenizer`` that start a "yes" / "no" answer, derived from the tokenizer itself, never from a
    fixed list (LLaVA-1.5's Llama tokenizer writes "Yes" as one id, Qwen2's as another altogether; a fixed Llama id
    set reads every Qwen2-VL answer as neither):

    - every token that is by itself the word in any case, with or without its leading space or the tokenizer's space
      mark ("Yes", "▁yes", "ĠNo", "YES" ...), each id decoded alone;
    - where it has no such token at all, the first token each spelling of the word ("yes", "Yes", "YES", " yes",
      " Yes") is split into (a small vocabulary's "Y" of "Y" + "es"), a token that is only a space skipped: the first
      token is all a first-token readout can read.
    Special tokens are never answers."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = [i for i in range(len(tokenizer)) if i not in special]
    found: dict[str, set[int]] = {"yes": set(), "no": set()}
    for token_id, text in zip(ids, tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)):
        word = _bare(text)
        if word in found:
            found[word].add(token_id)
    for word in (w for w, whole in found.items() if not whole):
        for spelling in answer_spellings(word):
            pieces = [i for i in tokenizer.encode(spelling, add_special_tokens=False)
                      if _bare(tokenizer.decode([i], skip_special_tokens=False))]
            if pieces and pieces[0] not in special and word.startswith(_bare(tokenizer.decode([pieces[0]]))):
                found[word].add(pieces[0])
    return {word: frozenset(v) for word, v in found.items()}


def _bare(piece: str) -> str:
    """A token's text without spaces or space marks, lower-cased: what it says as an answer's first word."""
    return piece.strip().lstrip("\u2581\u0120").strip().lower()


def first_token_answer(p_yes: float | None, p_no: float | None) -> str | None:
    """The first-token readout: "yes" when p("yes") > p("no") at the answer's first token (each summed over the
    tokenizer's own yes / no tokens, ``answer_token_ids``), "no" when p("no") is larger or equal, None when neither
    was recorded (an empty answer) or neither is among the recorded candidates (no signal, not a "no")."""
    if p_yes is None or p_no is None or p_yes + p_no == 0:
        return None
    return "yes" if p_yes > p_no else "no"


def first_token_probs(side, ids: dict[str, frozenset[int]]) -> dict[str, float] | None:
    """p("yes") and p("no") at a side's first answer token (``decoding``'s trace: the distribution it decoded from,
    after its rule and mask), each the summed probability of the recorded top candidates among ``ids``
    (``answer_token_ids``): a yes/no question's first token puts nearly all its mass there. None for an empty
    answer."""
    if not side.tokens:
        return None
    top = side.tokens[0].final.top
    return {word: sum(c.prob for c in top if c.token_id in ids[word]) for word in ("yes", "no")}
