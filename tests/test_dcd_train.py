"""DCD's projector training (eval/dcd_train.py): the preference pairs are right against wrong by the world's own
grading, the projector swap acts only where it is asked to, and training is seeded and resumable."""

from __future__ import annotations

import copy
import json
import os
import random

import pytest
import torch
from safetensors.torch import load_file

from eval import dcd_train
from models.shapes_world import grading, world

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "shapes-llava")
needs_shipped = pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "model.safetensors")),
                                   reason="no shipped checkpoint")


def _wrong(scene, question, answer) -> int:
    grade = grading.grade_answer(scene, question, answer.split(" "))
    return grade.hallucinated + grade.missed


def test_pairs_are_the_truth_against_one_wrong_answer():
    rng = random.Random(0)
    for seed in range(60):
        scene = world.sample_scene(seed)
        pairs = dcd_train.preference_pairs(scene, rng)
        assert {q for q, _, _ in pairs} >= {world.DESCRIBE_PROMPT}
        for question, chosen, rejected in pairs:
            assert chosen != rejected
            if question == world.DESCRIBE_PROMPT:
                assert chosen == world.describe(scene) and _wrong(scene, question, rejected) >= 1
            else:
                assert chosen == grading.question_about(scene, question).answer and rejected in ("yes", "no")
    first = dcd_train.pair_batch(dcd_train.TRAIN_SEED_BASE, 3, 16, 0)
    assert len(first) == 16 and [p[1:] for p in first] == [p[1:] for p in dcd_train.pair_batch(
        dcd_train.TRAIN_SEED_BASE, 3, 16, 0)]


@needs_shipped
def test_the_swap_replaces_the_projection_only_inside_its_context():
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from models.shapes_world import build

    model = LlavaForConditionalGeneration.from_pretrained(SHIPPED, dtype=torch.float32).eval()
    encoder = build.Encoder(LlavaProcessor.from_pretrained(SHIPPED))
    batch = encoder.batch([world.render(world.sample_scene(1))], [world.DESCRIBE_PROMPT])

    def logits():
        with torch.no_grad():
            return model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits

    plain = logits()
    same = copy.deepcopy(model.model.multi_modal_projector)
    with dcd_train.ProjectorSwap(model.model.multi_modal_projector, same):
        torch.testing.assert_close(logits(), plain)
    other = copy.deepcopy(same)
    with torch.no_grad():
        next(other.parameters()).mul_(-1)
    with dcd_train.ProjectorSwap(model.model.multi_modal_projector, other):
        assert (logits() - plain).abs().max() > 1e-2
    torch.testing.assert_close(logits(), plain)  # the hook is gone


@needs_shipped
def test_training_writes_both_projectors_and_resumes_to_the_same_weights(tmp_path, capsys):
    common = ["--model", SHIPPED, "--batch", "4", "--held-out", "8", "--save-every", "2", "--log-every", "1"]
    dcd_train.main(common + ["--steps", "4", "--work", str(tmp_path / "once"), "--out", str(tmp_path / "once-out")])
    report = json.loads((tmp_path / "once-out" / "dcd.json").read_text())
    assert set(report["held_out_chosen_preferred"]) == {"original", "positive", "negative"}
    # the same run stopped after step 2 (its state saved) and resumed gives the same weights
    states = tmp_path / "twice"
    dcd_train.main(common + ["--steps", "4", "--stop-at", "2", "--work", str(states), "--out", str(tmp_path / "half")])
    for side in dcd_train.SIDES:
        state = torch.load(states / f"{side}.pt", weights_only=True)
        assert state["step"] == 2
    capsys.readouterr()
    dcd_train.main(common + ["--steps", "4", "--work", str(states), "--out", str(tmp_path / "twice-out")])
    assert "resuming positive from step 2" in capsys.readouterr().err
    for side in dcd_train.SIDES:
        once, twice = (load_file(tmp_path / d / f"{side}.safetensors") for d in ("once-out", "twice-out"))
        assert once.keys() == twice.keys() and all(v.dtype == torch.float16 for v in once.values())
        for key in once:
            torch.testing.assert_close(once[key], twice[key])
