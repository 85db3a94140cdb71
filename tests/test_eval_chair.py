"""CHAIR: the COCO synonym table, object mentions (synonyms, plurals, double words, CHAIR's special cases), the COCO
annotation readers and the metric, checked against hand-computed values."""

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


@pytest.fixture(scope="module")
def vocabulary():
    return coco_vocabulary()


def test_table_lists_the_80_coco_categories_under_their_own_names(vocabulary):
    assert vocabulary.objects == COCO_CATEGORIES
    assert all(vocabulary.synonyms[name] == name for name in COCO_CATEGORIES)
    assert vocabulary.synonyms["kitten"] == "cat"
    assert vocabulary.synonyms["sofa"] == "couch"
    assert vocabulary.synonyms["motor bike"] == "motorcycle"  # the table's double space is stripped


@pytest.mark.parametrize(
    "caption, objects",
    [
        # synonyms and plurals: men -> man -> person; "people" is itself a synonym of person
        ("Two men and a woman watch the people.", ["person", "person", "person"]),
        # double words, also in the plural: "hot dogs" is a hot dog, not a dog; "dining" + "table" -> dining table
        ("Hot dogs beside teddy bears on a dining table.", ["hot dog", "teddy bear", "dining table"]),
        ("Wine glasses and a cell phone near the traffic lights.", ["wine glass", "cell phone", "traffic light"]),
        # CHAIR's special cases: a baby animal is not a person, a passenger train not a person, a toilet seat not a
        # chair, and a bow tie is a tie
        ("A baby elephant passes a passenger train.", ["elephant", "train"]),
        ("The toilet seat is up.", ["toilet"]),
        ("The seat of the toilet is up.", ["toilet"]),
        ("A man wears a bow tie.", ["person", "tie"]),
        # irregular and -es / -ies / -ves plurals; "skies" must not become "ski"
        ("Knives, buses and ponies under blue skies.", ["knife", "bus", "horse"]),
        ("The skis and the scissors of the children.", ["skis", "scissors", "person"]),
        ("A motor bike and a cheesecake.", ["motorcycle", "cake"]),
        ("A kitchen with a stove, an oven and a fridge.", ["oven", "oven", "refrigerator"]),
        ("", []),
    ],
)
def test_mentions(vocabulary, caption, objects):
    assert [obj for _, obj in vocabulary.mentions(caption)] == objects


def test_chair_metrics_hand_computed(vocabulary):
    truth = {
        1: {"dog", "person"},
        2: {"pizza", "dining table", "cup"},
        3: {"car"},
    }
    captions = {
        1: "A man walks a dog and a cat.",  # person, dog, cat: cat hallucinated; 8 words
        2: "A pizza on a table.",  # pizza, dining table: none hallucinated; 5 words
        3: "Two cars and a bus and a bus.",  # car, bus, bus: two hallucinated mentions; 8 words
    }
    reports = [caption_report(captions[i], truth[i], vocabulary) for i in (1, 2, 3)]
    assert reports[0]["hallucinated"] == ["cat"]
    assert reports[2]["mentions"] == ["car", "bus", "bus"]
    assert reports[2]["hallucinated"] == ["bus", "bus"]
    metrics = chair_metrics(reports)
    assert metrics["chair_s"] == pytest.approx(2 / 3)  # captions 1 and 3 hallucinate
    assert metrics["chair_i"] == pytest.approx(3 / 8)  # (1 + 0 + 2) hallucinated of (3 + 2 + 3) mentions
    assert metrics["recall"] == pytest.approx(5 / 6)  # (2 + 2 + 1) named of (2 + 3 + 1) true objects
    assert metrics["length"] == pytest.approx(7.0)  # (8 + 5 + 8) / 3 words
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
        ],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 88, "name": "teddy bear", "supercategory": "indoor"},
        ],
    }
    captions = {
        "images": instances["images"],
        "annotations": [
            {"id": 10, "image_id": 42, "caption": "A woman throws a frisbee to her puppy."},
            {"id": 11, "image_id": 42, "caption": "A dog catches a disc."},
            {"id": 12, "image_id": 73, "caption": "A stuffed bear on a bed."},
        ],
    }
    (tmp_path / "instances_val2014.json").write_text(json.dumps(instances))
    (tmp_path / "captions_val2014.json").write_text(json.dumps(captions))
    return tmp_path / "instances_val2014.json", tmp_path / "captions_val2014.json"


def test_ground_truth_from_instances_and_human_captions(tmp_path, vocabulary):
    instances_path, captions_path = _coco_files(tmp_path)
    instances = read_coco_instances(instances_path)
    assert instances.file_names[73] == "COCO_val2014_000000000073.jpg"
    assert instances.objects == {42: {"person", "dog"}, 73: {"teddy bear"}, 99: set()}
    captions = read_coco_captions(captions_path)
    truth = ground_truth_objects(vocabulary, instances, captions)
    # 42: person + dog from the boxes, frisbee from a caption; 73: teddy bear from the box, "bear" and bed from the
    # caption (CHAIR's ground truth is that generous); 99: nothing.
    assert truth == {42: {"person", "dog", "frisbee"}, 73: {"teddy bear", "bear", "bed"}, 99: set()}
    assert ground_truth_objects(vocabulary, instances) == {42: {"person", "dog"}, 73: {"teddy bear"}, 99: set()}


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


def test_custom_synonym_table_for_other_worlds(tmp_path):
    table = tmp_path / "shapes.txt"
    table.write_text("# a made-up world\nsquare, box\nred circle, disc\n")
    vocabulary = read_synonyms(table)
    assert vocabulary.objects == ["square", "red circle"]
    # two-word entries are double words; plurals are found as for COCO
    assert [obj for _, obj in vocabulary.mentions("Two boxes and red circles.")] == ["square", "red circle"]
