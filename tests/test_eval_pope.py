"""POPE: the question-file reader, POPE's own answer rule and its metrics, checked against hand-computed values."""

from __future__ import annotations

import json

import pytest

from eval import EvalInputError, parse_pope_answer, pope_metrics, read_pope
from eval.benchmarks import pope_benchmark, resolve_suffix
from eval.pope import split_name


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Yes, there is a dog in the image.", "yes"),
        ("No.", "no"),
        ("No, there is no dog.", "no"),
        ("There is no dog", "no"),  # "no" as a word anywhere in the first sentence
        ("", "yes"),  # POPE's rule: nothing negative found -> yes
        ("no", "no"),
        ("Yes. There is no cat.", "yes"),  # only the first sentence counts
        ("There is a dog, no doubt.", "no"),  # commas are dropped before the split
        ("The dog is not visible.", "no"),
        ("Not at all.", "yes"),  # capital "Not" is not one of POPE's words
        ("NO", "yes"),  # nor is "NO"
        ("Nope", "yes"),
        ("There is a dog\nno", "yes"),  # split on spaces only: "dog\nno" is one word
        ("Snow covers the ground.", "yes"),  # "no" inside a word does not count
    ],
)
def test_pope_answer_rule(answer, expected):
    assert parse_pope_answer(answer) == expected


def test_pope_metrics_hand_computed():
    labels = ["yes", "yes", "yes", "yes", "no", "no", "no", "no", "no", "no"]
    answers = [
        "Yes, there is a dog in the image.",  # yes: TP
        "No.",  # no: FN
        "There is a dog.",  # yes: TP
        "",  # yes: TP
        "There is no dog",  # no: TN
        "Yes",  # yes: FP
        "No, there is not.",  # no: TN
        "Not at all.",  # yes: FP
        "Yes. But no cat.",  # yes: FP
        "no",  # no: TN
    ]
    metrics = pope_metrics(labels, [parse_pope_answer(a) for a in answers])
    # TP 3, FN 1, FP 3, TN 3
    assert (metrics["tp"], metrics["fn"], metrics["fp"], metrics["tn"]) == (3, 1, 3, 3)
    assert metrics["n"] == 10
    assert metrics["accuracy"] == pytest.approx(0.6)  # (3 + 3) / 10
    assert metrics["precision"] == pytest.approx(0.5)  # 3 / (3 + 3)
    assert metrics["recall"] == pytest.approx(0.75)  # 3 / (3 + 1)
    assert metrics["f1"] == pytest.approx(0.6)  # 2 * 0.5 * 0.75 / 1.25
    assert metrics["yes_ratio"] == pytest.approx(0.6)  # 6 "yes" of 10


def test_pope_metrics_never_yes_gives_zero_precision_not_an_error():
    metrics = pope_metrics(["yes", "no"], ["no", "no"])
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (0.0, 0.0, 0.0)
    assert metrics["accuracy"] == 0.5
    assert metrics["yes_ratio"] == 0.0


def _write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_read_pope_published_format(tmp_path):
    path = _write_lines(tmp_path / "coco_pope_adversarial.json", [
        {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?",
         "label": "yes"},
        {"question_id": 2, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a dog in the image?",
         "label": "no"},
    ])
    items = read_pope(path)
    assert [(i.split, i.question_id, i.image, i.label) for i in items] == [
        ("adversarial", 1, "COCO_val2014_000000310196.jpg", "yes"),
        ("adversarial", 2, "COCO_val2014_000000310196.jpg", "no"),
    ]
    assert items[0].question == "Is there a snowboard in the image?"
    assert split_name("data/aokvqa_pope_seem_popular.json") == "popular"
    assert split_name("shapes_heldout.json") == "shapes_heldout"


@pytest.mark.parametrize(
    "content, message",
    [
        ('[{"question_id": 1}]\n', "line 1: expected a JSON object"),
        ('{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?"}\n', "line 1: missing label"),
        ('{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "Yes"}\n',
         'line 1: label must be "yes" or "no"'),
        ('\n{"question_id": 1, "image": "a.jpg", "text": "Q?", "label": "no"}\nnot json\n',
         "line 3: not a JSON object"),
        ('{"question_id": 1, "image": "a.jpg", "text": "Q?", "label": "no"}\n'
         '{"question_id": 1, "image": "b.jpg", "text": "Q?", "label": "no"}\n', "question_id 1 appears twice"),
        ("", "holds no questions"),
    ],
)
def test_read_pope_names_the_file_and_line_of_a_bad_record(tmp_path, content, message):
    path = tmp_path / "coco_pope_random.json"
    path.write_text(content)
    with pytest.raises(EvalInputError) as error:
        read_pope(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_read_pope_missing_file(tmp_path):
    with pytest.raises(EvalInputError, match="coco_pope_random.json.*does not exist"):
        read_pope(tmp_path / "coco_pope_random.json")


def test_pope_benchmark_shares_requests_and_checks_images(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "images" / name).write_bytes(b"")  # existence is all the benchmark checks before decoding
    random_split = _write_lines(tmp_path / "coco_pope_random.json", [
        {"question_id": 1, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "yes"},
        {"question_id": 2, "image": "b.jpg", "text": "Is there a dog in the image?", "label": "no"},
    ])
    popular_split = _write_lines(tmp_path / "coco_pope_popular.json", [
        {"question_id": 1, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "yes"},
        {"question_id": 2, "image": "b.jpg", "text": "Is there a chair in the image?", "label": "no"},
    ])
    benchmark = pope_benchmark([str(random_split), str(popular_split)], str(tmp_path / "images"), "one-word")
    # The cat question is in both splits: 3 distinct (image, prompt) requests, not 4.
    assert [r.prompt for r in benchmark.requests] == [
        "Is there a cat in the image? Please answer this question with one word.",
        "Is there a dog in the image? Please answer this question with one word.",
        "Is there a chair in the image? Please answer this question with one word.",
    ]
    missing = _write_lines(tmp_path / "coco_pope_adversarial.json", [
        {"question_id": 7, "image": "c.jpg", "text": "Is there a cat in the image?", "label": "yes"},
    ])
    with pytest.raises(EvalInputError, match=r"c\.jpg.*coco_pope_adversarial\.json, question_id 7.*does not exist"):
        pope_benchmark([str(missing)], str(tmp_path / "images"))


def test_prompt_suffixes():
    assert resolve_suffix("none") == ""
    assert resolve_suffix("one-word") == " Please answer this question with one word."
    assert resolve_suffix("single-word-or-phrase") == "\nAnswer the question using a single word or phrase."
    assert resolve_suffix("Answer yes or no.") == " Answer yes or no."
