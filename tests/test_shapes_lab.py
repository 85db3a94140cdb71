"""Ground-truth scoring of answers about shapes-world scenes, and the app's lab around it (scenes, matching, score)."""

import random

import pytest
from PIL import Image

from demo import shapes_lab
from demo.examples import EXAMPLES_DIR, gallery_examples, shapes_examples
from demo.images import read_upload
from models.shapes_world import grading, world
from models.shapes_world.grading import CORRECT, HALLUCINATED, MISSED

# A red circle top left, a yellow star in the middle, two blue squares on the bottom row.
SCENE = world.Scene(
    [
        world.SceneObject("circle", "red", 0, 0),
        world.SceneObject("star", "yellow", 1, 1),
        world.SceneObject("square", "blue", 2, 0),
        world.SceneObject("square", "blue", 2, 2),
    ],
    seed=5,
)


# ---- reading questions -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, parsed",
    [
        ("is there a star in the image ?", ("existence", ("star",), "")),
        ("Is there an orange moon?", None),  # not the grammar: an adjective
        ("IS THERE A MOON IN THE PICTURE?", ("existence", ("moon",), "")),
        ("is the star red ?", ("colour", ("star",), "red")),
        ("is there exactly one circle ?", ("count", ("circle",), "1")),
        ("are there exactly three crosses ?", ("count", ("cross",), "3")),
        ("is the circle left of the star ?", ("position", ("circle", "star"), "left of")),
        ("is the star below the circle?", ("position", ("star", "circle"), "below")),
        ("describe the image .", ("description", (), "")),
        ("Describe this image in detail.", ("description", (), "")),
        ("what colour is the star ?", None),
        ("is the circle left of the circle ?", None),
        ("", None),
    ],
)
def test_questions_are_read_leniently_in_the_worlds_grammar(text, parsed):
    assert grading.parse_question(text) == parsed


def test_each_question_gets_its_true_answer_from_the_scene():
    answers = {
        "is there a star in the image ?": "yes",
        "is there a diamond in the image ?": "no",
        "is the star yellow ?": "yes",
        "is the circle blue ?": "no",
        "are there exactly two squares ?": "yes",
        "is there exactly one square ?": "no",
        "is the circle above the star ?": "yes",
        "is the circle right of the star ?": "no",
        "describe the image .": "a red circle , a yellow star , a blue square and a blue square",
    }
    for text, answer in answers.items():
        assert grading.question_about(SCENE, text).answer == answer, text
    # "the square" is ambiguous with two squares: no ground truth, so nothing is scored as a yes/no answer.
    assert grading.question_about(SCENE, "is the square below the star ?") is None
    assert grading.question_about(SCENE, "how many shapes ?") is None


# ---- scoring answers -------------------------------------------------------------------------------------------------
def test_yes_no_answers_are_correct_hallucinated_or_missed():
    absent = grading.grade_answer(SCENE, "is there a diamond in the image ?", ["yes"])
    assert absent.marks == (HALLUCINATED,) and (absent.correct, absent.hallucinated, absent.missed) == (0, 1, 0)
    present = grading.grade_answer(SCENE, "is there a star in the image ?", ["no"])
    assert present.marks == (MISSED,) and present.missed == 1
    right = grading.grade_answer(SCENE, "is the star yellow ?", ["yes"])
    assert right.marks == (CORRECT,) and right.correct == 1
    # A chatty answer: only the first yes/no is the answer; the shape word echoes the question and is not scored.
    chatty = grading.grade_answer(SCENE, "Is there a diamond in the image?", ["Yes", ",", " there", " is a diamond"])
    assert chatty.marks == (HALLUCINATED, None, None, None) and chatty.hallucinated == 1


def test_a_description_marks_every_shape_and_colour_word_and_counts_what_it_left_out():
    pieces = ["a", " red", " circle", " ,", " a", " green", " star", " and", " a", " diamond"]
    grade = grading.grade_answer(SCENE, "describe the image .", pieces)
    assert grade.marks == (
        None, CORRECT, CORRECT, None, None, HALLUCINATED, CORRECT, None, None, HALLUCINATED
    )  # a green star is a wrong colour; the diamond is not there
    assert (grade.correct, grade.hallucinated) == (3, 2)
    assert grade.missed == 1  # the squares were never named


def test_marks_follow_words_split_across_tokens_and_a_wrong_word_is_never_hidden():
    grade = grading.grade_answer(SCENE, "describe the image .", ["a red ci", "rcle and a dia", "mond"])
    # the second piece holds the end of a correct word and the start of a hallucinated one: it shows the hallucination
    assert grade.marks == (CORRECT, HALLUCINATED, HALLUCINATED)
    assert (grade.correct, grade.hallucinated) == (2, 1)


def test_free_questions_score_the_shape_words_of_the_answer():
    grade = grading.grade_answer(SCENE, "What is in the picture?", ["Two", " squares", " and", " a", " moon", "."])
    assert grade.question is None
    assert grade.marks == (None, CORRECT, None, None, HALLUCINATED, None)


def test_the_worlds_own_answers_score_perfectly_on_random_scenes():
    rng = random.Random(0)
    for seed in range(60):
        scene = world.sample_scene(seed)
        question = world.sample_training_question(scene, rng)
        grade = grading.grade_answer(scene, question.text, [" " + word for word in question.answer.split()])
        assert grade.hallucinated == 0 and grade.missed == 0 and grade.correct >= 1, (question, grade)


# ---- the lab: scenes, recognising them, the score -------------------------------------------------------------------
def test_a_drawn_scene_is_fixed_by_its_seed_and_often_asks_for_the_missing_partner():
    assert shapes_lab.draw_scene(1_500_000_123) == shapes_lab.draw_scene(1_500_000_123)
    draws = [shapes_lab.draw_scene(shapes_lab.random_seed(random.Random(i))) for i in range(300)]
    partner_questions = 0
    for scene, question in draws:
        assert shapes_lab.APP_SEED_BASE <= scene.seed < shapes_lab.APP_SEED_BASE + shapes_lab.APP_SEED_RANGE
        asked = grading.question_about(scene, question)
        assert asked is not None, question  # every drawn question has a ground truth
        if asked.family == "existence" and asked.subject[0] in world.absent_partners(scene):
            partner_questions += 1
    assert 0.3 < partner_questions / len(draws) < 0.5
    families = {grading.parse_question(question)[0] for _, question in draws}
    assert families == {"existence", "colour", "count", "position", "description"}


def test_a_scene_is_recognised_pixel_for_pixel_after_an_upload_round_trip(tmp_path):
    scene, _ = shapes_lab.draw_scene(1_500_000_321)
    path = shapes_lab.write_scene(scene, tmp_path)
    picture = read_upload(str(path))
    assert shapes_lab.known_scene(picture, scene) == scene
    assert shapes_lab.known_scene(picture, None) is None  # not a gallery scene, and the session drew none
    pixels = picture.load()
    pixels[0, 0] = tuple(255 - v for v in pixels[0, 0])
    assert shapes_lab.known_scene(picture, scene) is None  # one pixel changed: not the scene any more
    jpeg = tmp_path / "scene.jpg"
    world.render(scene).save(jpeg, quality=95)
    assert shapes_lab.known_scene(read_upload(str(jpeg)), scene) is None  # lossy: the ground truth may not hold
    assert shapes_lab.known_scene(Image.new("RGB", (480, 480)), scene) is None


def test_the_gallery_scenes_are_shipped_and_recognised_without_a_draw():
    shipped = shapes_examples()
    assert len(shipped) == len(shapes_lab.EXAMPLE_SEEDS)
    for (name, question), seed in zip(shipped, shapes_lab.EXAMPLE_SEEDS):
        scene, drawn_question = shapes_lab.draw_scene(seed)
        assert question == drawn_question
        assert shapes_lab.known_scene(read_upload(str(EXAMPLES_DIR / name)), None) == scene
    # the first three are the co-occurrence trap: a trigger without its partner, asked for the partner
    for name, question in shipped[:3]:
        scene = shapes_lab.known_scene(read_upload(str(EXAMPLES_DIR / name)), None)
        assert grading.question_about(scene, question).subject[0] in world.absent_partners(scene)
    assert gallery_examples(shapes_first=True)[0][0].endswith(shipped[0][0])
    assert gallery_examples()[-1][0].endswith(shipped[-1][0])


def test_the_scoreboard_adds_runs_per_side():
    board = shapes_lab.Scoreboard()
    assert "Draw a shapes-world scene" in board.html()
    hallucinated = grading.grade_answer(SCENE, "is there a diamond in the image ?", ["yes"])
    right = grading.grade_answer(SCENE, "is there a diamond in the image ?", ["no"])
    board.add({"Baseline": hallucinated, "VCD": right})
    board.add({"Baseline": right, "VCD": right})
    assert board.runs == 2
    assert (board.sides["Baseline"].correct, board.sides["Baseline"].hallucinated) == (1, 1)
    assert board.sides["Baseline"].hallucination_rate == 0.5 and board.sides["VCD"].hallucination_rate == 0.0
    markup = board.html()
    assert "2 scored runs" in markup
    assert "<td>Baseline</td><td>1</td><td>1</td><td>0</td><td>50% [0%, 100%]</td>" in markup
    assert shapes_lab.SideScore().hallucination_rate is None
    found = board.sides["Baseline"].interval()  # two runs: the share with its bootstrap interval
    assert found.estimate == 0.5 and found.low == 0.0 and found.high == 1.0 and "50% [0%, 100%]" in markup
    assert "VCD − Baseline: -50 points" in markup and "no different from noise so far" in markup


def test_the_running_score_tells_a_real_difference_from_noise():
    hallucinated = grading.grade_answer(SCENE, "is there a diamond in the image ?", ["yes"])
    right = grading.grade_answer(SCENE, "is there a diamond in the image ?", ["no"])
    board = shapes_lab.Scoreboard()
    for k in range(3):  # one hallucination in three runs: an interval that takes in no difference at all
        board.add({"Baseline": hallucinated if k == 0 else right, "VCD": right})
    assert [t.significant for t in board.differences()] == [False]
    for _ in range(20):  # twenty more where only the baseline hallucinates
        board.add({"Baseline": hallucinated, "VCD": right})
    (test,) = board.differences()
    assert test.significant and test.difference.high < 0 and test.group == "23 runs"
    assert "a real difference" in board.html()
    board.add({"Baseline": right})  # a run scored for one side only is not paired
    assert board.differences()[0].group == "23 runs"
