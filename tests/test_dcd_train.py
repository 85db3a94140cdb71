"""DCD's projector training (eval/dcd_train.py): the preference pairs are right against wrong by the world's own
grading, the projector swap acts only where it is asked to, training is seeded and resumable, any family's answer
NLL (the adapter's prompt) equals the shapes model's exact one, and the α sweep records its graded errors."""

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


@needs_shipped
def test_the_adapters_answer_nll_is_the_shapes_models_exact_one():
    from models import load_model

    adapter = load_model(SHIPPED)
    pairs = dcd_train.shapes_pairs(seed=0).held_out(6)
    images, questions = [p[0] for p in pairs], [p[1] for p in pairs]
    exact = dcd_train.nll_for(adapter, shapes=True, max_rows=None)
    assert exact.__qualname__.startswith("encoder_nll")  # the fast path, checked equal to the processor's tensors
    with torch.no_grad():
        for side in (2, 3):  # chosen, rejected
            answers = [p[side] for p in pairs]
            torch.testing.assert_close(dcd_train.adapter_nll(adapter, max_rows=2)(images, questions, answers),
                                       exact(images, questions, answers), atol=1e-4, rtol=1e-4)


def test_the_sweep_records_graded_errors_per_alpha_beside_the_copies(tmp_path, capsys):
    from decoding.dcd import untrained_projectors
    from models import build_tiny, load_model

    path = build_tiny("llava", tmp_path / "tiny", seed=1)
    folder = untrained_projectors(load_model(path))
    before = json.loads((tmp_path / "tiny" / "dcd" / "dcd.json").read_text())
    assert dcd_train.main(["--model", path, "--sweep", "0,2", "--sweep-questions", "3"]) == 0
    assert "| DCD α=2 |" in capsys.readouterr().out
    record = json.loads(open(os.path.join(folder, "dcd.json")).read())
    sweep = record.pop("alpha_sweep")
    assert record == before  # what was there stays
    assert set(sweep["errors"]) == {"baseline", "0", "2"} and sweep["questions"] == 3
    assert sweep["chosen_alpha"] == min((0.0, 2.0), key=lambda a: (sweep["errors"][f"{a:g}"], a))
    # the sweep decodes the copies DCD reads: another --out is refused
    assert dcd_train.main(["--model", path, "--sweep", "0", "--out", str(tmp_path / "x")]) == 2
    assert "drop --out" in capsys.readouterr().err


def test_a_family_without_a_projector_is_refused(tmp_path, capsys):
    from models import build_tiny

    path = build_tiny("qwen2_vl", tmp_path / "qwen", seed=0)
    assert dcd_train.main(["--model", path, "--work", str(tmp_path / "w"), "--steps", "1"]) == 2
    assert "qwen2_vl family has none" in capsys.readouterr().err and not (tmp_path / "qwen" / "dcd").exists()
