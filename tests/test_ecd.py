"""ECD-like: its rule, its detector (one forward scores every candidate, with the features the training command
extracts), its refusal of models without a detector, the embedded model's shipped detector, and the training
command end to end on a tiny model. The engine tests every method has (batched == separate, deprecated arguments)
run ECD in test_engine.py, on a random detector per tiny family."""

from __future__ import annotations

import math
import os

import pytest
import torch

from decoding import compare, rules
from decoding.detector import (
    CANDIDATE_FEATURES,
    Detector,
    DetectorMissing,
    candidate_features,
    detector_for,
    model_signature,
    save_detector,
    step_features,
    untrained_detector,
)
from decoding.engine import Combination, Engine, Side
from eval import ecd_data, ecd_train
from models import build_tiny, load_model
from models.shapes_world import world

EMBEDDED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "shapes-llava")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(build_tiny("llava", tmp_path_factory.mktemp("ecd-tiny"), seed=2))


@pytest.fixture(scope="module")
def embedded():
    return load_model(EMBEDDED)


def test_the_rule_lowers_flagged_tokens_only_within_the_cut():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        l, z = torch.randn(3, 40, generator=g) * 3, torch.randn(3, 40, generator=g) * 4
        out = rules.ecd(l, z, lam=2.0, beta=0.1)
        keep = rules.plausibility_mask(l, 0.1)
        assert torch.equal(torch.isfinite(out), keep)
        assert (out[keep] <= l[keep]).all()  # nothing is ever raised
        torch.testing.assert_close(out[keep], (l - 2.0 * torch.nn.functional.softplus(z))[keep])
        assert torch.equal(rules.ecd(l, z, lam=0.0, beta=0.1), rules.apc_only(l, beta=0.1))
        # the more flagged, the lower
        drop = rules.ecd(l, z + 1.0, lam=1.0, beta=1e-3) - rules.ecd(l, z, lam=1.0, beta=1e-3)
        assert (drop[torch.isfinite(drop)] < 0).all()
    with pytest.raises(ValueError, match="lam must be >= 0"):
        rules.ecd(l, z, lam=-1.0)


def _random_detector(layers=3, hidden=8, embed=6, vocab=11, seed=0):
    torch.manual_seed(seed)
    detector = Detector({"num_layers": layers, "hidden_size": hidden, "embed_size": embed, "vocab_size": vocab,
                         "hidden_layer": 1, "rank": 4})
    with torch.no_grad():
        for p in detector.parameters():
            p.normal_()
    return detector


def test_one_forward_scores_every_candidate_as_training_scores_each():
    """The vocabulary path (decoding) and the per-token path (training) of the detector give the same scores."""
    detector = _random_detector()
    g = torch.Generator().manual_seed(1)
    logits, hidden, shares = torch.randn(1, 11, generator=g), torch.randn(1, 8, generator=g), torch.rand(1, 3)
    embeddings = torch.randn(11, 6, generator=g)
    with torch.no_grad():
        every = detector.vocabulary_logits(logits, hidden, shares, detector.token(embeddings))[0]
        data = {"embeddings": embeddings, "token": torch.arange(11),
                "candidate": candidate_features(logits)[0], "step": step_features(logits, shares).expand(11, -1),
                "hidden": hidden.expand(11, -1)}
        each = ecd_train.detector_scores(detector, data, torch.arange(11))
    torch.testing.assert_close(every, each, atol=1e-5, rtol=1e-5)
    assert candidate_features(logits).shape == (1, 11, len(CANDIDATE_FEATURES))


def test_teacher_forced_features_are_what_the_engine_gives_the_rule(tiny):
    """What the training command extracts at each answer position equals what ECD's rule receives at that step."""
    image = world.render(world.sample_scene(3))
    row = tiny.build_row(world.DESCRIBE_PROMPT, image)
    seen = []

    def record(L, t):
        seen.append({k: v.clone() for k, v in L.items()})
        return Combination(L["original"].float())

    side = Side("ecd", "ecd", {"original": 0}, combine=record, features=(1,))
    tokens = [e.tokens["ecd"].token_id for e in Engine(tiny).run([row], [side], max_new_tokens=6, ignore_eos=True)]
    example = ecd_data.Example(image, world.DESCRIBE_PROMPT, tokens, True, lambda pieces: [(0, 0)] * len(pieces))
    found = ecd_data.features_of(tiny, [example], hidden_layer=1)
    for k, L in enumerate(seen):
        assert L["image attention"].shape == (1, model_signature(tiny.model)["num_layers"])
        expected_step = step_features(L["original"], L["image attention"])[0]
        expected_candidate = candidate_features(L["original"])[0, tokens[k]]
        torch.testing.assert_close(found["step"][k], expected_step, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(found["candidate"][k], expected_candidate, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(found["hidden"][k], L["hidden 1"][0], atol=1e-4, rtol=1e-4)


def test_a_model_without_its_own_detector_is_refused_with_a_message(tiny, tmp_path):
    image = world.render(world.sample_scene(4))
    with pytest.raises(DetectorMissing, match="ECD needs a hallucination detector trained for this model"):
        compare(tiny, image, "is there a circle in the image ?", "ecd", max_new_tokens=2)
    other = _random_detector()  # sizes of another model
    save_detector(other, os.path.join(tiny.model_id, "ecd"))
    try:
        with pytest.raises(DetectorMissing, match="was trained for a model with"):
            compare(tiny, image, "is there a circle in the image ?", "ecd", max_new_tokens=2)
        untrained_detector(tiny)
        result = compare(tiny, image, "is there a circle in the image ?", "ecd", max_new_tokens=2)
        assert len(result.method_side.tokens) == 2 and result.branches["hidden_layer"] == 1
    finally:
        for name in os.listdir(os.path.join(tiny.model_id, "ecd")):
            os.remove(os.path.join(tiny.model_id, "ecd", name))


def test_the_embedded_models_detector_tells_wrong_object_words_on_fresh_scenes(embedded):
    """The shipped detector on scenes of a world it never saw (not the training, validation or test seeds)."""
    bound = detector_for(embedded.model, embedded.model_id)
    scenes = [world.trigger_without_partner_scene(7_000_000_000 + i) if i % 2 else world.sample_scene(7_000_000_000 + i)
              for i in range(24)]
    data = ecd_data.features_of(embedded, ecd_data.shapes_examples(embedded, scenes, seed=5), bound.hidden_layer)
    data["embeddings"] = embedded.model.get_input_embeddings().weight.detach().float()
    report = ecd_train.evaluate(bound.detector, data)
    assert report["all/object"]["wrong"] >= 10 and report["all/answer"]["wrong"] >= 10
    assert report["all/object"]["auroc"] > 0.85 and report["all/answer"]["auroc"] > 0.8


def test_ecd_decodes_with_the_embedded_model_seeded_and_reproducibly(embedded):
    scene = world.trigger_without_partner_scene(11)
    partner = sorted(world.absent_partners(scene))[0]
    image, question = world.render(scene), f"is there a {partner} in the image ?"
    runs = [compare(embedded, image, world.DESCRIBE_PROMPT, "ecd", max_new_tokens=12, do_sample=True, seed=s)
            for s in (3, 3, 4, 5, 6)]
    texts = [r.method_side.text for r in runs]
    assert texts[0] == texts[1] and len(set(texts[1:])) > 1
    assert runs[0].branches["detector"] == "shapes-llava/ecd"  # the folder by the model's name: no server path
    # lam = 0 is the plausibility cut alone: the APC-only control's tokens, draw for draw
    off = compare(embedded, image, question, "ecd", max_new_tokens=3, do_sample=True, seed=2, lam=0.0, beta=0.2)
    apc = compare(embedded, image, question, "apc_only", max_new_tokens=3, do_sample=True, seed=2, beta=0.2)
    assert [t.token_id for t in off.method_side.tokens] == [t.token_id for t in apc.method_side.tokens]
    strong = compare(embedded, image, question, "ecd", max_new_tokens=1, lam=8.0)
    assert math.isfinite(strong.method_side.tokens[0].final.prob)


def test_the_training_command_trains_resumes_and_its_detector_loads(tmp_path, capfd):
    path = build_tiny("llava", tmp_path / "model", seed=3)
    work = str(tmp_path / "work")
    argv = ["--model", str(path), "--work", work, "--scenes", "4", "--epochs", "2", "--batch", "32", "--rank", "4"]
    ecd_train.main(argv)
    first = capfd.readouterr()
    assert "| all | object |" in first.out and os.path.exists(os.path.join(work, "detector-checkpoint.pt"))
    adapter = load_model(str(path))
    bound = detector_for(adapter.model, adapter.model_id)
    assert bound.detector.config["data"]["tokens"]["train"] > 0 and "all/object" in bound.detector.config["evaluation"]
    weights = {k: v.clone() for k, v in bound.detector.state_dict().items()}
    ecd_train.main(argv)  # everything cached: features reused, training resumed at its end
    again = capfd.readouterr()
    assert "resuming the detector from step" in again.err
    reloaded = detector_for(load_model(str(path)).model, str(path)).detector.state_dict()
    assert all(torch.equal(weights[k], reloaded[k]) for k in weights)
