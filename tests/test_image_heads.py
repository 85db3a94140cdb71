"""DeCoRe's and MaskCD's masked heads (decoding/attention.py ``HeadMask``, decoding/image_heads.py) against the
mechanisms they stand for, written out on a tiny model's own modules: DeCoRe's release zeroes the heads' queries
(flash attention: uniform attention over the visible keys), from the last prompt token on; MaskCD as described zeroes
the heads' attention, so their slice of the input to ``o_proj`` is 0. Then the rule's test vector, the head list's
refusals, and ``python -m eval.image_heads`` end to end on a tiny model with a COCO-format fixture."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

from decoding import compare, rules
from decoding.attention import HeadMask, LabControl, lab_attention
from decoding.detector import model_source
from decoding.engine import Combination, Engine, Side
from decoding.image_heads import FILE, HeadListMissing, head_folder, masked_heads, save_head_list
from demo.allow_list import EMBEDDED_MODEL_DIR
from eval import image_heads
from models import build_tiny, load_model

from test_coco_training import coco_flags, write_coco

QUESTION = "What color is the square?"
HEADS = ((0, 1), (1, 2))  # query heads 1 and 2 of the tiny models' 4 share key/value heads 0 and 1 (GQA)


def _capturing(seen: list):
    def combine(L, t):
        seen.append({k: v.clone() for k, v in L.items()})
        return Combination(L["original"])
    return combine


def _engine_masked_logits(adapter, row, edit: HeadMask, steps: int = 2) -> list[torch.Tensor]:
    seen = []
    side = Side("m", "m", {"original": 0, "masked": 1}, combine=_capturing(seen), attention_edits={"masked": edit})
    list(Engine(adapter).run([row, row], [side], max_new_tokens=steps, ignore_eos=True))
    return [step["masked"][0] for step in seen], [int(step["original"][0].argmax()) for step in seen]


def _hooked(adapter, heads, zero_queries: bool, last_only: bool):
    """The release's mechanism on the model's own modules: the heads' query slices zeroed at the output of q_proj
    (DeCoRe), or their attention output zeroed at the input of o_proj (MaskCD as described)."""
    layers = adapter.model.get_decoder().layers
    dim = layers[0].self_attn.head_dim
    hooks = []
    for layer, head in heads:
        attn = layers[layer].self_attn
        span = slice(head * dim, (head + 1) * dim)

        def zero(t, span=span):
            t = t.clone()
            t[:, -1:, span] = 0.0
            if not last_only:  # every position of the prompt too
                t[:, :, span] = 0.0
            return t

        if zero_queries:
            hooks.append(attn.q_proj.register_forward_hook(lambda m, i, o, zero=zero: zero(o)))
        else:
            hooks.append(attn.o_proj.register_forward_pre_hook(lambda m, args, zero=zero: (zero(args[0]),)))
    return hooks


def _reference_logits(adapter, row, heads, tokens: list[int], zero_queries: bool, last_only: bool):
    """The masked row's logits at each step with the hooks on, under sdpa: the prompt, then each token fed."""
    model = adapter.model
    hooks = _hooked(adapter, heads, zero_queries, last_only)
    out_logits = []
    try:
        inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids),
                  **row.token_kwargs, **row.vision_kwargs}
        with torch.inference_mode():
            out = model(**inputs, use_cache=True, return_dict=True)
            out_logits.append(out.logits[0, -1].float())
            cache, mask = out.cache, inputs["attention_mask"]
            for token in tokens:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                out = model(input_ids=torch.tensor([[token]]), attention_mask=mask, cache=cache,
                            use_cache=True, return_dict=True)
                out_logits.append(out.logits[0, -1].float())
    finally:
        for hook in hooks:
            hook.remove()
    return out_logits


@pytest.mark.parametrize("uniform, last_only", [(True, True), (True, False), (False, False)])
def test_the_masked_row_is_the_release_s_zeroed_queries_or_the_zeroed_heads(tiny_model, image, uniform, last_only):
    adapter = tiny_model("llava")
    row = adapter.build_row(QUESTION, image)
    masked, chosen = _engine_masked_logits(adapter, row, HeadMask(HEADS, uniform=uniform, last_query_only=last_only))
    reference = _reference_logits(adapter, row, HEADS, chosen[:1], zero_queries=uniform, last_only=last_only)
    for ours, theirs in zip(masked, reference, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    plain = _reference_logits(adapter, row, (), chosen[:1], zero_queries=uniform, last_only=last_only)
    assert not torch.allclose(masked[0], plain[0], atol=1e-3)  # the masking changes the logits


def test_decore_rule_matches_the_spec_vector():
    l, m = torch.tensor([[1.0, 0.8, 0.7, 0.6]]), torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    assert abs(float(rules.decore_weight(l)) - 1.374964) < 1e-5
    torch.testing.assert_close(rules.decore(l, m), torch.tensor([[-2.315983, -0.041049, -0.278545, -0.516042]]))
    raw = (1 + 1.374964) * l - 1.374964 * m  # the raw-logit form differs by a constant: the same distribution
    torch.testing.assert_close(torch.tensor([[-0.374964, 1.899971, 1.662475, 1.424978]]), raw)
    torch.testing.assert_close(rules.decore(l, m).softmax(-1), raw.softmax(-1))
    assert int(rules.decore(l, m).argmax()) == 1 and int(l.argmax()) == 0
    assert float(rules.decore_weight(l, alpha_cap=0.5)) == 0.5
    with pytest.raises(ValueError, match="alpha"):
        rules.decore(l, m, alpha=-1.0)


def test_the_registry_runs_decore_and_maskcd_with_their_weights(embedded_model, image):
    decore = compare(embedded_model, image, QUESTION, "decore", max_new_tokens=3, ignore_eos=True)
    weights = [t.scalars["contrast_weight"] for t in decore.method_side.tokens]
    assert all(w > 0 for w in weights) and len(set(weights)) > 1  # α_t: each step's own entropy
    with open(os.path.join(EMBEDDED_MODEL_DIR, "image_heads", FILE)) as f:
        shipped = json.load(f)
    assert shipped["chosen"] == 1 == round(50 * 16 / 1024)  # DeCoRe's share of the embedded model's 16 heads
    assert decore.branches["masked_heads"] == shipped["chosen_heads"] and decore.branches["masking"] == "uniform"
    assert decore.branches["head_list"] == "shapes-llava/image_heads"  # no server path
    fixed = compare(embedded_model, image, QUESTION, "maskcd", max_new_tokens=3, ignore_eos=True, heads=3)
    assert {t.scalars["contrast_weight"] for t in fixed.method_side.tokens} == {1.0}
    assert fixed.branches["masked_heads"] == shipped["ranked"][:3] and fixed.branches["masking"] == "zeroed"


@pytest.mark.parametrize("method, params", [("decore", {"entropy": 0, "alpha": 1e300}),
                                            ("decore", {"alpha_cap": 1e300}), ("maskcd", {"alpha": 1e300})])
def test_a_weight_past_its_bound_is_refused_naming_it_and_the_bound_decodes(embedded_model, image, method, params):
    """Unbounded as released, but 1e300 overflowed float32 in the rule (a RuntimeError, not a refusal): refused up
    front; 1000 decodes."""
    name = [key for key in params if key != "entropy"][0]
    with pytest.raises(ValueError, match=f"{name} must be <= 1000"):
        compare(embedded_model, image, QUESTION, method, max_new_tokens=1, **params)
    result = compare(embedded_model, image, QUESTION, method, max_new_tokens=2, ignore_eos=True,
                     **{**params, name: 1000.0})
    assert all(0.0 < t.final.prob <= 1.0 for t in result.method_side.tokens)


def test_a_model_without_a_head_list_is_refused_naming_the_command(tmp_path, image):
    adapter = load_model(build_tiny("llava", tmp_path / "bare", seed=2))
    with pytest.raises(HeadListMissing, match="python -m eval.image_heads"):
        compare(adapter, image, QUESTION, "decore", max_new_tokens=1)
    folder = head_folder(model_source(adapter))
    save_head_list(folder, torch.rand(5, 4), 1)  # a list made for a deeper model
    with pytest.raises(HeadListMissing, match="does not have"):
        masked_heads(adapter.model, model_source(adapter))
    # DeCoRe's own format ("layer-head" -> scores, ranked by their mean) is read too.
    with open(os.path.join(folder, FILE), "w") as f:
        json.dump({"0-3": [0.1, 0.3], "1-1": [0.5, 0.5], "0-0": [0.0]}, f)
    assert masked_heads(adapter.model, model_source(adapter), 2) == ((1, 1), (0, 3))
    with pytest.raises(ValueError, match="heads is 9"):
        masked_heads(adapter.model, model_source(adapter), 9)
    for broken in ("{not json", '{"scores": {"0-x": 1.0}}', "[1, 2]"):
        with open(os.path.join(folder, FILE), "w") as f:
            f.write(broken)
        with pytest.raises(HeadListMissing, match="could not be read"):
            masked_heads(adapter.model, model_source(adapter))


def test_the_command_ranks_a_tiny_model_s_heads_on_a_coco_fixture(tmp_path):
    paths = write_coco(tmp_path / "coco")
    model = build_tiny("qwen2_vl", tmp_path / "qwen2_vl", seed=1)
    argv = ["--model", model, "--work", str(tmp_path / "work"), "--max-new-tokens", "4", "--top", "3",
            "--coco-count", "3", *coco_flags(paths)]
    assert image_heads.main(argv) == 0
    with open(os.path.join(model, "image_heads", FILE)) as f:
        saved = json.load(f)
    assert saved["num_layers"] == 2 and saved["num_heads"] == 4 and len(saved["scores"]) == 8
    assert saved["chosen"] == 3 and saved["seed"] == 0 and "--coco-images" in saved["command"]
    shares = [saved["scores"][name] for name in saved["ranked"]]
    assert shares == sorted(shares, reverse=True) and all(0.0 <= s <= 1.0 for s in shares) and shares[0] > 0
    assert saved["data"]["images"] == 3 and saved["generated_tokens"] > 0
    adapter = load_model(model)
    assert [f"{a}-{b}" for a, b in masked_heads(adapter.model, model_source(adapter))] == saved["ranked"][:3]
    assert image_heads.main(argv) == 0  # resumed from --work: the same list
    with open(os.path.join(model, "image_heads", FILE)) as f:
        assert json.load(f)["scores"] == saved["scores"]


@pytest.mark.parametrize("padded", [False, True])
def test_a_uniform_head_spreads_its_weights_over_the_keys_each_query_may_see(padded):
    """The attention function itself: one left-padded row (key 0 a pad) or none, no mask at all in the unpadded
    forward (the causal fallback); head 1 masked at every query, head 0 untouched."""
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=1, training=False)
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 2, 4, 8, generator=generator) for _ in range(3))
    mask = None
    if padded:
        mask = torch.zeros(1, 1, 4, 4).masked_fill(torch.ones(4, 4, dtype=torch.bool).triu(1), -1e9)
        mask[..., 0] = -1e9
    control = LabControl({0: (torch.empty(0, dtype=torch.long), HeadMask(((0, 1),), last_query_only=False))})
    _, weights = lab_attention(module, query, key, value, mask, lab_control=control, output_attentions=True)
    visible = torch.ones(4, 4).tril()
    if padded:
        visible[:, 0] = 0.0
    uniform = visible / visible.sum(-1, keepdim=True).clamp_min(1)
    torch.testing.assert_close(weights[0, 1, 1:], uniform[1:])  # query 0 of the padded row sees no key at all
    assert not torch.allclose(weights[0, 0, 1:], uniform[1:], atol=1e-2)
