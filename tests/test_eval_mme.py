"""MME: both published folder layouts, MME's answer rule, and its acc / acc+ score, checked against hand-computed
values."""

from __future__ import annotations

import pytest
from PIL import Image

from eval import EvalInputError, mme_subtask_score, parse_mme_answer, read_mme
from eval.benchmarks import mme_benchmark


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 30)).save(path)


def _questions(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{question}\t{answer}\n" for question, answer in lines))


@pytest.fixture
def mme_root(tmp_path):
    root = tmp_path / "MME_Benchmark_release_version"
    # existence: the flat layout, <image>.jpg beside <image>.txt
    for stem, thing in (("000000006040", "train"), ("000000018150", "bed")):
        _image(root / "existence" / f"{stem}.jpg")
        _questions(root / "existence" / f"{stem}.txt", [
            (f"Is there a {thing} in this image? Please answer yes or no.", "Yes"),
            ("Is there a giraffe in this image? Please answer yes or no.", "No"),
        ])
    # count: the split layout, images/ and questions_answer_YES_NO/
    _image(root / "count" / "images" / "000000041888.png")
    _questions(root / "count" / "questions_answer_YES_NO" / "000000041888.txt", [
        ("Are there two dogs in the image? Please answer yes or no.", "Yes"),
        ("Are there three dogs in the image? Please answer yes or no.", "No"),
    ])
    return root


def test_read_mme_both_layouts(mme_root):
    items = read_mme(mme_root, ["existence", "count"])
    assert [(i.subtask, i.image, i.index, i.answer) for i in items] == [
        ("existence", "existence/000000006040.jpg", 0, "yes"),
        ("existence", "existence/000000006040.jpg", 1, "no"),
        ("existence", "existence/000000018150.jpg", 0, "yes"),
        ("existence", "existence/000000018150.jpg", 1, "no"),
        ("count", "count/images/000000041888.png", 0, "yes"),
        ("count", "count/images/000000041888.png", 1, "no"),
    ]
    assert items[0].question == "Is there a train in this image? Please answer yes or no."


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Yes, there is a train.", "yes"),
        ("No, there is not.", "no"),
        (" yes\n", "yes"),
        ("Not sure", "no"),  # MME's rule: "no" within the first 4 characters
        ("Nope", "no"),
        ("There is a train.", "other"),  # neither in the first 4 characters: counted wrong
        ("I think yes", "other"),
        ("", "other"),
    ],
)
def test_mme_answer_rule(answer, expected):
    assert parse_mme_answer(answer) == expected


def test_mme_score_hand_computed():
    triples = [
        ("a.jpg", "yes", "yes"), ("a.jpg", "no", "no"),  # image a: both right
        ("b.jpg", "yes", "yes"), ("b.jpg", "no", "yes"),  # image b: one right
        ("c.jpg", "yes", "other"), ("c.jpg", "no", "yes"),  # image c: none right
    ]
    score = mme_subtask_score(triples)
    assert score["acc"] == pytest.approx(3 / 6)
    assert score["acc_plus"] == pytest.approx(1 / 3)
    assert score["score"] == pytest.approx(50 + 100 / 3)  # 83.33
    assert (score["questions"], score["images"], score["other"]) == (6, 3, 1)


def test_mme_total_is_the_sum_of_subtask_scores(mme_root):
    benchmark = mme_benchmark(str(mme_root), ["existence", "count"])
    answers = {}
    for request in benchmark.requests:
        if request.image.startswith("existence"):
            text = "Yes"  # 2 of the 4 questions right, neither image fully right
        else:
            text = "Yes" if "two dogs" in request.prompt else "No"  # both questions right
        answers[request.key] = {"baseline": text}
    scored = benchmark.score(answers, ["baseline"])
    row = scored.table.rows[0]
    assert row["existence"] == pytest.approx(50.0)  # acc 2/4 -> 50, acc+ 0/2 -> 0
    assert row["count"] == pytest.approx(200.0)  # acc 2/2 -> 100, acc+ 1/1 -> 100
    assert row["total"] == pytest.approx(250.0)
    assert [c.header for c in scored.table.columns] == ["Method", "Existence", "Count", "Total"]


def test_mme_limit_keeps_whole_images(mme_root):
    benchmark = mme_benchmark(str(mme_root), ["existence"], limit=1)
    assert [r.image for r in benchmark.requests] == ["existence/000000006040.jpg"] * 2


@pytest.mark.parametrize(
    "lines, message",
    [
        (["Is there a train?\tMaybe\n"], "line 1: the answer must be Yes or No"),
        (["Is there a train? Yes\n"], "line 1: expected 'question<TAB>answer'"),
        (["\n", "\tYes\n"], "line 2: the question is empty"),
    ],
)
def test_bad_question_file_is_named(tmp_path, lines, message):
    _image(tmp_path / "existence" / "1.jpg")
    (tmp_path / "existence" / "1.txt").write_text("".join(lines))
    with pytest.raises(EvalInputError) as error:
        read_mme(tmp_path, ["existence"])
    assert str(tmp_path / "existence" / "1.txt") in str(error.value) and message in str(error.value)


def test_missing_image_and_missing_subtask(tmp_path, mme_root):
    _questions(mme_root / "color" / "000000000001.txt", [("Is the car red?", "Yes")])
    with pytest.raises(EvalInputError, match=r"color/000000000001\.txt: no image 000000000001\.jpg"):
        read_mme(mme_root, ["color"])
    with pytest.raises(EvalInputError, match=r"position' does not exist \(subtask folders there: color, count, "
                                             r"existence\)"):
        read_mme(mme_root, ["position"])
