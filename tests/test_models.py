"""Tests of models/: tiny real-architecture checkpoints of every family, built, saved and loaded back through
load_model; prompts, image tokens, positions, batching with left padding, pixel views, and the loader's errors."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from models import (
    SUPPORTED_FAMILIES,
    TINY_FAMILIES,
    FamilyAdapter,
    ModelLoadError,
    RowInputs,
    build_tiny,
    choose_dtype,
    load_model,
)
from models.adapters import (
    Gemma3Adapter,
    Idefics3Adapter,
    InstructBlipAdapter,
    InternVLAdapter,
    LlavaAdapter,
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    Qwen2VLAdapter,
    Qwen3VLAdapter,
)
from models.loader import quantization_config

EXPECTED_ADAPTER = {
    "llava": LlavaAdapter,
    "llava_next": LlavaNextAdapter,
    "llava_onevision": LlavaOnevisionAdapter,
    "qwen2_vl": Qwen2VLAdapter,
    "qwen2_5_vl": Qwen2VLAdapter,
    "qwen3_vl": Qwen3VLAdapter,
    "gemma3": Gemma3Adapter,
    "idefics3": Idefics3Adapter,
    "internvl": InternVLAdapter,
    "instructblip": InstructBlipAdapter,
}
# The per-token inputs (besides input_ids) each family's rows carry.
TOKEN_KEYS = {"qwen2_vl": {"mm_token_type_ids"}, "qwen2_5_vl": {"mm_token_type_ids"}, "qwen3_vl": {"mm_token_type_ids"},
              "gemma3": {"token_type_ids"}}
QUESTION = "What is in the image?"
TOL = 1e-4


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: build_tiny(family, root / family) for family in TINY_FAMILIES}


@pytest.fixture(scope="session")
def adapters(tiny_dirs):
    return {family: load_model(path) for family, path in tiny_dirs.items()}


@pytest.fixture(params=TINY_FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def adapter(adapters, family) -> FamilyAdapter:
    return adapters[family]


def noise_image(height=40, width=56, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


QUADRANT_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]  # TL, TR, BL, BR


def quadrant_image(size=64) -> Image.Image:
    a = np.zeros((size, size, 3), dtype=np.uint8)
    h = size // 2
    a[:h, :h], a[:h, h:], a[h:, :h], a[h:, h:] = QUADRANT_COLOURS
    return Image.fromarray(a)


def forward(adapter, input_ids, position_ids, attention_mask=None, **kwargs):
    """The model's logits, through the adapter's forward (what the engine calls)."""
    with torch.no_grad():
        return adapter.forward(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                               **kwargs).logits


def row_logits(adapter, row: RowInputs) -> torch.Tensor:
    return forward(adapter, row.input_ids, row.position_ids, **row.token_kwargs, **row.vision_kwargs)


def left_pad_batch(adapter, rows: list[RowInputs], pos_pad: int = 1):
    """Exactly what the engine does: left-pad ids, mask, positions (M-RoPE too) and per-token kwargs."""
    length = max(r.length for r in rows)
    ids, mask, pos, tokens = [], [], [], {}
    for r in rows:
        pad = length - r.length
        ids.append(torch.cat([torch.full((1, pad), adapter.pad_token_id, dtype=torch.long), r.input_ids], -1))
        mask.append(torch.cat([torch.zeros(1, pad, dtype=torch.long), torch.ones(1, r.length, dtype=torch.long)], -1))
        p = r.position_ids
        pos.append(torch.cat([torch.full((*p.shape[:-1], pad), pos_pad, dtype=p.dtype), p], -1))
        for k, v in r.token_kwargs.items():
            tokens.setdefault(k, []).append(torch.cat([torch.zeros(1, pad, dtype=v.dtype), v], -1))
    position_ids = torch.cat(pos, dim=-2)  # (B, L) or (3, B, L)
    vision = adapter.batch_vision_kwargs([r.vision_kwargs for r in rows if r.has_image])
    return dict(input_ids=torch.cat(ids), attention_mask=torch.cat(mask), position_ids=position_ids,
                **{k: torch.cat(v) for k, v in tokens.items()}, **vision)


# ---- building and loading -----------------------------------------------------------------------------------------

def test_every_family_builds_and_reloads_with_its_adapter(adapters, tiny_dirs):
    assert set(adapters) == set(TINY_FAMILIES) == set(SUPPORTED_FAMILIES)
    for family, adapter in adapters.items():
        assert type(adapter) is EXPECTED_ADAPTER[family] or isinstance(adapter, EXPECTED_ADAPTER[family])
        assert adapter.family == family
        assert adapter.model.config.model_type == family
        assert not adapter.model.training
        assert adapter.model_id == str(tiny_dirs[family])
        assert adapter.model.dtype == torch.float32 and adapter.device.type == "cpu"
        assert adapter.model.get_input_embeddings().num_embeddings >= len(adapter.tokenizer)
        assert adapter.model.generation_config.pad_token_id is not None
        eos = adapter.eos_token_ids
        assert eos and all(0 <= e < len(adapter.tokenizer) for e in eos)
        assert adapter.token_piece(eos[0]) == adapter.tokenizer.eos_token
        files = set(os.listdir(tiny_dirs[family]))
        assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json",
                "generation_config.json"} <= files
        # InstructBLIP has no chat template (its processor takes none); its Q-Former's tokenizer is saved beside
        assert ("chat_template.jinja" in files) == (family != "instructblip")


def test_build_is_seeded(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny("llava", tmp_path / "a", seed=3) + "/model.safetensors")
    b = load_file(build_tiny("llava", tmp_path / "b", seed=3) + "/model.safetensors")
    c = load_file(build_tiny("llava", tmp_path / "c", seed=4) + "/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_build_is_reproducible_file_for_file(tmp_path):
    # InstructBLIP: the most tokenizers built on the spot (its Q-Former's WordPiece besides the language model's BPE)
    folders = [build_tiny("instructblip", tmp_path / name, seed=3) for name in ("a", "b")]
    files = [sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder)
                    for name in names) for folder in folders]
    assert files[0] == files[1] and "qformer_tokenizer/tokenizer.json" in files[0]
    for name in files[0]:
        with open(os.path.join(folders[0], name), "rb") as a, open(os.path.join(folders[1], name), "rb") as b:
            assert a.read() == b.read(), name


def test_build_tiny_rejects_unknown_family(tmp_path):
    with pytest.raises(ValueError, match="llava"):
        build_tiny("blip2", tmp_path)


# ---- rows -----------------------------------------------------------------------------------------------------------

def test_build_row_with_image(adapter, family):
    row = adapter.build_row(QUESTION, noise_image())
    assert row.has_image and row.input_ids.shape == (1, row.length)
    expected_pos = (3, 1, row.length) if family.startswith("qwen") else (1, row.length)
    assert tuple(row.position_ids.shape) == expected_pos
    if family == "instructblip":  # the Q-Former's queries: no grid over the picture
        assert row.image_grid is None
        assert row.image_token_positions.tolist() == list(range(adapter.model.config.num_query_tokens))
    else:
        rows, cols = row.image_grid
        assert row.image_token_positions.numel() == rows * cols > 1
    assert bool((row.input_ids[0, row.image_token_positions] == adapter.image_token_id).all())
    assert bool((row.image_token_positions.diff() == 1).all())  # one contiguous block, row-major
    text = adapter.tokenizer.decode(row.input_ids[0])
    assert QUESTION in text
    for key in ("pixel_values",) + (("image_sizes",) if "next" in family or "onevision" in family else ()):
        assert key in row.vision_kwargs
    if family == "instructblip":
        assert adapter.qformer_tokenizer.decode(row.vision_kwargs["qformer_input_ids"][0]) == (
            "[CLS] " + QUESTION.lower() + " [SEP]")
    assert set(row.token_kwargs) == TOKEN_KEYS.get(family, set())
    for types in row.token_kwargs.values():  # 1 exactly at the image tokens
        assert types.shape == row.input_ids.shape
        assert torch.equal(types[0].nonzero()[:, 0], row.image_token_positions)
    if family.startswith("qwen"):
        assert "image_grid_thw" in row.vision_kwargs


def test_image_token_grids(adapters):
    image = noise_image(40, 56)
    assert adapters["llava"].build_row(QUESTION, image).image_grid == (4, 4)
    for family in ("llava_next", "llava_onevision"):
        row = adapters[family].build_row(QUESTION, image)
        assert row.image_grid == (4, 4)
        all_image = adapters[family].image_token_indices(row.input_ids)
        assert all_image.numel() > 16  # base view + the unpadded high-resolution canvas (+ newlines)
        assert torch.equal(row.image_token_positions, all_image[:16])  # the base view comes first
    # Idefics3: 40 x 56 -> longest edge 64 -> a 64 x 64 canvas of 2 x 2 tiles + the global view, 16 tokens each
    row = adapters["idefics3"].build_row(QUESTION, image)
    assert row.vision_kwargs["pixel_values"].shape == (1, 5, 3, 32, 32) and row.image_grid == (4, 4)
    all_image = adapters["idefics3"].image_token_indices(row.input_ids)
    assert all_image.numel() == 5 * 16 and torch.equal(row.image_token_positions, all_image[-16:])  # global: last
    for size, tiles in (((20, 60), (1, 2)), ((60, 20), (2, 1)), ((64, 64), (2, 2))):
        kw = adapters["idefics3"].build_row(QUESTION, noise_image(*size)).vision_kwargs
        assert adapters["idefics3"].canvas_tiles(kw) == tiles
    # InternVL: 40 x 56 -> the 2 x 2 grid (nearest aspect, up to 4 tiles) + a thumbnail; 32 x 32 -> one tile alone
    row = adapters["internvl"].build_row(QUESTION, image)
    assert row.vision_kwargs["pixel_values"].shape == (5, 3, 32, 32) and row.image_grid == (4, 4)
    all_image = adapters["internvl"].image_token_indices(row.input_ids)
    assert all_image.numel() == 5 * 16 and torch.equal(row.image_token_positions, all_image[-16:])  # thumbnail last
    for size, tiles in (((20, 60), (1, 3)), ((60, 20), (3, 1)), ((32, 32), (0, 0))):
        kw = adapters["internvl"].build_row(QUESTION, noise_image(*size)).vision_kwargs
        assert adapters["internvl"].canvas_tiles(kw) == tiles
    assert len(adapters["internvl"].pixel_views(kw)) == 1
    assert adapters["internvl"].prompt_text("Hi?", with_image=True) == (
        "<|im_start|>user\n<IMG_CONTEXT>\nHi?<|im_end|>\n<|im_start|>assistant\n")
    for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        row = adapters[family].build_row(QUESTION, image)
        # 40 x 56 -> smart_resize to 32 x 64 px -> 4 x 8 patches of 8 px -> 2 x 4 merged tokens
        assert row.vision_kwargs["image_grid_thw"].tolist() == [[1, 4, 8]]
        assert row.image_grid == (2, 4)


def test_build_row_text_only_with_system_and_context(adapter, family):
    row = adapter.build_row(QUESTION, None, system="Answer briefly.", context="The picture shows a kitchen.")
    assert not row.has_image and row.vision_kwargs == {}
    assert row.image_token_positions.numel() == 0 and row.image_grid is None
    assert not bool((row.input_ids == adapter.image_token_id).any())
    text = adapter.tokenizer.decode(row.input_ids[0])
    assert "Answer briefly." in text
    assert "The picture shows a kitchen.\n\n" + QUESTION in text
    assert text.index("Answer briefly.") < text.index("The picture shows a kitchen.") < text.index(QUESTION)
    if family.startswith("qwen"):
        assert row.position_ids.shape == (3, 1, row.length)
        assert torch.equal(row.position_ids, torch.arange(row.length).expand(3, 1, -1))
        assert int(row.token_kwargs["mm_token_type_ids"].sum()) == 0
    else:
        assert torch.equal(row.position_ids, torch.arange(row.length)[None])


def test_chat_template_style(adapters):
    llava = adapters["llava"].tokenizer.decode(adapters["llava"].build_row("Hi?", noise_image()).input_ids[0])
    assert llava.startswith("<s>USER: <image>") and llava.endswith("\nHi? ASSISTANT:")
    with_system = adapters["llava"].prompt_text("Hi?", with_image=False, system="Be nice.")
    assert with_system == "Be nice. USER: Hi? ASSISTANT:"
    qwen = adapters["qwen2_vl"].prompt_text("Hi?", with_image=True)
    assert qwen == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Hi?<|im_end|>\n<|im_start|>assistant\n")
    qwen3 = adapters["qwen3_vl"].prompt_text("Hi?", with_image=True)  # no default system turn
    assert qwen3 == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi?<|im_end|>\n"
                     "<|im_start|>assistant\n")
    gemma = adapters["gemma3"].prompt_text("Hi?", with_image=True, system="Be nice.")
    assert gemma == "<bos><start_of_turn>user\nBe nice.\n\n<start_of_image>Hi?<end_of_turn>\n<start_of_turn>model\n"
    row = adapters["gemma3"].build_row("Hi?", noise_image())
    assert int((row.input_ids == adapters["gemma3"].tokenizer.bos_token_id).sum()) == 1  # the template's own <bos>
    assert int(row.input_ids[0, 0]) == adapters["gemma3"].tokenizer.bos_token_id
    onevision = adapters["llava_onevision"].prompt_text("Hi?", with_image=True)
    assert onevision == "<|im_start|>user\n<image>\nHi?<|im_end|>\n<|im_start|>assistant\n"  # llava-hf's template


def test_forward_on_row_gives_logits(adapter):
    vocab = adapter.model.config.get_text_config().vocab_size
    for image in (noise_image(), None):
        row = adapter.build_row(QUESTION, image)
        logits = row_logits(adapter, row)
        assert logits.shape == (1, row.length, vocab)
        assert torch.isfinite(logits).all()


def test_the_image_reaches_the_language_model(adapter):
    """Two pictures give two answers' logits (a random init that zeroes the image projection would not)."""
    a = row_logits(adapter, adapter.build_row(QUESTION, noise_image(seed=1)))[0, -1]
    b = row_logits(adapter, adapter.build_row(QUESTION, noise_image(seed=2)))[0, -1]
    assert (a - b).abs().max() > 1e-3


def test_qwen_positions_are_the_models_own(adapters):
    for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        adapter = adapters[family]
        row = adapter.build_row(QUESTION, noise_image())
        assert int(row.position_ids.max()) < row.length - 1  # M-RoPE: the image block is compressed
        ours = row_logits(adapter, row)
        adapter.model.model.rope_deltas = None
        theirs = forward(adapter, row.input_ids, None, **row.token_kwargs, **row.vision_kwargs)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_greedy_generate(adapter):
    row = adapter.build_row(QUESTION, noise_image())
    inputs = dict(input_ids=row.input_ids, attention_mask=torch.ones_like(row.input_ids), **row.token_kwargs,
                  **row.vision_kwargs)
    with torch.no_grad():
        out = adapter.model.generate(**inputs, do_sample=False, max_new_tokens=8)
    new = out[0, row.length:]
    assert 1 <= new.numel() <= 8
    assert int(new[0]) == int(row_logits(adapter, row)[0, -1].argmax())
    assert isinstance(adapter.decode(new.tolist()), str)


def test_incremental_decoding_continues_positions_with_max_plus_one(adapter):
    """The engine's step rule (next position = max + 1, all three M-RoPE components alike) reproduces generate()."""
    row = adapter.build_row(QUESTION, noise_image())
    model, steps = adapter.model, 6
    with torch.no_grad():
        reference = model.generate(input_ids=row.input_ids, attention_mask=torch.ones_like(row.input_ids),
                                   **row.token_kwargs, **row.vision_kwargs, do_sample=False, max_new_tokens=steps,
                                   min_new_tokens=steps)[0, row.length:].tolist()
        out = adapter.forward(input_ids=row.input_ids, position_ids=row.position_ids, use_cache=True,
                              **row.token_kwargs, **row.vision_kwargs)
        position, tokens = int(row.position_ids.max()) + 1, []
        for _ in range(steps):
            logits = out.logits[0, -1].clone()
            logits[adapter.eos_token_ids] = -float("inf")  # as min_new_tokens does
            token = logits.argmax()
            tokens.append(int(token))
            step_pos = torch.full((*row.position_ids.shape[:-1], 1), position, dtype=torch.long)
            out = adapter.forward(input_ids=token.view(1, 1), position_ids=step_pos, cache=out.cache,
                                  use_cache=True)
            position += 1
    assert tokens == reference


def test_instructblip_prompt_queries_and_qformer_text(adapters):
    """InstructBLIP: the plain prompt after the query tokens (no template, no roles), the Q-Former reading the same
    text, a batch's Q-Former texts padded on the right (each row's logits as alone), and the text cut to the
    Q-Former's positions."""
    adapter = adapters["instructblip"]
    assert adapter.prompt_text("Hi?", with_image=True, system="Be nice.", context="A kitchen.") == (
        "Be nice. A kitchen.\n\nHi?")
    row = adapter.build_row("Hi?", noise_image())
    queries = adapter.model.config.num_query_tokens
    assert adapter.tokenizer.decode(row.input_ids[0]) == "<image>" * queries + "<s>Hi?"
    short, long = row, adapter.build_row("Describe the picture in detail, please, every object in it.", noise_image(1))
    merged = adapter.batch_vision_kwargs([short.vision_kwargs, long.vision_kwargs])
    width = long.vision_kwargs["qformer_input_ids"].shape[-1]
    assert merged["qformer_input_ids"].shape == (2, width) > short.vision_kwargs["qformer_input_ids"].shape
    assert not merged["qformer_attention_mask"][0, short.vision_kwargs["qformer_input_ids"].shape[-1]:].any()
    assert set(merged["qformer_input_ids"][0, short.vision_kwargs["qformer_input_ids"].shape[-1]:].tolist()) == {
        adapter.qformer_tokenizer.pad_token_id}
    logits = forward(adapter, **left_pad_batch(adapter, [short, long]))
    for i, r in enumerate((short, long)):
        torch.testing.assert_close(logits[i, -1], row_logits(adapter, r)[0, -1], rtol=0, atol=TOL)
    limit = adapter.model.config.qformer_config.max_position_embeddings
    cut = adapter.build_row("a cat " * limit, noise_image()).vision_kwargs["qformer_input_ids"]
    assert cut.shape[-1] == limit and int(cut[0, -1]) == adapter.qformer_tokenizer.sep_token_id
    assert adapter.image_projector() is adapter.model.language_projection


def test_instructblip_with_an_encoder_decoder_language_model_is_refused(tmp_path):
    from transformers import InstructBlipConfig, T5Config

    text = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    InstructBlipConfig(text_config=text.to_dict()).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="encoder-decoder.*not supported.*Vicuna"):
        load_model(tmp_path)


def test_gemma3_image_block_attends_both_ways(adapters):
    """Gemma 3's token_type_ids make the image block bidirectional: an image token's output then depends on the
    image tokens after it (without them, only on those before: the block read causally)."""
    adapter = adapters["gemma3"]
    row = adapter.build_row(QUESTION, noise_image())
    first = int(row.image_token_positions[0])

    def hidden(**extra):
        with torch.no_grad():
            out = adapter.model(input_ids=row.input_ids, position_ids=row.position_ids, output_hidden_states=True,
                                **row.vision_kwargs, **extra)
        return out.hidden_states[-1][0, first]

    both_ways = hidden(**row.token_kwargs)
    assert not torch.allclose(both_ways, hidden(), atol=1e-4)  # the mask differs at the first image token
    changed = dict(row.vision_kwargs)
    pixels = changed["pixel_values"].clone()
    pixels[..., -8:, -8:] = 0  # the last soft token's pixels (pooled 2 x 2 from 4-px patches)
    changed["pixel_values"] = pixels
    with torch.no_grad():
        out = adapter.model(input_ids=row.input_ids, position_ids=row.position_ids, output_hidden_states=True,
                            **changed, **row.token_kwargs)
    assert not torch.allclose(out.hidden_states[-1][0, first], both_ways, atol=1e-5)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_eager_attention_gives_attention_maps(tiny_dirs, family):
    adapter = load_model(tiny_dirs[family], attn_implementation="eager")
    assert adapter.model.config.get_text_config()._attn_implementation == "eager"
    row = adapter.build_row(QUESTION, noise_image())
    with torch.no_grad():
        out = adapter.model(input_ids=row.input_ids, position_ids=row.position_ids, output_attentions=True,
                            **row.token_kwargs, **row.vision_kwargs)
    attention = out.attentions[-1]  # (1, heads, L, L)
    assert attention.shape[-2:] == (row.length, row.length)
    on_image = attention[0, :, -1, row.image_token_positions].sum(-1)
    assert bool((on_image > 0).all()) and bool((on_image < 1).all())


# ---- batching with left padding (the engine's contract) -----------------------------------------------------------

@pytest.mark.parametrize("pos_pad", [1, 0])
def test_left_padded_batch_matches_rows_alone(adapter, pos_pad):
    rows = [
        adapter.build_row(QUESTION, noise_image()),
        adapter.build_row("Describe the picture in detail, please.", None, system="Answer briefly."),
    ]
    assert rows[0].length != rows[1].length
    batch = left_pad_batch(adapter, rows, pos_pad)
    logits = forward(adapter, **batch)
    for i, row in enumerate(rows):
        alone = row_logits(adapter, row)[0, -1]
        torch.testing.assert_close(logits[i, -1], alone, rtol=0, atol=TOL)


def test_batch_of_different_images_and_text(adapter):
    rows = [
        adapter.build_row(QUESTION, noise_image(20, 60, seed=1)),  # NeXT/OneVision: a 1 x 2 canvas
        adapter.build_row("Is there a cat in the picture?", None),
        adapter.build_row(QUESTION, noise_image(40, 56, seed=2)),  # NeXT/OneVision: a 2 x 2 canvas
    ]
    batch = left_pad_batch(adapter, rows)
    logits = forward(adapter, **batch)
    for i, row in enumerate(rows):
        torch.testing.assert_close(logits[i, -1], row_logits(adapter, row)[0, -1], rtol=0, atol=TOL)


def test_idefics3_batch_pads_frames_the_model_drops(adapters):
    adapter = adapters["idefics3"]
    a = adapter.build_row(QUESTION, noise_image(20, 60)).vision_kwargs  # 1 x 2 tiles + global
    b = adapter.build_row(QUESTION, noise_image(40, 56)).vision_kwargs  # 2 x 2 tiles + global
    merged = adapter.batch_vision_kwargs([a, b])
    assert merged["pixel_values"].shape == (2, 5, 3, 32, 32) and merged["pixel_attention_mask"].shape == (2, 5, 32, 32)
    assert torch.equal(merged["pixel_values"][0, :3], a["pixel_values"][0]) and not merged["pixel_values"][0, 3:].any()
    assert not merged["pixel_attention_mask"][0, 3:].any()
    assert adapter.canvas_tiles({k: v[:1] for k, v in merged.items()}) == (1, 2)


def test_batch_vision_kwargs_layout(adapters):
    a = adapters["llava_next"].build_row(QUESTION, noise_image(20, 60)).vision_kwargs
    b = adapters["llava_next"].build_row(QUESTION, noise_image(40, 56)).vision_kwargs
    assert a["pixel_values"].shape[1] == 3 and b["pixel_values"].shape[1] == 5
    merged = adapters["llava_next"].batch_vision_kwargs([a, b])
    assert merged["pixel_values"].shape == (2, 5, 3, 32, 32)
    assert torch.equal(merged["pixel_values"][0, :3], a["pixel_values"][0])
    assert not merged["pixel_values"][0, 3:].any()
    assert torch.equal(merged["image_sizes"], torch.cat([a["image_sizes"], b["image_sizes"]]))

    q = adapters["qwen2_vl"]
    a = q.build_row(QUESTION, noise_image(20, 60)).vision_kwargs
    b = q.build_row(QUESTION, noise_image(40, 56)).vision_kwargs
    merged = q.batch_vision_kwargs([a, b])
    assert torch.equal(merged["pixel_values"], torch.cat([a["pixel_values"], b["pixel_values"]]))
    assert merged["image_grid_thw"].shape == (2, 3)
    assert q.batch_vision_kwargs([]) == {}


# ---- pixel views -----------------------------------------------------------------------------------------------------

def test_pixel_view_round_trip_is_exact(adapter):
    for image in (noise_image(40, 56), noise_image(20, 60, seed=3), quadrant_image()):
        kw = adapter.build_row(QUESTION, image).vision_kwargs
        views = adapter.pixel_views(kw)
        assert all(v.dim() == 3 and v.shape[0] == 3 for v in views)
        back = adapter.with_pixel_views(kw, views)
        assert set(back) == set(kw)
        assert back["pixel_values"].dtype == kw["pixel_values"].dtype
        assert torch.equal(back["pixel_values"], kw["pixel_values"])
        assert back["pixel_values"] is not kw["pixel_values"]
        # changing a view changes the pixels, and the original is left alone
        before = kw["pixel_values"].clone()
        changed = adapter.with_pixel_views(kw, [v + 1 for v in views])
        assert not torch.equal(changed["pixel_values"], kw["pixel_values"])
        assert torch.equal(kw["pixel_values"], before)
        torch.testing.assert_close(adapter.pixel_views(changed)[0], views[0] + 1)


def _unnormalise(adapter, view):
    mean = torch.tensor(adapter.image_mean)[:, None, None]
    std = torch.tensor(adapter.image_std)[:, None, None]
    return (view * std + mean) * 255


@pytest.mark.parametrize("view_index", [0, -1])
def test_pixel_views_are_upright_images(adapter, family, view_index):
    """The quadrant image comes back as an image (not transposed, tiles/patch blocks in the right places)."""
    kw = adapter.build_row(QUESTION, quadrant_image(64)).vision_kwargs
    views = adapter.pixel_views(kw)
    if family in ("llava_next", "llava_onevision", "idefics3", "internvl"):
        assert len(views) == 2 and tuple(views[0].shape[-2:]) == adapter.image_size
        assert tuple(views[1].shape[-2:]) == (64, 64)  # 2 x 2 tiles of 32 px
    else:
        assert len(views) == 1
    view = _unnormalise(adapter, views[view_index])
    h, w = view.shape[-2:]
    for (r, c), colour in zip([(0, 0), (0, 1), (1, 0), (1, 1)], QUADRANT_COLOURS):
        pixel = view[:, (2 * r + 1) * h // 4, (2 * c + 1) * w // 4]
        torch.testing.assert_close(pixel, torch.tensor(colour, dtype=pixel.dtype), rtol=0, atol=3.0)


def test_image_size(adapters):
    for family in ("llava", "llava_next", "llava_onevision"):
        assert adapters[family].image_size == (32, 32)
        kw = adapters[family].build_row(QUESTION, noise_image()).vision_kwargs
        assert tuple(adapters[family].pixel_views(kw)[0].shape[-2:]) == (32, 32)
    for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        h, w = adapters[family].image_size
        assert h == w and h % 16 == 0 and h * w <= 64 * 64


def test_to_model_casts_floats_only(adapters):
    kw = adapters["llava_next"].build_row(QUESTION, noise_image()).vision_kwargs
    moved = adapters["llava_next"].to_model(kw)
    assert moved["pixel_values"].dtype == adapters["llava_next"].dtype
    assert moved["image_sizes"].dtype == torch.long


# ---- loader options and errors ------------------------------------------------------------------------------------

def test_dtype_choice(monkeypatch):
    assert choose_dtype("cpu") == torch.float32
    assert choose_dtype("cpu", "bf16") == torch.bfloat16
    assert choose_dtype("cpu", torch.float16) == torch.float16
    assert choose_dtype("cpu", "auto") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose_dtype("cuda:0") == torch.float16
    with pytest.raises(ModelLoadError, match="dtype"):
        choose_dtype("cpu", "float8")


def test_load_with_explicit_dtype(tiny_dirs):
    adapter = load_model(tiny_dirs["llava"], dtype="bf16", device="cpu")
    assert adapter.model.dtype == torch.bfloat16
    row = adapter.build_row(QUESTION, noise_image())
    logits = forward(adapter, row.input_ids, row.position_ids, **adapter.to_model(row.vision_kwargs))
    assert logits.dtype == torch.bfloat16


def test_quantization_on_cpu_is_a_clear_error(tiny_dirs):
    for mode in ("4bit", "8bit"):
        with pytest.raises(ModelLoadError, match="CUDA"):
            load_model(tiny_dirs["llava"], quantization=mode)
    with pytest.raises(ModelLoadError, match="quantization"):
        load_model(tiny_dirs["llava"], quantization="3bit")


def test_quantization_without_bitsandbytes(monkeypatch):
    import sys

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ModelLoadError, match="bitsandbytes"):
        quantization_config("4bit", torch.device("cuda"), torch.float16)


def test_quantization_config_when_possible(monkeypatch):
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # noqa: BLE001 (bitsandbytes raises more than ImportError on a machine it cannot use)
        pytest.skip("bitsandbytes not importable here")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    q4 = quantization_config("4bit", torch.device("cuda"), torch.bfloat16)
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("8bit", torch.device("cuda"), torch.float16).load_in_8bit
    assert quantization_config(None, torch.device("cuda"), torch.float16) is None


@pytest.mark.parametrize("path", ["/nonexistent/dir/model", "./no-such-model-folder", "~/no/such/model",
                                  "tests/no-such-model"])
def test_missing_folder_is_a_fast_clear_error(path):
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_model(path)
    assert path in str(info.value)
    assert time.monotonic() - start < 1.0


def test_bogus_hub_id_offline_is_a_fast_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model("nonexistent-org/nonexistent-model")
    assert time.monotonic() - start < 5.0
    assert "nonexistent-org/nonexistent-model" in str(info.value)
    assert "offline" in str(info.value)


def test_uncached_hub_id_online_fails_fast_without_retrying(monkeypatch, tmp_path):
    """Not offline, not cached: one short metadata request decides (no network here, a 404 elsewhere)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model("nonexistent-org/nonexistent-model")
    assert time.monotonic() - start < 10.0
    assert "nonexistent-org/nonexistent-model" in str(info.value)


def test_invalid_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="Hub id"):
        load_model("not a valid id!")


def test_unknown_family_lists_supported(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=32).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert "'llama'" in message
    for family in SUPPORTED_FAMILIES:
        assert family in message


def test_folder_without_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match="not a loadable"):
        load_model(tmp_path)


def test_pad_token_filled_in_when_missing(tiny_dirs, tmp_path):
    import shutil

    folder = tmp_path / "no_pad"
    shutil.copytree(tiny_dirs["qwen2_vl"], folder)
    gen = json.loads((folder / "generation_config.json").read_text())
    gen.pop("pad_token_id")
    (folder / "generation_config.json").write_text(json.dumps(gen))
    adapter = load_model(folder)
    assert adapter.model.generation_config.pad_token_id == adapter.tokenizer.pad_token_id
