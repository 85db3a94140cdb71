"""CHAIR as the reference chair.py computes it, in both versions: the table as chair.py reads it, nltk's tokens, the
lvlm variant's WordNet lemmas (sangminwoo/RITUAL eval_bench/chair.py) and the original's pattern singular forms
(LisaAnne/Hallucination utils/chair.py), double words and special cases, the COCO readers and the metric.

Every expectation is worked out from the reference code (the comments say how). The lvlm variant reads WordNet 3.0
from nltk's data or Debian's wordnet-base (.ci/run installs it); part-of-speech tags are given by hand, as nltk's
tagger needs a download CI does not make.
"""

from __future__ import annotations

import json

import pytest

from eval import (
    EvalInputError,
    caption_report,
    chair_metrics,
    coco_vocabulary,
    ground_truth_objects,
    read_coco_captions,
    read_coco_instances,
    read_synonyms,
)
from eval.chair import read_image_list, sample_images
from eval.chair_words import LvlmWords, tokenize

# The 80 category names of COCO 2014 / 2017, in COCO's order.
COCO_CATEGORIES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]


def hand_tagger(**tags):
    """A tagger as nltk.pos_tag: the given Penn tags by token, "NN" for every other token."""
    return lambda tokens: [(token, tags.get(token, "NN")) for token in tokens]


def lvlm_vocabulary(wordnet, **tags):
    vocabulary = coco_vocabulary("lvlm")
    vocabulary.caption_words = LvlmWords(hand_tagger(**tags), wordnet)
    return vocabulary


@pytest.fixture(scope="module")
def lvlm(wordnet):
    return lvlm_vocabulary(wordnet)


@pytest.fixture(scope="module")
def original():
    return coco_vocabulary("original")


def objects(vocabulary, caption):
    return [obj for _, obj in vocabulary.mentions(caption)]


def test_table_read_as_chair_py_reads_it(original):
    # line.strip().split(', '): an entry after ",  " keeps its leading space and never matches a word.
    assert original.objects == COCO_CATEGORIES
    assert all(original.synonyms[name] == name for name in COCO_CATEGORIES)
    assert original.synonyms["kitten"] == "cat" and original.synonyms["sofa"] == "couch"
    assert original.synonyms[" motor bike"] == "motorcycle" and "motor bike" not in original.synonyms
    assert original.synonyms[" cheesecake"] == "cake" and "cheesecake" not in original.synonyms
    assert original.synonyms["iPhone"] == "cell phone"  # captions are lower-cased: never matched there either


def test_tokens_are_nltks():
    # NLTKWordTokenizer splits neither "-" nor "/", turns quotes into `` and '', splits "'s" and a final "'"; Punkt
    # makes each "." that ends a sentence a token of its own.
    assert tokenize('An adult-sized, horse-drawn cart; forks/spoons and a "Stop" sign.') == [
        "an", "adult-sized", ",", "horse-drawn", "cart", ";", "forks/spoons", "and", "a", "``", "stop", "''", "sign",
        ".",
    ]
    assert tokenize("The zebra's manes and the dogs' bowls.") == [
        "the", "zebra", "'s", "manes", "and", "the", "dogs", "'", "bowls", ".",
    ]
    # The untrained Punkt splitter ends a sentence at "u.s."; word_tokenize's English model would keep "u.s." whole.
    assert tokenize("The U.S. highway. A dog.") == ["the", "u.s", ".", "highway", ".", "a", "dog", "."]


# caption, lvlm objects (tags by hand: "NN" unless given), original objects
CASES = [
    # compounds are one token there, and match nothing (ours used to find person, horse, truck, tie, fork, spoon)
    ("An adult-sized horse-drawn cart.", [], []),
    ("A truck-like van and a tie-dye shirt.", ["car"], ["car"]),
    ("Forks/spoons on a table.", ["dining table"], ["dining table"]),
    ('A "Stop" sign by the road.', [], []),  # `` stop '' sign: no "stop sign" pair
    # WordNet: bus -> bus, buses -> bus; pattern: "bus" -> "bu" (rule s$), "buses" -> "bus" (rule (bus)es$)
    ("A bus.", ["bus"], []),
    ("Two buses.", ["bus"], ["bus"]),
    # WordNet: ties -> tie; pattern: "ties" -> "ty" (rule ([^aeiouy]|qu)ies$), so "bow ties" is "bow" (a tie) + "ty"
    ("A tie and two ties.", ["tie", "tie"], ["tie"]),
    ("Bow ties.", ["tie"], ["tie"]),
    ("A man wears a bow tie.", ["person", "tie"], ["person", "tie"]),
    # manes -> mane in both (ours used to make it "man", a person)
    ("The zebra's manes.", ["zebra"], ["zebra"]),
    ("The dogs' bowls and the man's hat.", ["dog", "bowl", "person"], ["dog", "bowl", "person"]),
    # " cheesecake" and " motor bike" keep their leading space: nothing; "motor bike" is a double word of no object
    ("A cheesecake and a motor bike.", [], []),
    ("A motorbike and a cupcake.", ["motorcycle", "cake"], ["motorcycle", "cake"]),
    # WordNet keeps "men": noun.exc gives "man" too, but "men" is a noun lemma and min(key=len) keeps the first of
    # equal length; pattern's irregular "men" -> "man"
    ("Two men and a woman watch the people.", ["person", "person"], ["person", "person", "person"]),
    # double words, also in the plural ("glasses" -> "glass"; pattern "glass" -> "glas", hence CHAIR's "wine glas")
    ("Hot dogs beside teddy bears on a dining table.", ["hot dog", "teddy bear", "dining table"],
     ["hot dog", "teddy bear", "dining table"]),
    ("Wine glasses and a wine glass.", ["wine glass", "wine glass"], ["wine glass", "wine glass"]),
    ("A baby elephant passes a passenger train.", ["elephant", "train"], ["elephant", "train"]),
    ("The toilet seat is up.", ["toilet"], ["toilet"]),
    ("The seat of the toilet is up.", ["toilet"], ["toilet"]),
    ("Knives, buses and ponies under blue skies.", ["knife", "bus", "horse"], ["knife", "bus", "horse"]),
    ("The skis and the scissors of the children.", ["skis", "scissors", "person"], ["skis", "scissors", "person"]),
    ("A kitchen with a stove, an oven and a fridge.", ["oven", "oven", "refrigerator"],
     ["oven", "oven", "refrigerator"]),
    # pattern returns "doggies" and "collies" unchanged (its singular_ie branch); WordNet gives doggy and collie
    ("Doggies and collies.", ["dog", "dog"], []),
    ("", [], []),
]


@pytest.mark.parametrize("caption, lvlm_objects, original_objects", CASES)
def test_mentions_of_both_variants(lvlm, original, caption, lvlm_objects, original_objects):
    assert objects(lvlm, caption) == lvlm_objects
    assert objects(original, caption) == original_objects


def test_the_part_of_speech_picks_the_lemma(wordnet):
    # WordNet: "copes" as a verb -> ["cope", "cop"] -> "cop" (a person); as a noun -> "cope". pattern: "cope".
    caption = "He copes with vanes and cares."
    assert objects(lvlm_vocabulary(wordnet, copes="VBZ", cares="NNS"), caption) == ["person"]
    assert objects(lvlm_vocabulary(wordnet, copes="NNS", cares="VBZ"), caption) == []
    assert objects(coco_vocabulary("original"), caption) == []  # vanes -> vane, cares -> care, not van, car


def test_the_tagger_runs_only_where_the_part_of_speech_matters(wordnet):
    calls = []

    def tagger(tokens):
        calls.append(tokens)
        return [(token, "VBZ" if token == "copes" else "NN") for token in tokens]

    vocabulary = coco_vocabulary("lvlm")
    vocabulary.caption_words = LvlmWords(tagger, wordnet)
    # every word of it has lemmas of one meaning whatever the tag: tagging could change nothing
    assert objects(vocabulary, "A dog and a cat on a sofa.") == ["dog", "cat", "couch"]
    assert calls == [] and vocabulary.caption_words.provenance()["tagger"] is None
    assert objects(vocabulary, "He copes.") == ["person"]
    assert calls == [["he", "copes", "."]] and vocabulary.caption_words.provenance()["tagger"] == "given"


def test_length_counts_tokens_with_double_words_joined(lvlm, original):
    # eval_bench/chair.py line 376: len(raw_words), the words after double words are joined, punctuation included
    assert lvlm.words("A hot dog, a bus.") == ["a", "hot dog", ",", "a", "bus", "."]
    assert original.words("A hot dog, a bus.") == ["a", "hot dog", ",", "a", "bu", "."]
    assert caption_report("Two teddy bears.", {"teddy bear"}, lvlm)["words"] == 3


@pytest.mark.parametrize("variant, expected", [
    # lvlm: caption 3's buses are buses, two hallucinated mentions
    ("lvlm", {"chair_s": 2 / 3, "chair_i": 3 / 8, "recall": 5 / 6}),
    # original: "bus" -> "bu" names nothing, so caption 3 names only its cars
    ("original", {"chair_s": 1 / 3, "chair_i": 1 / 6, "recall": 5 / 6}),
])
def test_chair_metrics_hand_computed(wordnet, variant, expected):
    vocabulary = lvlm_vocabulary(wordnet) if variant == "lvlm" else coco_vocabulary("original")
    truth = {1: {"dog", "person"}, 2: {"pizza", "dining table", "cup"}, 3: {"car"}}
    captions = {
        1: "A man walks a dog and a cat.",  # person, dog, cat: cat hallucinated; 9 tokens
        2: "A pizza on a table.",  # pizza, dining table: none hallucinated; 6 tokens
        3: "Two cars and a bus and a bus.",  # car (+ bus, bus for lvlm); 9 tokens
    }
    reports = [caption_report(captions[i], truth[i], vocabulary) for i in (1, 2, 3)]
    assert reports[0]["hallucinated"] == ["cat"]
    assert reports[2]["mentions"] == (["car", "bus", "bus"] if variant == "lvlm" else ["car"])
    metrics = chair_metrics(reports)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    assert metrics["length"] == pytest.approx((9 + 6 + 9) / 3)
    assert metrics["n"] == 3


def _coco_files(tmp_path):
    instances = {
        "images": [
            {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 30, "width": 40},
            {"id": 73, "file_name": "COCO_val2014_000000000073.jpg", "height": 30, "width": 40},
            {"id": 99, "file_name": "COCO_val2014_000000000099.jpg", "height": 30, "width": 40},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1]},
            {"id": 2, "image_id": 42, "category_id": 18, "bbox": [0, 0, 1, 1]},
            {"id": 3, "image_id": 42, "category_id": 18, "bbox": [0, 0, 1, 1]},
            {"id": 4, "image_id": 73, "category_id": 88, "bbox": [0, 0, 1, 1]},
            {"id": 5, "image_id": 99, "category_id": 24, "bbox": [0, 0, 1, 1]},
        ],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 24, "name": "zebra", "supercategory": "animal"},
            {"id": 88, "name": "teddy bear", "supercategory": "indoor"},
        ],
    }
    captions = {
        "images": instances["images"],
        "annotations": [
            {"id": 10, "image_id": 42, "caption": "A woman throws a frisbee to her puppy."},
            {"id": 11, "image_id": 42, "caption": "A dog catches a disc."},
            {"id": 12, "image_id": 73, "caption": "A stuffed bear on a bed."},
            {"id": 13, "image_id": 99, "caption": "A zebra with a short mane; the manes of two zebras."},
        ],
    }
    (tmp_path / "instances_val2014.json").write_text(json.dumps(instances))
    (tmp_path / "captions_val2014.json").write_text(json.dumps(captions))
    return tmp_path / "instances_val2014.json", tmp_path / "captions_val2014.json"


@pytest.mark.parametrize("variant", ["lvlm", "original"])
def test_ground_truth_from_instances_and_human_captions(tmp_path, wordnet, variant):
    vocabulary = lvlm_vocabulary(wordnet) if variant == "lvlm" else coco_vocabulary("original")
    instances_path, captions_path = _coco_files(tmp_path)
    instances = read_coco_instances(instances_path)
    assert instances.file_names[73] == "COCO_val2014_000000000073.jpg"
    assert instances.objects == {42: {"person", "dog"}, 73: {"teddy bear"}, 99: {"zebra"}}
    captions = read_coco_captions(captions_path)
    truth = ground_truth_objects(vocabulary, instances, captions)
    # 42: person + dog from the boxes, frisbee from a caption; 73: teddy bear from the box, "bear" and bed from the
    # caption (CHAIR's ground truth is that generous); 99: the manes name no person (ours once read "man" there).
    assert truth == {42: {"person", "dog", "frisbee"}, 73: {"teddy bear", "bear", "bed"}, 99: {"zebra"}}
    assert ground_truth_objects(vocabulary, instances) == instances.objects


def test_image_list_and_sampling(tmp_path):
    instances_path, _ = _coco_files(tmp_path)
    instances = read_coco_instances(instances_path)
    listing = tmp_path / "images.txt"
    listing.write_text("73\nCOCO_val2014_000000000042.jpg\n\n73\n")
    assert read_image_list(listing, instances) == [73, 42]
    listing.write_text("12345\n")
    with pytest.raises(EvalInputError, match=r"images\.txt, line 1: '12345' is not an image of the instances file"):
        read_image_list(listing, instances)
    draw = sample_images(instances, 2, seed=0)
    assert len(draw) == 2 and set(draw) <= {42, 73, 99}
    assert sample_images(instances, 2, seed=0) == draw  # seeded
    assert sample_images(instances, 10, seed=0) == [42, 73, 99]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "is not valid JSON"),
        ('{"images": [], "annotations": []}', "expected a list 'categories'"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "every image needs id and file_name"),
        ('{"images": [], "annotations": [{"image_id": 1, "category_id": 5}], "categories": []}',
         "category_id 5, not in categories"),
    ],
)
def test_bad_instances_file_is_named(tmp_path, content, message):
    path = tmp_path / "instances_val2014.json"
    path.write_text(content)
    with pytest.raises(EvalInputError) as error:
        read_coco_instances(path)
    assert str(path) in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("variant", ["lvlm", "original"])
def test_custom_synonym_table_for_other_worlds(tmp_path, wordnet, variant):
    table = tmp_path / "shapes.txt"
    table.write_text("# a made-up world\nsquare, box\nred circle, disc\n")
    vocabulary = read_synonyms(table, variant=variant, tagger=hand_tagger() if variant == "lvlm" else None)
    assert vocabulary.objects == ["square", "red circle"] and vocabulary.variant == variant
    # two-word entries are double words; "boxes" -> box, "circles" -> circle in both variants
    assert objects(vocabulary, "Two boxes and red circles.") == ["square", "red circle"]


def test_unknown_variant_is_refused():
    with pytest.raises(EvalInputError, match="unknown CHAIR variant 'both'; expected one of lvlm, original"):
        coco_vocabulary("both")
    with pytest.raises(ValueError, match="tags nothing"):
        coco_vocabulary("original", tagger=hand_tagger())


def _benchmark_files(tmp_path):
    instances_path, captions_path = _coco_files(tmp_path)
    images = tmp_path / "val2014"
    images.mkdir()
    for image in json.loads(instances_path.read_text())["images"]:
        (images / image["file_name"]).write_bytes(b"")  # chair_benchmark only checks that the images are there
    return str(images), str(instances_path), str(captions_path)


@pytest.mark.parametrize("variant, bus", [("lvlm", ["bus"]), ("original", [])])
def test_chair_benchmark_scores_with_the_variant_it_names(tmp_path, wordnet, variant, bus):
    from eval.benchmarks import chair_benchmark

    images, instances, captions = _benchmark_files(tmp_path)
    tagger = hand_tagger() if variant == "lvlm" else None
    bench = chair_benchmark(images, instances, captions, num_images=3, variant=variant, tagger=tagger)
    answers = {request.key: {"baseline": "A dog and a bus."} for request in bench.requests}
    scored = bench.score(answers, ["baseline"])
    assert scored.table.title.startswith(f"CHAIR, {variant} variant (")
    assert scored.details["baseline"]["mentions"] == 3 * (1 + len(bus))
    assert bench.settings["chair_variant"] == variant and bench.settings["chair_words"]["variant"] == variant
    assert "Len: tokens a description" in scored.table.markdown()


def test_chair_benchmark_on_coco_fails_before_decoding_without_the_taggers_data(tmp_path, monkeypatch):
    import nltk

    from eval.benchmarks import chair_benchmark
    from eval.chair_words import NLTK_DOWNLOAD, ChairDataMissing

    images, instances, captions = _benchmark_files(tmp_path)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # no nltk data there
    nltk.tag._get_tagger.cache_clear()
    with pytest.raises(ChairDataMissing, match=NLTK_DOWNLOAD):
        chair_benchmark(images, instances, captions)  # lvlm by default
    assert chair_benchmark(images, instances, captions, variant="original").requests
