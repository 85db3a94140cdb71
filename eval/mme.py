"""MME (Fu et al., "MME: A Comprehensive Evaluation Benchmark for Multimodal Large Language Models", 2023): yes/no
questions, two per image (one true "yes", one true "no"), in subtasks. The hallucination papers report the four
object-level perception subtasks: existence, count, position and color.

The released folder (MME_Benchmark_release_version/, from the authors on request) has one folder per subtask in one
of two layouts, both read here:

    existence/000000006040.jpg  existence/000000006040.txt                       (flat)
    artwork/images/10002.jpg    artwork/questions_answer_YES_NO/10002.txt          (split)

Each .txt holds the image's questions, one a line, "question<TAB>answer" with answer Yes or No.

Scoring is MME's ``eval_tool/calculation.py``: per subtask, accuracy over questions and accuracy+ over images (the
fraction of images with every question right); score = 100·acc + 100·acc+ (at most 200); the total is the sum over
the subtasks scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import EvalInputError

HALLUCINATION_SUBTASKS = ("existence", "count", "position", "color")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class MmeItem:
    """One MME question: its subtask, the image's path (relative to the MME root), the question, the true answer."""

    subtask: str
    image: str
    index: int  # the question's line among its image's questions (0, 1)
    question: str
    answer: str  # "yes" or "no"


def _find_image(folder: str, stem: str) -> str | None:
    for ext in IMAGE_EXTENSIONS:
        for candidate in (stem + ext, stem + ext.upper()):
            if os.path.isfile(os.path.join(folder, candidate)):
                return candidate
    return None


def read_mme(root: str | os.PathLike, subtasks: list[str] | tuple[str, ...] = HALLUCINATION_SUBTASKS) -> list[MmeItem]:
    """Read the questions of ``subtasks`` from an MME folder (either layout per subtask); images sorted by name."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise EvalInputError(f"MME folder {root!r} does not exist; expected MME_Benchmark_release_version/ with one "
                             "folder per subtask (existence/, count/, position/, color/, ...)")
    items: list[MmeItem] = []
    for subtask in subtasks:
        folder = os.path.join(root, subtask)
        if not os.path.isdir(folder):
            present = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            raise EvalInputError(f"MME subtask folder {folder!r} does not exist (subtask folders there: "
                                 f"{', '.join(present) or 'none'})")
        split_layout = os.path.isdir(os.path.join(folder, "questions_answer_YES_NO"))
        question_dir = os.path.join(folder, "questions_answer_YES_NO") if split_layout else folder
        image_dir = os.path.join(folder, "images") if split_layout else folder
        question_files = sorted(name for name in os.listdir(question_dir) if name.endswith(".txt"))
        if not question_files:
            raise EvalInputError(f"MME subtask folder {folder!r} has no question files: expected <image>.txt files "
                                 "beside the images, or images/ and questions_answer_YES_NO/")
        for name in question_files:
            path = os.path.join(question_dir, name)
            stem = os.path.splitext(name)[0]
            image = _find_image(image_dir, stem)
            if image is None:
                raise EvalInputError(f"{path}: no image {stem}.jpg / .png (or another image type) in {image_dir!r}")
            image_rel = os.path.relpath(os.path.join(image_dir, image), root)
            count = 0
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    fields = line.rstrip("\r\n").split("\t")
                    if len(fields) != 2:
                        raise EvalInputError(f"{path}, line {number}: expected 'question<TAB>answer', got "
                                             f"{len(fields)} tab-separated field(s)")
                    question, answer = fields[0].strip(), fields[1].strip().lower()
                    if answer not in ("yes", "no"):
                        raise EvalInputError(f"{path}, line {number}: the answer must be Yes or No, got {fields[1]!r}")
                    if not question:
                        raise EvalInputError(f"{path}, line {number}: the question is empty")
                    items.append(MmeItem(subtask, image_rel, count, question, answer))
                    count += 1
            if count == 0:
                raise EvalInputError(f"{path}: no questions")
    return items


def parse_mme_answer(text: str) -> str:
    """A free-form answer as MME's ``eval_tool/calculation.py`` reads it: "yes", "no" or "other".

    Lower-case; exactly "yes" / "no"; else "yes" if "yes" is in its first 4 characters, else "no" if "no" is, else
    "other" (counted wrong). The answer is first stripped of surrounding white space, as the scripts that write MME's
    result files do (LLaVA's ``model_vqa_loader.py`` strips its outputs).
    """
    answer = text.strip().lower()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def mme_subtask_score(questions: list[tuple[str, str, str]]) -> dict[str, float | int]:
    """MME's score of one subtask from (image, true answer, parsed answer) triples: acc, acc+ and 100·(acc + acc+)."""
    per_image: dict[str, list[bool]] = {}
    for image, truth, parsed in questions:
        per_image.setdefault(image, []).append(truth == parsed)
    correct = sum(sum(hits) for hits in per_image.values())
    n = len(questions)
    acc = correct / n if n else 0.0
    acc_plus = sum(1 for hits in per_image.values() if all(hits)) / len(per_image) if per_image else 0.0
    return {
        "questions": n,
        "images": len(per_image),
        "other": sum(1 for _, _, parsed in questions if parsed == "other"),
        "acc": acc,
        "acc_plus": acc_plus,
        "score": 100 * acc + 100 * acc_plus,
    }


# ---- intervals and paired tests (``eval.stats``) ---------------------------------------------------------------

def image_arrays(questions: list[tuple[str, str, str]]) -> tuple:
    """(image, true answer, parsed answer) triples -> per image (first-seen order): questions right, questions,
    all right; numpy arrays, what a subtask's score is made of."""
    import numpy as np

    per_image: dict[str, list[bool]] = {}
    for image, truth, parsed in questions:
        per_image.setdefault(image, []).append(truth == parsed)
    hits = list(per_image.values())
    return (np.array([sum(h) for h in hits], float), np.array([len(h) for h in hits], float),
            np.array([all(h) for h in hits], float))


def _score(right, asked, all_right):
    from . import stats

    return 100 * stats.ratio(right, asked) + 100 * stats.mean(all_right)


def _subtask_draws(statistic, data_by_subtask: dict[str, list], resamples: int, seed: int) -> dict:
    """Draws per subtask, images drawn within their subtask (a stratified bootstrap: the total keeps each subtask's
    images); subtask k uses seed + k, the same for every side, so sides drawn alike pair up."""
    from . import stats

    return {subtask: stats.draws(statistic, data, resamples, seed + k)
            for k, (subtask, data) in enumerate(data_by_subtask.items())}


def mme_intervals(arrays_by_subtask: dict[str, tuple], resamples: int | None = None, seed: int | None = None) -> dict:
    """Each subtask's score and the total with their 95 % bootstrap intervals over the images."""
    from . import stats

    resamples, seed = resamples or stats.RESAMPLES, stats.SEED if seed is None else seed
    drawn = _subtask_draws(_score, {s: list(a) for s, a in arrays_by_subtask.items()}, resamples, seed)
    estimates = {s: float(_score(*(x[None, :] for x in a))[0]) for s, a in arrays_by_subtask.items()}
    out = {s: stats.percentile_interval(estimates[s], drawn[s], resamples, seed, "images") for s in drawn}
    out["total"] = stats.percentile_interval(sum(estimates.values()), sum(drawn.values()), resamples, seed, "images")
    return out


def mme_paired(side: dict[str, tuple], reference: dict[str, tuple], names: tuple[str, str],
               resamples: int | None = None, seed: int | None = None):
    """The total score's difference side − reference on the same images, paired bootstrap (``stats.PairedTest``)."""
    from . import stats

    resamples, seed = resamples or stats.RESAMPLES, stats.SEED if seed is None else seed

    def difference(*arrays):
        return _score(*arrays[:3]) - _score(*arrays[3:])

    drawn = sum(_subtask_draws(difference, {s: [*side[s], *reference[s]] for s in side}, resamples, seed).values())
    estimate = sum(float(difference(*(x[None, :] for x in (*side[s], *reference[s])))[0]) for s in side)
    return stats.PairedTest("total", names[0], names[1],
                            stats.percentile_interval(estimate, drawn, resamples, seed, "images"),
                            stats.bootstrap_p_value(estimate, drawn), "paired bootstrap")
