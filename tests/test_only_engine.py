"""ONLY's side path through the engine: its "textually enhanced" logits against the release's lines written out on a
tiny model's own outputs, batched (left-padded beside a longer prompt) equal to alone, and the family it refuses."""

from __future__ import annotations

import pytest
import torch

from decoding import prepare_comparison
from decoding.attention import OneLayerEnhancement
from decoding.engine import Combination, Engine, Side

from test_only_rules import _release_edit

QUESTION = "What color is the square?"


def _capturing(seen: list):
    def combine(L, t):
        seen.append({k: v.clone() for k, v in L.items()})
        return Combination(L["original"])
    return combine


def _release_enhanced(adapter, row) -> torch.Tensor:
    """The release's enhanced logits for the row's last position, from the model's own eager outputs: layer 0's
    weights edited by the release's index arithmetic (image keys one block, text the keys before it but key 0 and
    those after it), ``o_proj(edited · V)``, then modeling_llama.py L656-662, L993 and llava_llama.py L116."""
    model, decoder = adapter.model, adapter.model.get_decoder()
    attn = decoder.layers[0].self_attn
    kept = {}
    hook = attn.v_proj.register_forward_hook(lambda m, i, o: kept.setdefault("v", o))
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids), **row.token_kwargs,
              **row.vision_kwargs}
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = model(**inputs, output_attentions=True, output_hidden_states=True, return_dict=True)
    finally:
        hook.remove()
        model.set_attn_implementation("sdpa")
    positions = row.image_token_positions
    start, end = int(positions[0]), int(positions[-1]) + 1
    assert end - start == len(positions)  # one block, as the release's layout
    weights = out.attentions[0][:, :, -1:, :].float()
    edited = _release_edit(weights, start, end)[0, :, 0]  # (heads, keys)
    heads = edited.shape[0]
    values = kept["v"][0].view(row.length, -1, attn.head_dim).transpose(0, 1)  # (kv heads, keys, dim)
    values = values.repeat_interleave(heads // values.shape[0], dim=0)
    cd = attn.o_proj(torch.bmm(edited[:, None, :], values).reshape(1, -1))
    last = decoder.layers[-1]
    with torch.inference_mode():
        residual = out.hidden_states[-2][:, -1]  # the last layer's input
        h = 0.2 * residual + last.input_layernorm(cd)
        h = h + last.mlp(last.post_attention_layernorm(h))
        h = decoder.norm(h) + 0.5 * out.hidden_states[-1][:, -1]
        return model.get_output_embeddings()(h)[0].float()


def test_the_enhanced_logits_are_the_release_s_side_path(tiny_model, image):
    adapter = tiny_model("llava")
    row = adapter.build_row(QUESTION, image)
    seen = []
    side = Side("only", "only", {"original": 0}, combine=_capturing(seen),
                attention_edits={"original": OneLayerEnhancement()})
    list(Engine(adapter).run([row], [side], max_new_tokens=1))
    torch.testing.assert_close(seen[0]["enhanced"][0], _release_enhanced(adapter, row), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(seen[0]["enhanced"], seen[0]["original"], atol=1e-2)


def test_batched_beside_a_longer_prompt_equals_alone(tiny_model, image):
    """Left padding: the row's first real token, not the batch's key 0, is the one left out of the text keys."""
    adapter = tiny_model("llava")
    rows = [adapter.build_row("Describe every shape in the picture, its color and where it is.", image),
            adapter.build_row(QUESTION, image)]
    assert rows[0].length > rows[1].length
    seen = {}
    for batched in (True, False):
        seen[batched] = []
        sides = [Side("baseline", "baseline", {"original": 0}),
                 Side("only", "only", {"original": 1}, combine=_capturing(seen[batched]),
                      attention_edits={"original": OneLayerEnhancement()})]
        list(Engine(adapter).run(rows, sides, max_new_tokens=8, ignore_eos=True, batched=batched))
    assert len(seen[True]) == len(seen[False]) == 8
    for a, b in zip(seen[True], seen[False], strict=True):
        torch.testing.assert_close(a["enhanced"], b["enhanced"], atol=1e-4, rtol=0)
        assert a["removed heads"].item() == b["removed heads"].item()


def test_the_record_reports_its_branch_and_distance_at_every_step(tiny_model, image):
    adapter = tiny_model("llava")
    prepared = prepare_comparison(adapter, image, QUESTION, "only", seed=0, attention_layers=None, gamma=2.0)
    events = list(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=5, ignore_eos=True))
    for event in events:
        scalars = event.tokens["method"].scalars
        assert 0.0 <= scalars["enhancement_distance"] < 2.0 and scalars["collaborative"] == 1.0
        heads = adapter.model.config.get_text_config().num_attention_heads
        assert 0 <= scalars["removed_heads"] < heads


def test_a_family_whose_layers_cannot_carry_it_is_refused_by_name(tiny_model, image):
    adapter = tiny_model("gemma3")
    with pytest.raises(ValueError, match="ONLY cannot run on the gemma3 family"):
        prepare_comparison(adapter, image, QUESTION, "only", attention_layers=None)


def test_a_later_first_step_gets_enhanced_logits_from_that_step_on_only(tiny_model, image):
    """An edit from forward 2 on, batched beside one from the prefill on (same prompt, same tokens): its side reads
    no "enhanced" logits before step 2, then the same as the other's. The gate once read the forward counter after
    it had moved on, handing step 1 the NaN its row got while not yet edited."""
    adapter = tiny_model("llava")
    row = adapter.build_row(QUESTION, image)
    seen = {"early": [], "late": []}
    sides = [Side(name, name, {"original": i}, combine=_capturing(seen[name]),
                  attention_edits={"original": OneLayerEnhancement(first_step=first)})
             for i, (name, first) in enumerate((("early", 0), ("late", 2)))]
    list(Engine(adapter).run([row, row], sides, max_new_tokens=4, ignore_eos=True))
    assert [("enhanced" in L) for L in seen["late"]] == [False, False, True, True]
    for early, late in zip(seen["early"][2:], seen["late"][2:], strict=True):
        assert torch.isfinite(late["enhanced"]).all()
        torch.testing.assert_close(late["enhanced"], early["enhanced"], atol=1e-5, rtol=0)
