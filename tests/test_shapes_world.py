"""Tests of models/shapes_world: the world's realised biases, ground truth on hand-built scenes, the description
grammar, the training data's question mix, the fast input path, one training step of each stage, and the shipped
checkpoint (assets/shapes-llava) loaded offline through load_model and used through decoding.compare."""

from __future__ import annotations

import dataclasses
import json
import os
import random

import numpy as np
import pytest
import torch

from eval.shapes_world import evaluate
from models import load_model
from models.shapes_world import build, train, world
from models.shapes_world.world import Scene, SceneObject

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "shapes-llava")


# ---- the world's statistics -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def biased_statistics():
    return world.realised_statistics([world.sample_scene(i) for i in range(4000)])


def test_co_occurrence_bias_is_realised(biased_statistics):
    for trigger, (_partner, intended) in world.BIASED.pairs.items():
        with_trigger = biased_statistics["partner_given_trigger"][trigger]
        without = biased_statistics["partner_given_no_trigger"][trigger]
        # A full scene (6 objects) can cut a partner off, so the realised rate sits a little under the intended one.
        assert intended - 0.06 <= with_trigger <= intended + 0.03, (trigger, with_trigger)
        assert without < 0.3, (trigger, without)


def test_colour_priors_and_positional_habit_are_realised(biased_statistics):
    for kind, (_, intended) in world.BIASED.colour_priors.items():
        assert abs(biased_statistics["colour_prior"][kind] - intended) < 0.05, kind
    for kind, intended in world.BIASED.top_row.items():
        assert abs(biased_statistics["top_row"][kind] - intended) < 0.05, kind


def test_unbiased_world_has_none_of_the_biases():
    stats = world.realised_statistics([world.sample_scene(i, world.UNBIASED) for i in range(4000)])
    for trigger in world.BIASED.pairs:
        assert stats["partner_given_trigger"][trigger] < 0.3
    for kind in world.BIASED.colour_priors:
        assert abs(stats["colour_prior"][kind] - 1 / len(world.COLOURS)) < 0.05
    assert abs(stats["top_row"]["moon"] - 1 / 3) < 0.06


def test_sampling_is_deterministic_and_respects_force_and_forbid():
    assert world.sample_scene(123).to_dict() == world.sample_scene(123).to_dict()
    first, again = world.render(world.sample_scene(5)), world.render(world.sample_scene(5))
    assert np.array_equal(np.asarray(first), np.asarray(again))
    for seed in range(300):
        scene = world.sample_scene(seed, force=("circle",), forbid=("square",))
        assert "circle" in scene.kinds and "square" not in scene.kinds
        assert len(scene.objects) <= world.MAX_OBJECTS
        assert all(scene.count(k) <= world.MAX_PER_KIND for k in scene.kinds)
        cells = [(o.row, o.col) for o in scene.objects]
        assert len(cells) == len(set(cells))


# ---- visibility ----------------------------------------------------------------------------------------------------

def test_visibility_keeps_the_layout_and_is_drawn_at_its_rates():
    scenes = [world.sample_scene(seed) for seed in range(2000)]
    for seed in range(200):  # the same kinds, colours and cells with or without the visibility draws
        clear = world.sample_scene(seed, visibility=world.ALL_CLEAR)
        assert [(o.kind, o.colour, o.row, o.col) for o in clear.objects] == [
            (o.kind, o.colour, o.row, o.col) for o in scenes[seed].objects]
        assert all(o.hardness == "" and o.visibility == 1.0 for o in clear.objects)
    objects = [o for s in scenes for o in s.objects]
    share = {h: sum(o.hardness == h for o in objects) / len(objects) for h in world.HARDNESS}
    border = sum(o.row in (0, 2) or o.col in (0, 2) for o in objects) / len(objects)
    for hardness, rate in world.VISIBLE_MIX.rates.items():
        expected = rate * (border if hardness == "edge" else 1)  # an inner cell has no edge to cross
        assert abs(share[hardness] - expected) < 0.015, (hardness, share[hardness], expected)
    median = {h: float(np.median([o.visibility for o in objects if o.hardness == h])) for h in ("", *world.HARDNESS)}
    assert median[""] > 0.9 and all(median[h] < 0.75 for h in world.HARDNESS), median
    assert {world.visibility_band(o.visibility) for o in objects} == set(world.VISIBILITY_BANDS)


def test_hard_to_see_shapes_are_drawn_as_recorded():
    plain = _object("circle", "red", 1, 1)
    background = 220
    scene = Scene([plain], seed=1, background=background, noise=0.0)
    full = np.asarray(world.render(scene)).astype(int)
    centre = full[24, 24]
    assert tuple(centre) == world.RGB["red"] and world.visibility_of(plain) == 1.0
    faint = dataclasses.replace(plain, contrast=0.2)
    dim = np.asarray(world.render(Scene([faint], seed=1, background=background, noise=0.0))).astype(int)[24, 24]
    assert np.allclose(dim, background + 0.2 * (np.array(world.RGB["red"]) - background), atol=1)
    assert world.visibility_of(faint) == pytest.approx(0.2 * (6 / 5.7) ** 2, abs=0.02)  # radius 6: above typical
    covered = dataclasses.replace(plain, cover=0.5, cover_side="top")
    picture = np.asarray(world.render(Scene([covered], seed=1, background=background, noise=0.0)))
    assert tuple(picture[20, 24]) == (world.COVER_GREY,) * 3 and tuple(picture[27, 24]) == world.RGB["red"]
    assert 0.3 < world.visibility_of(covered) < 0.7
    assert world.object_masks(Scene([covered]))[0, 20, 24] == 0  # a covered pixel is no label for stage 1
    cut = dataclasses.replace(_object("circle", "red", 0, 0), cx=0.0, cy=0.0)  # centre on the corner: a quarter shows
    assert 0.2 < world.visibility_of(cut) < 0.45
    small = dataclasses.replace(plain, radius=3.0)
    assert world.visibility_of(small) == pytest.approx((3.0 / 5.7) ** 2, abs=0.08)


def test_scenes_round_trip_with_their_visibility():
    scene = next(s for s in map(world.sample_scene, range(100)) if any(o.hardness for o in s.objects))
    again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
    assert again.to_dict() == scene.to_dict()
    assert np.array_equal(np.asarray(world.render(again)), np.asarray(world.render(scene)))
    old = {"objects": [{"kind": "moon", "colour": "blue", "row": 0, "col": 1, "cx": 24, "cy": 8, "radius": 6}]}
    assert Scene.from_dict(old).objects[0].visibility == 1.0  # a scene saved before visibility existed


# ---- ground truth on hand-built scenes ---------------------------------------------------------------------------

def _object(kind, colour, row, col):
    return SceneObject(kind, colour, row, col, col * world.CELL + world.CELL / 2, row * world.CELL + world.CELL / 2, 6)


@pytest.fixture
def hand_built():
    # square (blue, bottom right), circle (red, top left), two stars (middle row)
    return Scene([_object("square", "blue", 2, 2), _object("circle", "red", 0, 0),
                  _object("star", "yellow", 1, 0), _object("star", "green", 1, 2)], seed=1)


def test_ground_truth_answers(hand_built):
    assert world.existence_question(hand_built, "circle").answer == "yes"
    assert world.existence_question(hand_built, "triangle").answer == "no"
    assert world.colour_question(hand_built, "circle", "red").answer == "yes"
    assert world.colour_question(hand_built, "square", "red").answer == "no"
    assert world.count_question(hand_built, "star", 2).answer == "yes"
    assert world.count_question(hand_built, "star", 2).text == "are there exactly two stars ?"
    assert world.count_question(hand_built, "circle", 1).text == "is there exactly one circle ?"
    assert world.count_question(hand_built, "circle", 3).answer == "no"
    assert world.position_question(hand_built, "circle", "left of", "square").answer == "yes"
    assert world.position_question(hand_built, "circle", "above", "square").answer == "yes"
    assert world.position_question(hand_built, "circle", "below", "square").answer == "no"
    assert world.position_question(hand_built, "square", "right of", "circle").answer == "yes"
    with pytest.raises(ValueError):
        world.position_question(hand_built, "star", "above", "square")  # two stars: "the star" is ambiguous


def test_description_is_in_reading_order(hand_built):
    assert world.describe(hand_built) == "a red circle , a yellow star , a green star and a blue square"
    assert world.describe(Scene([_object("ring", "orange", 1, 1)])) == "an orange ring"


def test_description_grammar_round_trip():
    for seed in range(500):
        scene = world.sample_scene(seed)
        assert world.parse_description(world.describe(scene)) == [(o.colour, o.kind) for o in scene.objects]
    for bad in ("a red circle and", "a red circle , a blue square", "a circle", "an red circle", "a red circle red",
                "a red circle and a blue square and a green star"):
        assert world.parse_description(bad) is None, bad
    assert world.mentioned_kinds("two squares and a red circle") == {"square", "circle"}


def test_rendered_colours_and_masks(hand_built):
    pixels = np.asarray(world.render(hand_built)).astype(int)
    masks = world.object_masks(hand_built)
    for obj, mask in zip(hand_built.objects, masks):
        assert mask.sum() > 40
        mean = pixels[mask].mean(axis=0)
        assert np.abs(mean - np.array(world.RGB[obj.colour])).max() < 12, obj


# ---- the training question mix -----------------------------------------------------------------------------------

def test_training_questions_never_ask_about_an_absent_partner():
    rng = random.Random(0)
    scene = world.sample_scene(7, force=("circle",), forbid=("square",))
    assert "square" in world.absent_partners(scene)
    asked = [world.sample_training_question(scene, rng) for _ in range(2000)]
    assert not any("square" in q.subject for q in asked)
    with_rate = [world.sample_training_question(scene, rng, partner_question_rate=1.0,
                                                family_weights={"existence": 1.0}) for _ in range(400)]
    assert any(q.subject == ("square",) and q.answer == "no" for q in with_rate)


def test_training_answers_are_balanced_and_correct():
    rng = random.Random(1)
    for family in ("existence", "colour", "count"):
        said_yes = []
        for seed in range(1000):
            scene = world.sample_scene(seed)
            if not any(scene.count(k) == 1 for k in scene.kinds):
                continue  # no colour question possible
            q = world.sample_training_question(scene, rng, family_weights={family: 1.0})
            assert q.family == family
            if family == "existence":
                assert q.answer == world.yes_no(q.subject[0] in scene.kinds)
            said_yes.append(q.answer == "yes")
        assert 0.44 < np.mean(said_yes) < 0.56, family
    scene = world.sample_scene(11)
    described = world.sample_training_question(scene, rng, family_weights={"description": 1.0})
    assert described.answer == world.describe(scene)


# ---- model inputs and training -----------------------------------------------------------------------------------

def test_fast_inputs_match_the_processor():
    encoder = build.Encoder(build.build_processor())
    scene = world.sample_scene(3)
    for question in ("is there a circle in the image ?", world.DESCRIBE_PROMPT):
        encoder.check(world.render(scene), question)
    batch = encoder.batch([world.render(scene)], ["is there a circle in the image ?"], ["no"])
    targets = batch["targets"][0]
    assert encoder.tokenizer.convert_ids_to_tokens(targets[targets != -100].tolist()) == ["no", "</s>"]


def test_one_training_step_of_each_stage_then_load(tmp_path):
    stage1 = str(tmp_path / "stage1.pt")
    train.main(["stage1", "--tiny", "--steps", "1", "--batch", "4", "--checkpoint", stage1])
    assert torch.load(stage1, weights_only=True)["step"] == 1
    stage2, folder = str(tmp_path / "stage2.pt"), tmp_path / "model"
    train.main(["stage2", "--tiny", "--steps", "1", "--batch", "4", "--init", stage1, "--checkpoint", stage2])
    # Resuming continues from the saved step, and the frozen vision tower is still stage 1's.
    train.main(["stage2", "--tiny", "--steps", "2", "--batch", "4", "--init", stage1, "--checkpoint", stage2,
                "--save", str(folder)])
    state = torch.load(stage2, weights_only=True)
    assert state["step"] == 2
    tower = {k: v for k, v in torch.load(stage1, weights_only=True)["model"].items() if "vision_tower" in k}
    assert all(torch.equal(state["model"][k], v) for k, v in tower.items())
    adapter = load_model(folder)
    assert adapter.family == "llava" and next(adapter.model.parameters()).dtype == torch.float32
    # A saved model folder can be fine-tuned further: stage 2 starts from all of its weights.
    tuned = tmp_path / "tuned"
    train.main(["stage2", "--tiny", "--steps", "1", "--batch", "4", "--init", str(folder), "--lr", "0",
                "--save", str(tuned)])
    before, after = adapter.model.state_dict(), load_model(tuned).model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_stage2_loss_means_per_example_or_per_token():
    # two examples: one answer token with loss log 2, three answer tokens with loss log 4 each
    vocab = 4
    logits = torch.zeros(2, 4, vocab)
    logits[0, 0] = torch.tensor([0.0, 0.0, -1e9, -1e9])  # p(target 0) = 1/2
    targets = torch.tensor([[0, -100, -100, -100], [1, 2, 3, -100]])

    class FixedLogits(torch.nn.Module):
        def forward(self, input_ids, pixel_values):
            return type("Output", (), {"logits": logits})()

    batch = {"input_ids": None, "pixel_values": None, "targets": targets}
    log2, log4 = np.log(2), np.log(4)
    assert train.stage2_loss(FixedLogits(), batch).item() == pytest.approx((log2 + log4) / 2)
    assert train.stage2_loss(FixedLogits(), batch, "token").item() == pytest.approx((log2 + 3 * log4) / 4)
    with pytest.raises(ValueError, match="mean"):
        train.stage2_loss(FixedLogits(), batch, "batch")


def test_a_run_in_segments_equals_the_run_in_one_go(tmp_path):
    stage1 = str(tmp_path / "stage1.pt")
    train.main(["stage1", "--tiny", "--steps", "1", "--batch", "4", "--checkpoint", stage1])
    whole, parts = str(tmp_path / "whole.pt"), str(tmp_path / "parts.pt")
    common = ["stage2", "--tiny", "--steps", "4", "--batch", "4", "--warmup", "1", "--init", stage1]
    train.main(common + ["--checkpoint", whole])
    train.main(common + ["--stop-at", "2", "--checkpoint", parts])
    assert torch.load(parts, weights_only=True)["step"] == 2
    train.main(common + ["--stop-at", "1", "--checkpoint", parts])  # already past: leaves the state alone
    assert torch.load(parts, weights_only=True)["step"] == 2
    train.main(common + ["--checkpoint", parts])
    a, b = torch.load(whole, weights_only=True)["model"], torch.load(parts, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit):
        train.parse_args(["stage2", "--steps", "4", "--stop-at", "5"])


def test_the_recipe_is_made_of_valid_train_commands(tmp_path, capsys):
    from models.shapes_world import recipe

    runs = recipe.runs(str(tmp_path), str(tmp_path / "model"))
    stages = [train.parse_args(argv) for argv in runs]
    assert [a.stage for a in stages] == ["stage1"] + ["stage2"] * 9
    assert stages[-1].save == str(tmp_path / "model")
    # each stage-2 run starts from what the run before it made
    assert stages[1].init == stages[0].checkpoint and stages[5].init == stages[4].save
    assert all(stages[i].init == stages[i - 1].save for i in (6, 7, 8, 9)) and stages[1].loss_mean == "token"
    # the first checkpoint's history ran in the crisp world; the last three runs teach the hard-to-see shapes
    assert [a.visibility for a in stages] == ["clear"] * 7 + ["mixed"] * 3
    assert [a.partner_question_rate for a in stages[7:]] == [0.25, 0.25, 0.3]
    recipe.main(["--workdir", str(tmp_path), "--save", str(tmp_path / "model"), "--dry-run"])
    assert capsys.readouterr().out.count("python -m models.shapes_world.train") == len(runs)
    assert not list(tmp_path.iterdir())  # a dry run trains nothing


# ---- the shipped checkpoint --------------------------------------------------------------------------------------

needs_shipped = pytest.mark.skipif(not os.path.isdir(SHIPPED), reason="assets/shapes-llava has not been trained")


@pytest.fixture(scope="module")
def shipped():
    return load_model(SHIPPED)


@needs_shipped
def test_shipped_checkpoint_is_small_and_fp16():
    size = sum(os.path.getsize(os.path.join(SHIPPED, f)) for f in os.listdir(SHIPPED))
    assert size < 20 * 2**20
    assert os.path.exists(os.path.join(SHIPPED, "MODEL_CARD.md"))


@needs_shipped
def test_shipped_model_answers_fixed_scenes(shipped, hand_built):
    answerer = evaluate.GreedyAnswerer(shipped)
    lone_moon = Scene([_object("moon", "purple", 0, 1)], seed=2)
    questions = [
        (hand_built, "is there a circle in the image ?", "yes"),
        (hand_built, "is there a ring in the image ?", "no"),
        (hand_built, "is the circle red ?", "yes"),
        (hand_built, "is the square red ?", "no"),
        (hand_built, "is there exactly one circle ?", "yes"),
        (lone_moon, "is there a moon in the image ?", "yes"),
        (lone_moon, "is there a bar in the image ?", "no"),
        (lone_moon, "is the moon purple ?", "yes"),
    ]
    said = answerer.first_tokens([s for s, _, _ in questions], [q for _, q, _ in questions])
    assert said == [a for _, _, a in questions]
    assert answerer.describe([lone_moon, hand_built]) == ["a purple moon", world.describe(hand_built)]


@needs_shipped
def test_shipped_model_hallucinates_the_partner(shipped):
    # On scenes with a trigger and without its partner the world's co-occurrence prior puts the partner in, for every
    # rule (the world's design target: false "yes" >= 0.3 against <= 0.1 on scenes with neither); one fixed scene can go
    # either way (circle -> square is the weakest rule, about 0.63), so the test measures rates on 40 scenes a rule.
    probe = evaluate.partner_probe(40, seed=5)
    answerer = evaluate.GreedyAnswerer(shipped)
    said = answerer.first_tokens([p["scene"] for p in probe], [p["question"].text for p in probe])
    for rule in {p["rule"] for p in probe}:
        rate = {kind: sum(s == "yes" for p, s in zip(probe, said) if p["rule"] == rule and p["kind"] == kind) / 40
                for kind in ("trigger", "control")}
        assert rate["trigger"] >= 0.3 and rate["control"] <= 0.1, (rule, rate)
    # yet it seldom names the partner when it describes the scenes it said "yes" to: the hallucination lives in the
    # yes/no answers (about 5 % of such descriptions name it, `evaluate` measures)
    fooled = [p for p, s in zip(probe, said) if p["kind"] == "trigger" and s == "yes"]
    texts = answerer.describe([p["scene"] for p in fooled])
    named = sum(p["question"].subject[0] in world.mentioned_kinds(t) for p, t in zip(fooled, texts))
    assert len(fooled) >= 36 and named <= 0.2 * len(fooled), (named, len(fooled))


@needs_shipped
@pytest.mark.parametrize("method", ["vcd", "ritual", "ritual_vcd", "savcd", "code", "m3id", "icd"])
def test_shipped_model_runs_every_method(shipped, method):
    from decoding import compare

    scene = Scene([_object("triangle", "green", 0, 0), _object("star", "yellow", 2, 1)], seed=4)
    result = compare(shipped, world.render(scene), "is there a triangle in the image ?", method=method,
                     max_new_tokens=3, attention_layers=None)
    assert result.done and result.baseline.text.split()[0] == "yes"
    assert result.method_side.tokens


@needs_shipped
def test_vcd_probe_reports_how_confident_the_hallucinated_yes_is(shipped):
    report = evaluate.vcd_probe(shipped, 12)
    n_trigger = report["n"] // 2
    assert report["n"] == 12 and 0 <= report["hallucinated_yes"] <= n_trigger
    assert report["hallucinated_yes"] == round(report["trigger_false_yes_baseline"] * n_trigger)
    assert 0 <= report["single_candidate"] <= report["hallucinated_yes"]
    # a single plausible candidate means VCD must keep the baseline's "yes"
    assert round(report["trigger_false_yes_vcd"] * n_trigger) >= report["single_candidate"]
    if report["hallucinated_yes"]:
        assert 0 < report["p_yes_min"] <= report["p_yes_median"] <= 1
    # the per-rule figures add up to the totals
    rules = report["by_rule"].values()
    for key in ("trigger_false_yes_baseline", "trigger_false_yes_vcd"):
        assert sum(r[key] for r in rules) / len(rules) == pytest.approx(report[key])
