"""COCO as training data for the two methods that train a part for their model (``python -m eval.ecd_train`` and
``python -m eval.dcd_train`` with ``--coco-images DIR --coco-instances FILE --coco-captions FILE``).

An image's objects are CHAIR's (``eval.chair``): its instance labels plus the objects its human captions name, every
word read through CHAIR's table of the 80 COCO categories and their synonyms, double words joined ("hot dog"). A word
of an answer is an object word where CHAIR finds a mention in it; it is hallucinated (label 1) when that object is not
among the image's, right (0) when it is; every other token is 0 in group "other", as the shapes world's labels are
(``eval.ecd_data``). Wrong words at the positions of right ones come from a human caption with one object word
swapped for a category the image does not have (teacher-forced), as the shapes world swaps one object's kind.

- the detector's answers (``coco_examples``): the model's own greedy and sampled descriptions of the image (CHAIR's
  prompt), one human caption and its swapped copy, and "Is there a <object> in the image?" (POPE's wording) about a
  present and an absent object, each with both answers forced;
- DCD's preference pairs (``preference_pairs``): each human caption (chosen) against its swapped copy (rejected), and
  the right against the wrong answer of the two questions.

Images are split by image id, seeded (``split_images``), so no image's answers are in two splits. Labels use CHAIR's
``original`` variant by default (pattern's singular of each word): it needs no data to install, and a word's singular
never depends on its neighbours, so each token's label depends on its own word only. It has that variant's misses
too ("bus" becomes "bu", no object: such a word is labelled "other"); ``--chair-variant lvlm`` reads words as the LVLM
papers' CHAIR does, with nltk's tagger and WordNet installed.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from dataclasses import dataclass

from PIL import Image

from .benchmarks import CHAIR_PROMPT
from .chair import (
    ObjectVocabulary,
    coco_vocabulary,
    ground_truth_objects,
    read_coco_captions,
    read_coco_instances,
)
from .chair_words import tokenize
from .ecd_data import GROUP_IDS, Example, Labeller, generate, text_ids, word_group
from .errors import EvalInputError
from .pattern_inflect import singularize

DESCRIBE_PROMPT = CHAIR_PROMPT
QUESTION = "Is there a {} in the image?"  # POPE's question (its files' wording)
TRAINING_CHAIR_VARIANT = "original"  # see the module's note
DESCRIPTION_TOKENS = 96  # a real model's description: CHAIR's are longer, the detector needs its first objects


@dataclass
class CocoImages:
    """The images a training command uses, with what CHAIR knows of each."""

    folder: str
    file_names: dict[int, str]  # image id -> file name in ``folder``
    captions: dict[int, list[str]]  # image id -> its human captions
    truth: dict[int, set[str]]  # image id -> its objects (CHAIR's object names)
    categories: list[str]  # the instance file's categories as CHAIR's object names: what a swap may bring in
    vocabulary: ObjectVocabulary

    @property
    def ids(self) -> list[int]:
        return sorted(self.file_names)

    def image(self, image_id: int) -> Image.Image:
        path = os.path.join(self.folder, self.file_names[image_id])
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, Image.DecompressionBombError) as error:
            raise EvalInputError(f"COCO image {path!r} could not be read as an image: {error}") from None

    def digest(self) -> str:
        """A short name of this image set (the cache of features depends on it)."""
        return hashlib.sha1(" ".join(map(str, self.ids)).encode()).hexdigest()[:10]


def read_coco(folder: str, instances_path: str, captions_path: str, count: int | None = None, seed: int = 0,
              variant: str = TRAINING_CHAIR_VARIANT) -> CocoImages:
    """The captioned images of a COCO instances file, ``count`` of them drawn (seeded; all when None), each checked
    to be in ``folder``; ``EvalInputError`` naming the file when something is missing or malformed."""
    if not os.path.isdir(folder):
        raise EvalInputError(f"COCO image folder {folder!r} does not exist (--coco-images: the folder of the "
                             "instances file's file_name entries, e.g. val2014/)")
    instances = read_coco_instances(instances_path)
    captions = read_coco_captions(captions_path)
    captioned = [i for i in sorted(instances.file_names) if captions.get(i)]
    if not captioned:
        raise EvalInputError(f"no image of {instances_path!r} has a caption in {captions_path!r}: give the captions "
                             "file of the same split (captions_val2014.json with instances_val2014.json)")
    vocabulary = coco_vocabulary(variant)
    vocabulary.caption_words.require_data()  # the lvlm variant's tagger and WordNet, or how to install them, now
    if count is not None and count < len(captioned):
        captioned = sorted(random.Random(f"coco images {seed}").sample(captioned, count))
    ids = captioned
    names = [instances.file_names[i] for i in ids]
    missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise EvalInputError(f"{len(missing)} of the {len(ids)} images are not in {folder!r} (the first: "
                             f"{missing[0]!r}); --coco-images must be the folder of {instances_path!r}'s images")
    # Only a category CHAIR reads can be swapped in: its word must be labelled hallucinated.
    categories = sorted({vocabulary.synonyms[n] for n in instances.categories.values() if n in vocabulary.synonyms})
    return CocoImages(folder, {i: instances.file_names[i] for i in ids}, {i: captions[i] for i in ids},
                      ground_truth_objects(vocabulary, instances, captions, ids), categories, vocabulary)


def split_images(ids: list[int], seed: int, test_fraction: float = 0.2) -> dict[str, list[int]]:
    """Train and test image ids, disjoint, drawn by ``seed``: a fraction for the test split (at least one image),
    the rest for training."""
    if len(ids) < 2:
        raise EvalInputError(f"training needs at least 2 captioned images (one to test on), got {len(ids)}")
    order = sorted(ids)
    random.Random(f"coco split {seed}").shuffle(order)
    n_test = min(len(order) - 1, max(1, round(len(order) * test_fraction)))
    return {"train": sorted(order[n_test:]), "test": sorted(order[:n_test])}


# ---- the commands' flags -------------------------------------------------------------------------------------------

COCO_FLAGS = ("coco_images", "coco_instances", "coco_captions")


def add_coco_arguments(parser) -> None:
    """The flags that train on COCO instead of the shapes world (``eval.coco_data``), for both training commands."""
    group = parser.add_argument_group("COCO (instead of the shapes world; all three, or none)")
    group.add_argument("--coco-images", help="the folder of the instances file's images (e.g. val2014/)")
    group.add_argument("--coco-instances", help="a COCO instances file (instances_val2014.json)")
    group.add_argument("--coco-captions", help="the captions file of the same images (captions_val2014.json)")
    group.add_argument("--coco-count", type=int, default=2000, help="captioned images drawn (seeded), split by id")
    group.add_argument("--chair-variant", default=TRAINING_CHAIR_VARIANT, choices=("original", "lvlm"),
                       help="how CHAIR reads object words in the labels (original: no data to install)")


def exit_status(run, args, refused: tuple[type[Exception], ...] = (EvalInputError,)) -> int:
    """A training command's status: 0 when ``run(args)`` finished, 2 (the message on stderr, no traceback) when it
    refused an input, as ``python -m eval`` does."""
    try:
        run(args)
    except refused as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def check_coco_arguments(parser, args) -> None:
    given = [flag for flag in COCO_FLAGS if getattr(args, flag)]
    if given and len(given) < len(COCO_FLAGS):
        missing = ", ".join("--" + f.replace("_", "-") for f in COCO_FLAGS if f not in given)
        parser.error(f"training on COCO needs all three of its files; missing {missing}")
    if args.coco_count < 2:
        parser.error("--coco-count must be at least 2 (one image to test on)")
    if given and args.sweep:
        parser.error("--sweep decodes the shapes world's validation world (its grader marks the answers); run it "
                     "without the --coco flags")


# ---- object words --------------------------------------------------------------------------------------------------

def object_spans(vocabulary: ObjectVocabulary, text: str) -> list[tuple[int, int, str]]:
    """(start, end, object) in characters of ``text`` of each object mention CHAIR counts in it, in order (a double
    word spans both its words). The mentions are CHAIR's own (``ObjectVocabulary.located``); this only finds them back
    among the text's tokens."""
    lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)  # same length: spans stay valid
    tokens = tokenize(lowered)
    spans, cursor = [], 0
    for token in tokens:  # tokenize rewrites quotes (`` ''): such a token has no span, and names no object
        at = lowered.find(token, cursor)
        spans.append(None if at < 0 else (at, at + len(token)))
        cursor = cursor if at < 0 else at + len(token)
    out = []
    for _, obj, first, width in vocabulary.located(lowered)[1]:
        ends = [s for s in spans[first:first + width] if s is not None]
        if ends:
            out.append((ends[0][0], ends[-1][1], obj))
    return out


def coco_labeller(vocabulary: ObjectVocabulary, truth: set[str]) -> Labeller:
    """Labels of an answer's pieces: a piece that is (part of) an object word, 1 when its object is not in ``truth``,
    0 when it is (group "object"); a "yes"/"no" piece is left to ``answer_labeller``; anything else 0, "other"."""
    def label(pieces: list[str]) -> list[tuple[int, int]]:
        text = "".join(pieces)
        starts = [sum(len(p) for p in pieces[:k]) for k in range(len(pieces))]
        spans = object_spans(vocabulary, text)
        out = []
        for start, piece in zip(starts, pieces):
            named = [obj for s, e, obj in spans if start < e and start + len(piece) > s]
            out.append((int(named[0] not in truth), GROUP_IDS["object"]) if named else (0, GROUP_IDS["other"]))
        return out
    return label


def answer_labeller(right: str) -> Labeller:
    """Labels of a forced yes/no answer: the "yes"/"no" piece 1 when it is not ``right``, 0 when it is."""
    def label(pieces: list[str]) -> list[tuple[int, int]]:
        return [(int(piece.strip(" ,.;:!?").lower() != right), GROUP_IDS["answer"])
                if word_group(piece) == GROUP_IDS["answer"] else (0, GROUP_IDS["other"]) for piece in pieces]
    return label


def _plural(name: str) -> str:
    return name + ("es" if name.endswith(("s", "sh", "ch", "x")) else "s")


def swapped_caption(coco: CocoImages, image_id: int, caption: str, rng: random.Random) -> str | None:
    """``caption`` with one word naming a present object replaced by an absent category (plural for a plural, the
    first letter's case kept), such that CHAIR reads the new word as that category; None when nothing can be swapped."""
    truth = coco.truth[image_id]
    present = [span for span in object_spans(coco.vocabulary, caption) if span[2] in truth]
    absent = [c for c in coco.categories if c not in truth]
    if not present or not absent:
        return None
    start, end, _ = rng.choice(present)
    last = caption[start:end].split(" ")[-1].lower()
    for new in rng.sample(absent, len(absent)):  # the first CHAIR reads back (the original variant reads "bus" as "bu")
        for word in ((_plural(new), new) if singularize(last) != last else (new,)):
            word = word[0].upper() + word[1:] if caption[start].isupper() else word
            text = caption[:start] + word + caption[end:]
            if any(s == start and obj == new for s, _, obj in object_spans(coco.vocabulary, text)):
                return text
    return None


def questions(coco: CocoImages, image_id: int, rng: random.Random) -> list[tuple[str, str]]:
    """(question, right answer) about a present object ("yes") and an absent category ("no"), where there are such."""
    truth = sorted(coco.truth[image_id])
    absent = [c for c in coco.categories if c not in coco.truth[image_id]]
    out = [(QUESTION.format(rng.choice(truth)), "yes")] if truth else []
    return out + ([(QUESTION.format(rng.choice(absent)), "no")] if absent else [])


# ---- what the two commands train on ---------------------------------------------------------------------------------

def coco_examples(adapter, coco: CocoImages, ids: list[int], seed: int, description_tokens: int = DESCRIPTION_TOKENS,
                  max_rows: int | None = None) -> list[Example]:
    """The detector's answers on these images (see the module's note), every token labelled."""
    images = [coco.image(i) for i in ids]
    greedy = generate(adapter, images, DESCRIBE_PROMPT, False, seed, description_tokens, max_rows)
    sampled = generate(adapter, images, DESCRIBE_PROMPT, True, seed, description_tokens, max_rows)
    out = []
    for image_id, image, own, drawn in zip(ids, images, greedy, sampled, strict=True):
        rng = random.Random(f"coco {seed} {image_id}")
        describe = coco_labeller(coco.vocabulary, coco.truth[image_id])
        out += [Example(image, DESCRIBE_PROMPT, answer, True, describe) for answer in (own, drawn)]
        caption = rng.choice(coco.captions[image_id])
        forced = [caption, swapped_caption(coco, image_id, caption, rng)]
        out += [Example(image, DESCRIBE_PROMPT, text_ids(adapter, text), False, describe) for text in forced if text]
        for question, right in questions(coco, image_id, rng):
            out += [Example(image, question, text_ids(adapter, answer), False, answer_labeller(right))
                    for answer in ("Yes", "No")]
    return out


def preference_pairs(coco: CocoImages, image_id: int, seed: int) -> list[tuple[str, str, str]]:
    """DCD's (question, chosen, rejected) triples of one image: each human caption against its swapped copy, the right
    against the wrong answer of each question; the same for the same seed."""
    rng = random.Random(f"dcd coco {seed} {image_id}")
    pairs = []
    for caption in coco.captions[image_id]:
        swapped = swapped_caption(coco, image_id, caption, rng)
        if swapped is not None:
            pairs.append((DESCRIBE_PROMPT, caption, swapped))
    for question, right in questions(coco, image_id, rng):
        pairs.append((question, right.capitalize(), "No" if right == "yes" else "Yes"))
    return pairs
