"""The marks the app shows while an answer streams (demo.shapes_lab.LiveMarks) are, at every token, the marks
`grading.grade_answer` gives the whole answer so far, although only the answer's end is graded again."""

import random

import pytest

from demo import shapes_lab
from models.shapes_world import grading, world

WORDS = [*world.KINDS, *world.PLURALS.values(), *world.COLOURS, "yes", "no", "not", "nothing", "yesterday", "a",
         "an", "and", "the", "there", "is", "of", "left", "two", "Yes", "NO", "Red", "circ", "le", "semicircle"]
GAPS = [" ", " ", " ", ", ", " , ", ". ", "\n", "", "-", "'", "  "]


def random_answer(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(0, 14))]
    return "".join(word + rng.choice(GAPS) for word in words)


def random_pieces(text: str, rng: random.Random) -> list[str]:
    """``text`` cut at random places (inside words too), with a few empty pieces."""
    pieces, position = [], 0
    while position < len(text):
        step = rng.choice([0, 1, 1, 2, 3, 4, 6, 9])
        pieces.append(text[position : position + step])
        position += step
    return pieces


def questions(scene: world.Scene, rng: random.Random) -> list[str]:
    texts = [world.DESCRIBE_PROMPT, "What is in the picture?", "is there a square in the image ?"]
    texts += [world.sample_training_question(scene, rng).text for _ in range(4)]
    return texts


def assert_live_marks_match(scene, question, pieces, batch_sizes):
    live = shapes_lab.LiveMarks(scene, question)
    done = 0
    for size in batch_sizes:
        marks = live.extend(pieces[done : done + size])
        done += size
        assert marks == grading.grade_answer(scene, question, pieces[:done]).marks, (question, pieces[:done])
    assert len(live) == done


@pytest.mark.parametrize("seed", range(12))
def test_live_marks_equal_grading_the_whole_answer_at_every_token(seed):
    rng = random.Random(seed)
    for _ in range(40):
        scene = world.sample_scene(rng.randrange(10**6))
        for question in questions(scene, rng):
            answer = random_answer(rng) if rng.random() < 0.7 else world.sample_training_question(scene, rng).answer
            pieces = random_pieces(answer, rng)
            assert_live_marks_match(scene, question, pieces, [1] * len(pieces))


def test_live_marks_take_several_tokens_at_once_and_any_answer():
    rng = random.Random(7)
    scene = world.sample_scene(3)
    for _ in range(300):
        question = rng.choice(questions(scene, rng))
        pieces = random_pieces(random_answer(rng), rng)
        sizes, left = [], len(pieces)
        while left > 0:
            sizes.append(min(left, rng.choice([0, 1, 2, 5])))
            left -= sizes[-1]
        assert_live_marks_match(scene, question, pieces, sizes)


def test_live_marks_of_yes_no_answers_settle_on_the_first_answer():
    scene = world.sample_scene(11)
    absent = next(kind for kind in world.KINDS if not world.exists(scene, kind))
    question = world.existence_question(scene, absent).text
    pieces = ["Y", "es", ",", " there", " is", " a", f" {absent}", ".", " no", " yes"]
    assert_live_marks_match(scene, question, pieces, [1] * len(pieces))
    live = shapes_lab.LiveMarks(scene, question)
    assert live.extend(pieces) == (grading.HALLUCINATED, grading.HALLUCINATED, *[None] * 8)
    # "no" that becomes "not" is no answer, and the answer comes later
    assert_live_marks_match(scene, question, [" no", "t", " sure", ":", " no"], [1] * 5)


def test_live_marks_of_text_whose_lower_case_is_longer_grade_it_whole():
    scene = world.sample_scene(5)
    pieces = ["İ", "s", " a", " red", " circle", " and", " a", " star"]  # "İ".lower() is two characters
    assert_live_marks_match(scene, world.DESCRIBE_PROMPT, pieces, [1] * len(pieces))
    assert shapes_lab.LiveMarks(scene, world.DESCRIBE_PROMPT).extend([]) == ()
