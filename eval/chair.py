"""CHAIR (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018): how many objects a caption names
that are not in the image, computed as the reference chair.py computes it, in one of its two versions (``variant``):

- ``lvlm`` (default): the copy the LVLM decoding papers run, in the repositories of OPERA, RITUAL, HALC, SID, PAI and
  ONLY (sangminwoo/RITUAL 52065a6 eval_bench/chair.py, shikiw/OPERA 61426ef chair.py): words lemmatised by WordNet
  with nltk's part-of-speech tags. The papers' CHAIR figures (RITUAL's 26.2 / 9.3 for LLaVA-1.5) come from it.
- ``original``: Rohrbach et al.'s (LisaAnne/Hallucination 6e4d33c utils/chair.py): words singularised by pattern.

Both look the words up in CHAIR's table of the 80 COCO categories and their synonyms (``data/coco_synonyms.txt``)
after joining CHAIR's "double words" ("hot dog", "teddy bear", ...); see ``chair_words`` for the words themselves. The
ground truth of an image is the union of its COCO instance labels and the objects its human captions mention, found the
same way (both are needed: the instance labels miss objects that people name).

    CHAIR_s = captions with at least one hallucinated object / captions
    CHAIR_i = hallucinated object mentions / all object mentions (repeated mentions count again)
    recall  = ground-truth objects the caption names / ground-truth objects (summed over images)
    length  = tokens a caption, punctuation included, a double word counting once (eval_bench/chair.py line 376;
              utils/chair.py reports no length): a method can lower CHAIR by saying less, recall and length show it

Both versions read the table as ``line.strip().split(', ')`` (utils/chair.py lines 54-61, eval_bench/chair.py lines
155-162): an entry keeps a space that follows ", ", so " motor bike" and " cheesecake" match nothing there, nor here.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field

from . import chair_words
from .chair_words import DEFAULT_CHAIR_VARIANT, LvlmWords, OriginalWords, Tagger, tokenize
from .errors import EvalInputError

COCO_SYNONYMS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "coco_synonyms.txt")

# CHAIR's hard-coded rules for COCO: utils/chair.py lines 66-86, eval_bench/chair.py lines 167-187 (the same lists).
COCO_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate", "train track",
)
# "baby bird" is a bird, not a person (the table lists "baby" under person); "adult" likewise.
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
# "passenger train" is a train, not a person.
VEHICLE_WORDS = ("jet", "train")


def coco_double_words() -> dict[str, str]:
    """CHAIR's double-word table: a two-word phrase -> the word it counts as. A phrase outside the synonym table
    ("train track", "home plate", "motor bike") then counts as nothing, which is its purpose: "train" must not fire
    there. ("stove top oven" has three words and never matches two.)"""
    table = {phrase: phrase for phrase in COCO_DOUBLE_WORDS}
    for animal in ANIMAL_WORDS:
        table[f"baby {animal}"] = animal
        table[f"adult {animal}"] = animal
    for vehicle in VEHICLE_WORDS:
        table[f"passenger {vehicle}"] = vehicle
    table["bow tie"] = "tie"
    table["toilet seat"] = "toilet"
    table["wine glas"] = "wine glass"  # pattern's singularize("glass") == "glas"
    return table


@dataclass
class ObjectVocabulary:
    """Object words: every synonym (a word or a phrase) -> its object's name, the double words, and how a caption
    becomes words (``chair_words.LvlmWords`` or ``OriginalWords``, the two CHAIR variants)."""

    synonyms: dict[str, str]
    double_words: dict[str, str]
    objects: list[str] = field(default_factory=list)  # the object names, in the table's order
    caption_words: LvlmWords | OriginalWords = field(default_factory=LvlmWords)

    def __post_init__(self):
        # The words whose exact form matters beyond the object they name: those of the double words, and CHAIR's
        # "toilet" / "seat" rule.
        self._spelled = {word for phrase in self.double_words for word in phrase.split(" ")} | {"toilet", "seat"}

    @property
    def variant(self) -> str:
        return self.caption_words.variant

    def _key(self, word: str):
        """What a word can do here: the object it names, and its spelling where a double word or CHAIR's toilet rule
        reads it. Two words with the same key give the same mentions and the same length."""
        return self.synonyms.get(word), word if word in self._spelled else None

    def analyse(self, caption: str) -> tuple[list[str], list[tuple[str, str]]]:
        """The caption's words after joining double words (its length), and its object mentions in order as (word as
        matched, object name), repeats kept: ``caption_to_words`` of both chair.py files (utils/chair.py lines
        98-135, eval_bench/chair.py lines 212-256)."""
        merged, mentions = self.located(caption)
        return merged, [(word, obj) for word, obj, _, _ in mentions]

    def located(self, caption: str) -> tuple[list[str], list[tuple[str, str, int, int]]]:
        """``analyse``, each mention with where it is among the caption's tokens (``chair_words.tokenize``): (word as
        matched, object name, index of its first token, tokens it spans: 2 for a double word)."""
        words = self.caption_words.words(tokenize(caption), self._key)
        merged: list[str] = []
        where: list[tuple[int, int]] = []
        i = 0
        while i < len(words):
            pair = " ".join(words[i:i + 2])
            width = 2 if pair in self.double_words else 1
            merged.append(self.double_words[pair] if width == 2 else words[i])
            where.append((i, width))
            i += width
        # CHAIR: "the seat of the toilet" must not fire "chair".
        toilet_seat = "toilet" in merged and "seat" in merged
        return merged, [(w, self.synonyms[w], *at) for w, at in zip(merged, where)
                        if w in self.synonyms and not (toilet_seat and w == "seat")]

    def words(self, caption: str) -> list[str]:
        """The caption's words as CHAIR counts its length: tokens, punctuation included, double words joined."""
        return self.analyse(caption)[0]

    def mentions(self, caption: str) -> list[tuple[str, str]]:
        """Every object mention of the caption, in order, as (word as matched, object name); repeats kept."""
        return self.analyse(caption)[1]

    def objects_in(self, caption: str) -> set[str]:
        return {obj for _, obj in self.mentions(caption)}


def read_synonyms(path: str | os.PathLike, double_words: dict[str, str] | None = None,
                  variant: str = DEFAULT_CHAIR_VARIANT, tagger: Tagger | None = None) -> ObjectVocabulary:
    """Read a synonym table: one object a line, its name first, then its synonyms, separated by ", " (comma and one
    space), as chair.py splits them; lines starting with "#" are comments. double_words: default, every entry of two
    words counts as itself. variant, tagger: see ``chair_words.caption_words``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EvalInputError(f"synonym table {path!r} does not exist; expected one object a line: 'name, synonym, ...'")
    synonyms: dict[str, str] = {}
    objects: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            entries = [entry for entry in line.strip().split(", ") if entry]
            name = entries[0]
            if name in objects:
                raise EvalInputError(f"{path}, line {number}: object {name!r} already has a line")
            objects.append(name)
            for entry in entries:
                synonyms[entry] = name  # as CHAIR builds it: a later line wins (no COCO word is on two lines)
    if not objects:
        raise EvalInputError(f"synonym table {path!r} lists no objects")
    if double_words is None:
        double_words = {entry: entry for entry in synonyms if len(entry.split(" ")) == 2 and "" not in entry.split(" ")}
    return ObjectVocabulary(synonyms, double_words, objects, chair_words.caption_words(variant, tagger))


def coco_vocabulary(variant: str = DEFAULT_CHAIR_VARIANT, tagger: Tagger | None = None) -> ObjectVocabulary:
    """CHAIR's COCO table with CHAIR's double words and special cases, words found as ``variant`` finds them."""
    return read_synonyms(COCO_SYNONYMS_PATH, coco_double_words(), variant, tagger)


# ---- COCO annotation files -------------------------------------------------------------------------------------------

@dataclass
class CocoInstances:
    """What CHAIR needs of a COCO instances file (instances_val2014.json)."""

    file_names: dict[int, str]  # image id -> file name
    categories: dict[int, str]  # category id -> name
    objects: dict[int, set[str]]  # image id -> the category names annotated on it


def _load_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise EvalInputError(f"{what} {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise EvalInputError(f"{what} {path!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise EvalInputError(f"{what} {path!r}: expected a JSON object, got {type(data).__name__}")
    return data


def _require_list(data: dict, key: str, path: str, expected: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise EvalInputError(f"{path}: expected a list {key!r} at the top level ({expected})")
    return value


def read_coco_instances(path: str | os.PathLike) -> CocoInstances:
    """Read a COCO instances file: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "category_id"}],
    "categories": [{"id", "name"}]} (other fields ignored)."""
    path = os.fspath(path)
    data = _load_json(path, "COCO instances file")
    expected = "COCO instances format, as instances_val2014.json: images, annotations, categories"
    images = _require_list(data, "images", path, expected)
    annotations = _require_list(data, "annotations", path, expected)
    category_list = _require_list(data, "categories", path, expected)
    try:
        file_names = {int(image["id"]): str(image["file_name"]) for image in images}
        categories = {int(cat["id"]): str(cat["name"]) for cat in category_list}
    except (KeyError, TypeError, ValueError) as e:
        raise EvalInputError(
            f"{path}: every image needs id and file_name, every category id and name ({e!r})"
        ) from None
    objects: dict[int, set[str]] = {image_id: set() for image_id in file_names}
    for index, annotation in enumerate(annotations):
        try:
            image_id, category_id = int(annotation["image_id"]), int(annotation["category_id"])
        except (KeyError, TypeError, ValueError):
            raise EvalInputError(f"{path}: annotation #{index} needs image_id and category_id") from None
        if category_id not in categories:
            raise EvalInputError(f"{path}: annotation #{index} has category_id {category_id}, not in categories")
        objects.setdefault(image_id, set()).add(categories[category_id])
    return CocoInstances(file_names, categories, objects)


def read_coco_captions(path: str | os.PathLike) -> dict[int, list[str]]:
    """Read a COCO captions file ({"annotations": [{"image_id", "caption"}]}, as captions_val2014.json): image id ->
    its human captions."""
    path = os.fspath(path)
    data = _load_json(path, "COCO captions file")
    annotations = _require_list(data, "annotations", path, "COCO captions format, as captions_val2014.json")
    captions: dict[int, list[str]] = {}
    for index, annotation in enumerate(annotations):
        try:
            captions.setdefault(int(annotation["image_id"]), []).append(str(annotation["caption"]))
        except (KeyError, TypeError, ValueError):
            raise EvalInputError(f"{path}: caption annotation #{index} needs image_id and caption") from None
    return captions


def ground_truth_objects(
    vocabulary: ObjectVocabulary,
    instances: CocoInstances,
    captions: dict[int, list[str]] | None = None,
    image_ids: list[int] | None = None,
) -> dict[int, set[str]]:
    """Each image's true objects (object names of the table): its instance categories plus, when ``captions`` are
    given, the objects its human captions mention."""
    image_ids = list(instances.file_names) if image_ids is None else image_ids
    truth: dict[int, set[str]] = {}
    for image_id in image_ids:
        objects = set()
        for name in instances.objects.get(image_id, ()):
            if name not in vocabulary.synonyms:
                raise EvalInputError(
                    f"COCO category {name!r} is not in the synonym table; give a table that lists it (--synonyms)"
                )
            objects.add(vocabulary.synonyms[name])
        for caption in (captions or {}).get(image_id, ()):
            objects |= vocabulary.objects_in(caption)
        truth[image_id] = objects
    return truth


def read_image_list(path: str | os.PathLike, instances: CocoInstances) -> list[int]:
    """The images to caption, from a file of one COCO image id or image file name a line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EvalInputError(f"image list {path!r} does not exist; expected one COCO image id or file name a line")
    by_name = {name: image_id for image_id, name in instances.file_names.items()}
    ids: list[int] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            entry = line.strip()
            if not entry:
                continue
            image_id = int(entry) if entry.isdigit() else by_name.get(os.path.basename(entry))
            if image_id is None or image_id not in instances.file_names:
                raise EvalInputError(f"{path}, line {number}: {entry!r} is not an image of the instances file")
            if image_id not in ids:
                ids.append(image_id)
    if not ids:
        raise EvalInputError(f"image list {path!r} is empty")
    return ids


def sample_images(instances: CocoInstances, count: int, seed: int) -> list[int]:
    """``count`` image ids drawn without replacement (seeded) from the instances file's images, as the papers draw
    500 val2014 images; all of them when there are fewer."""
    ids = sorted(instances.file_names)
    if count >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, count))


# ---- the metric ------------------------------------------------------------------------------------------------------

def caption_report(caption: str, truth: set[str], vocabulary: ObjectVocabulary) -> dict:
    """One caption scored: its mentions, which are hallucinated, which true objects it names, its length."""
    words, located = vocabulary.located(caption)
    mentions = [(word, obj) for word, obj, _, _ in located]
    return {
        "mentions": [obj for _, obj in mentions],
        "hallucinated": [obj for _, obj in mentions if obj not in truth],
        "covered": sorted({obj for _, obj in mentions if obj in truth}),
        "truth": sorted(truth),
        "words": len(words),
        # for CHAIR_i at matched length: the caption's tokens, and where (in tokens) each mention ends
        "tokens": len(tokenize(caption)),
        "mention_ends": [start + width for _, _, start, width in located],
    }


def chair_metrics(reports: list[dict]) -> dict[str, float | int]:
    """CHAIR_s, CHAIR_i, recall (fractions) and the mean length in tokens over ``caption_report`` results."""
    n = len(reports)
    mentions = sum(len(r["mentions"]) for r in reports)
    hallucinated_mentions = sum(len(r["hallucinated"]) for r in reports)
    hallucinated_captions = sum(1 for r in reports if r["hallucinated"])
    truth = sum(len(r["truth"]) for r in reports)
    covered = sum(len(r["covered"]) for r in reports)
    return {
        "n": n,
        "chair_s": hallucinated_captions / n if n else 0.0,
        "chair_i": hallucinated_mentions / mentions if mentions else 0.0,
        "recall": covered / truth if truth else 0.0,
        "length": sum(r["words"] for r in reports) / n if n else 0.0,
        "mentions": mentions,
        "hallucinated_mentions": hallucinated_mentions,
        "hallucinated_captions": hallucinated_captions,
        "truth_objects": truth,
        "covered_objects": covered,
    }


# ---- intervals, CHAIR_i at matched length -------------------------------------------------------------------

def chair_arrays(reports: list[dict], matched_tokens: list[int] | None = None) -> dict:
    """Per caption, the counts every CHAIR figure is a ratio of (numpy arrays, one value per caption, for
    ``eval.stats``). With ``matched_tokens`` (one length per caption): the mentions and hallucinated mentions within
    the caption's first that many tokens too (``matched_lengths``)."""
    import numpy as np

    out = {
        "hallucinated_caption": np.array([bool(r["hallucinated"]) for r in reports], float),
        "hallucinated": np.array([len(r["hallucinated"]) for r in reports], float),
        "mentions": np.array([len(r["mentions"]) for r in reports], float),
        "covered": np.array([len(r["covered"]) for r in reports], float),
        "truth": np.array([len(r["truth"]) for r in reports], float),
        "words": np.array([r["words"] for r in reports], float),
    }
    if matched_tokens is not None:
        within = [[end <= limit for end in r["mention_ends"]] for r, limit in zip(reports, matched_tokens)]
        out["mentions_matched"] = np.array([sum(w) for w in within], float)
        out["hallucinated_matched"] = np.array(
            [sum(keep and obj not in r["truth"] for keep, obj in zip(w, r["mentions"]))
             for r, w in zip(reports, within)], float)
    return out


def matched_lengths(reports_by_side: dict[str, list[dict]]) -> list[int]:
    """Each image's shortest description over the sides, in tokens: where every side's caption is cut for CHAIR_i
    at matched length."""
    return [min(column) for column in zip(*([r["tokens"] for r in reports] for reports in reports_by_side.values()))]


CHAIR_FIGURES = {  # figure -> (statistic's arrays, as a ratio of sums or a mean); "_s" is a mean over captions
    "chair_s": ("hallucinated_caption",),
    "chair_i": ("hallucinated", "mentions"),
    "recall": ("covered", "truth"),
    "length": ("words",),
    "chair_i_matched": ("hallucinated_matched", "mentions_matched"),
}


def chair_intervals(arrays: dict, resamples: int | None = None, seed: int | None = None) -> dict:
    """Each CHAIR figure (fractions; the length in tokens) with its 95 % bootstrap interval over the images."""
    from . import stats

    options = {"resamples": resamples or stats.RESAMPLES, "seed": stats.SEED if seed is None else seed}
    out = {}
    for figure, keys in CHAIR_FIGURES.items():
        if all(k in arrays for k in keys):
            statistic = stats.mean if len(keys) == 1 else stats.ratio
            out[figure] = stats.interval(statistic, [arrays[k] for k in keys], **options)
    return out
