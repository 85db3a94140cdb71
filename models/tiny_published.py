"""Tiny random checkpoints with the *published* checkpoints' geometry, for tests.

``models.tiny.build_tiny`` shrinks everything (32-px tiles, 8-px patches, a byte-level tokenizer for every family), so
no test built from it meets what a user's checkpoint brings: a 336-px view's 576 tokens, LLaVA-NeXT's real
pinpoints, OneVision's 729-token SigLIP tiles, Qwen2-VL's 14-px patches merged 2 x 2 under its real pixel bounds,
Gemma 3's 896-px view pooled to 256 tokens, Idefics3's 364-px frames, InternVL's 448-px tiles, InstructBLIP's 32
queries on a 224-px view, or a SentencePiece tokenizer's "▁" pieces.

``build_published(family, save_dir)`` writes a folder with the published ``config.json`` /
``preprocessor_config.json`` / ``processor_config.json`` geometry of one checkpoint per family
(``PUBLISHED_CHECKPOINTS``: image and patch size, tokens per image, tiling grid or pinpoints, merge size, pixel
bounds, vision feature layer and selection), its chat template, special tokens, tokenizer *kind* and the
``tokenizer_class`` its ``tokenizer_config.json`` names, so that ``models.load_model`` takes the user's path:
transformers 5 loads LLaVA's and NeXT's Llama-style tokenizer.json as it is, and rebuilds Gemma's, Qwen's and
InstructBLIP's Vicuna tokenizer through ``GemmaTokenizer``, ``Qwen2Tokenizer`` and ``LlamaTokenizer``. Only the widths
are tiny (vision hidden 32, text hidden 64, two layers each): one CPU thread runs a 1024-px photo through any family in
a few seconds at most (LLaVA-OneVision's 4725 image tokens are the most). Weights are random and seeded; vocabularies
are trained on the spot on ``models.tiny``'s corpus, padded to a multiple of 64 as the published embedding matrices
are (32064 rows for LLaVA's 32002 tokens, 151936 for Qwen's 151657).

Sources. Every value below names where it was checked: the published file at a commit ("config.json @66d62be"),
a copy of it in a derivative repository that names the checkpoint ("copy: <repo>"), or transformers' own conversion
script, test or class defaults at a commit ("hf convert @<commit>", "hf test @<commit>": huggingface/transformers).
No file was downloaded here: the published files were read on the Hub pages and in public copies (the project's
shared notes list them). "Unverified" marks a value no such source was found for; README's families table lists
them. The tests in tests/test_published_geometry.py pin what these values imply (image tokens, the rendered prompt,
the stop set) against the numbers and strings those sources print.
"""

from __future__ import annotations

import json
import os

from models._processors import processor_class
from models.tiny import (
    _CORPUS,
    CLIP_MEAN,
    CLIP_STD,
    GEMMA3_CHAT_TEMPLATE,
    IDEFICS3_CHAT_TEMPLATE,
    INTERNVL_CHAT_TEMPLATE,
    LLAVA_CHAT_TEMPLATE,
    ONEVISION_CHAT_TEMPLATE,
    QWEN3_CHAT_TEMPLATE,
    QWEN_CHAT_TEMPLATE,
    _ids,
    _image_processor_cls,
    save_built,
)

PUBLISHED_FAMILIES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3",
                      "idefics3", "internvl", "instructblip")

# The checkpoint each family's geometry is taken from.
PUBLISHED_CHECKPOINTS = {
    "llava": "llava-hf/llava-1.5-7b-hf",
    "llava_next": "llava-hf/llava-v1.6-mistral-7b-hf",  # the Mistral one: a second SentencePiece template, [INST]
    "llava_onevision": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    "qwen2_vl": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen3_vl": "Qwen/Qwen3-VL-2B-Instruct",
    "gemma3": "google/gemma-3-4b-it",
    "idefics3": "HuggingFaceM4/Idefics3-8B-Llama3",
    "internvl": "OpenGVLab/InternVL3-1B-hf",
    "instructblip": "Salesforce/instructblip-vicuna-7b",
}

# ---- shared published values -----------------------------------------------------------------------------------------

# CLIP ViT-L/14-336. llava-1.5-7b-hf (copy: mohitsha/llava-1.5-7b-hf, _name_or_path llava-hf/llava-1.5-7b-hf)
# config.json vision_config image_size 336, patch_size 14; preprocessor_config.json shortest_edge 336, crop 336 x 336,
# OpenAI CLIP mean/std, resample 3. llava-v1.6-mistral-7b-hf: the same CLIP tower (config.json in NVIDIA/TensorRT-LLM's
# test_modeling_llava_next.py LLAVA_NEXT_7B_CONFIG), its image processor LlavaNextImageProcessor.from_pretrained of the
# tower's (hf convert_llava_next_weights_to_hf.py @9426c8c); its preprocessor_config.json itself not seen.
CLIP_SIZE, CLIP_PATCH = 336, 14
# llava-v1.6-mistral-7b-hf config.json image_grid_pinpoints (TensorRT-LLM's copy above) = LlavaNextImageProcessor's
# default pinpoints, which the conversion script writes into both files (hf convert @9426c8c).
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# llava-onevision-qwen2-0.5b-ov-hf: SigLIP so400m at 384 px, patch 14 (27 x 27 = 729 tokens a tile), vision_use_head
# false, num_image_tokens 729, vision_feature_select_strategy "full" (hf convert_llava_onevision_weights_to_hf.py
# @d058e0f); image_grid_pinpoints every (rows x 384, cols x 384) for rows, cols in 1..6, rows outer (config.json
# @66d62be). hf test_modeling_llava_onevision.py @032b32a: a 1024 x 899 photo gives 6567 input ids and pixel_values
# (1, 10, 3, 384, 384) on this checkpoint; tests/test_published_geometry.py checks the same numbers here.
ONEVISION_SIZE, ONEVISION_PATCH = 384, 14
ONEVISION_PINPOINTS = [[384 * r, 384 * c] for r in range(1, 7) for c in range(1, 7)]
# Qwen2-VL-2B-Instruct preprocessor_config.json (copies: a Qwen2.5-VL-7B-Instruct copy in a Rust test; vendored
# Qwen2-VL configs): min_pixels 3136 (56 x 56), max_pixels 12845056 (14 x 14 x 4 x 16384), patch_size 14, merge_size
# 2, temporal_patch_size 2, OpenAI CLIP mean/std. Qwen2.5-VL-3B-Instruct's: unverified, taken to be the same (the
# copy seen is the 7B's).
QWEN2_MIN_PIXELS, QWEN2_MAX_PIXELS, QWEN2_PATCH = 3136, 12845056, 14
# Qwen3-VL-2B-Instruct preprocessor_config.json (copy: coder3101/Qwen3-VL-2B-Instruct-heretic, 390 bytes as the
# original): size {"shortest_edge": 65536, "longest_edge": 16777216}, patch_size 16, merge_size 2, temporal_patch_size
# 2, mean/std 0.5, Qwen2VLImageProcessorFast.
QWEN3_MIN_PIXELS, QWEN3_MAX_PIXELS, QWEN3_PATCH = 65536, 16777216, 16
QWEN_MERGE = 2
# gemma-3-4b-it config.json (copy: mlx-community/gemma-3-4b-it-bf16): SigLIP at 896 px, patch 14 (64 x 64 patches),
# vision_use_head false, mm_tokens_per_image 256 (pooled 4 x 4 to 16 x 16); preprocessor_config.json (copy:
# Synthetica-AI/gemma-3-4b-it, "Copy model google/gemma-3-4b-it"): 896 x 896, mean/std 0.5, resample 2,
# do_pan_and_scan unset; processor_config.json (derivatives): image_seq_length 256.
GEMMA3_SIZE, GEMMA3_PATCH, GEMMA3_TOKENS = 896, 14, 256
# Idefics3-8B-Llama3 preprocessor_config.json @30d4b60 (the latest): size {"longest_edge": 1456} (4 x 364),
# do_image_splitting true, mean/std 0.5, resample 1; that commit removed max_image_size {"longest_edge": 364}, which
# is Idefics3ImageProcessor's default: the same frames. processor_config.json (copy:
# leon-se/Idefics3-8B-Llama3-FP8-Dynamic): image_seq_len 169. config.json vision image_size 364, patch_size 14,
# scale_factor 2: unverified, but (364 / 14 / 2)^2 = 169 is the published image_seq_len.
IDEFICS3_FRAME, IDEFICS3_PATCH, IDEFICS3_SCALE, IDEFICS3_TOKENS = 364, 14, 2, 169
# InternVL3-1B-hf: the image processor as hf convert_internvl_weights_to_hf.py writes it (GotOcr2ImageProcessor
# 448 x 448, ImageNet mean/std; crop_to_patches true as InternVLProcessor passes it, min_patches 1 and max_patches 12
# the class defaults); processor_config.json (InternVL3-14B-hf refs/pr/2; the 1B's is the same 72 bytes):
# image_seq_length 256. config.json vision image_size 448, patch_size 14, downsample_ratio 0.5: unverified, but
# (448 / 14 x 0.5)^2 = 256 is the published image_seq_length.
INTERNVL_TILE, INTERNVL_PATCH, INTERNVL_TOKENS, INTERNVL_MAX_TILES = 448, 14, 256, 12
# instructblip-vicuna-7b: vision image_size 224 (patch_size 14: InstructBlipVisionConfig's default), Q-Former vocab
# 30523, image processor BlipImageProcessor 224 x 224 with OpenAI CLIP mean/std (resample 3: the class default)
# (hf convert_instructblip_original_to_pytorch.py @996a401); processor_config.json @4fd0ddb: num_query_tokens 32;
# Q-Former cross_attention_frequency 2 (config.json copies: Mayank1309/mayankBLIP,
# Mediocreatmybest/instructblip-vicuna-13b_8bit).
BLIP_SIZE, BLIP_PATCH, BLIP_QUERIES = 224, 14, 32

# What one image of `size` (height, width) becomes, per family: the test's expectations are computed from these
# published numbers by the formulas the model cards give (not from the processors).
TOKENS_PER_VIEW = {"llava": (CLIP_SIZE // CLIP_PATCH) ** 2, "llava_next": (CLIP_SIZE // CLIP_PATCH) ** 2,
                   "llava_onevision": (ONEVISION_SIZE // ONEVISION_PATCH) ** 2, "gemma3": GEMMA3_TOKENS,
                   "idefics3": IDEFICS3_TOKENS, "internvl": INTERNVL_TOKENS}

# ---- narrow widths ------------------------------------------------------------------------------------------------

_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)


def _padded(n: int, multiple: int = 64) -> int:
    """The embedding rows of a vocabulary of ``n``: published checkpoints pad theirs (llava: 32064 for 32002)."""
    return -(-n // multiple) * multiple


# ---- tokenizers ---------------------------------------------------------------------------------------------------

_WORDS = "USER: ASSISTANT: User: Assistant: user assistant model system [INST] [/INST]"


def _trained_pieces(pre_tokenizer, vocab_size: int, alphabet=()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE pieces and merges trained on the tiny corpus with ``pre_tokenizer`` (``alphabet``: pieces always kept),
    special tokens left out."""
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, initial_alphabet=alphabet)
    lines = [line for line in _CORPUS.splitlines() if line] + [_WORDS]
    tok.train_from_iterator(lines * 3, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(sorted(model["vocab"].items(), key=lambda item: item[1])), merges


def _byte_level():
    """Qwen's and Llama 3's pre-tokenizer: GPT-2's byte-level split, no prefix space."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _byte_level_pieces() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE pieces and merges, every byte's piece among them."""
    from tokenizers import pre_tokenizers

    return _trained_pieces(_byte_level(), 640, alphabet=pre_tokenizers.ByteLevel.alphabet())


def _sentencepiece_vocab(head: list[str], vocab_size: int = 500) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A SentencePiece-style BPE vocabulary as Llama's, Mistral's and Gemma's tokenizer.json hold it: ``head`` (the
    control tokens, in their published order) first, the 256 byte-fallback pieces ``<0x00>`` .. ``<0xFF>`` (Llama:
    ids 3..258), then "▁"-prefixed word pieces; a newline has no piece and falls back to ``<0x0A>``, as in Llama."""
    from tokenizers import pre_tokenizers

    pieces, merges = _trained_pieces(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
                                     vocab_size)
    vocab = {token: i for i, token in enumerate(head)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return vocab, merges


def _special(tokenizer, tokens: list[str]) -> None:
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)


def _llama_tokenizer(extra: list[str], *, bos: str = "<s>", unk: str = "<unk>"):
    """Llama 2's tokenizer.json as llava-1.5-7b-hf and llava-v1.6-mistral-7b-hf ship it (Vicuna's and Mistral 7B
    v0.2's vocabularies are both Llama 2 style; llava-1.5-7b-hf tokenizer_config.json @6b71355: <unk> 0, <s> 1, </s> 2,
    add_bos_token true, add_eos_token false, legacy false; the tokenizer.json pipeline below is unverified, written
    from Llama 2's): BPE with byte fallback, <unk> 0, <s> 1, </s> 2; the "legacy"
    normalizer Prepend("▁") + Replace(" ", "▁") and no pre-tokenizer (so each text after a special token gets a "▁"
    too: "<image>\n" is <image> "▁" <0x0A>, LLaVA-1.5's well-known 32000, 29871, 13); the decoder Replace("▁", " "),
    ByteFallback, Fuse, Strip(" ", 1, 0); <s> added in front. ``tokenizer_class`` ``LlamaTokenizer`` (their
    tokenizer_config.json), which transformers 5 ignores for these model types (``MODELS_WITH_INCORRECT_HUB_TOKENIZER_
    CLASS``: the tokenizer.json is loaded as it is). Then the LLaVA checkpoints' added tokens (``<image>`` 32000,
    ``<pad>`` 32001: llava-1.5-7b-hf added_tokens.json @1695216; NeXT's as hf convert_llava_next_weights_to_hf.py
    @9426c8c adds them). ``bos`` / ``unk``: the tokens named BOS and UNK (InstructBLIP's Vicuna names ``</s>`` for
    both)."""
    from tokenizers import normalizers
    from transformers import LlamaTokenizer

    vocab, merges = _sentencepiece_vocab(["<unk>", "<s>", "</s>"])
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, legacy=False, add_bos_token=True, add_eos_token=False,
                               unk_token=unk, bos_token=bos, eos_token="</s>")
    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    _special(tokenizer, extra)
    return tokenizer


def _gemma_tokenizer():
    """Gemma 3's tokenizer: ``GemmaTokenizer``, bos <bos>, eos <eos>, pad <pad>, boi <start_of_image>, eoi
    <end_of_image>, image <image_soft_token> (tokenizer_config.json of Gemma 3 derivatives, e.g.
    LetheanNetwork/LEM-Gemma3-4B); <eos> 1, <end_of_turn> 106 (config.json eos_token_id [1, 106], copy above),
    <start_of_image> 255999, <end_of_image> 256000, <image_soft_token> 262144 (its boi/eoi/image_token_index); <pad> 0
    and <bos> 2 as Gemma3TextConfig's defaults. Unverified: <unk> 3, <mask> 4, <start_of_turn> 105, add_bos_token
    true, and the normalizer (" " to "▁", no prefix space). The ids here keep that order, not those numbers."""
    from transformers import GemmaTokenizer

    vocab, merges = _sentencepiece_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>",
                                          "<end_of_turn>"])
    for token in ("<start_of_image>", "<end_of_image>"):
        vocab[token] = len(vocab)
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False,
                               extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                     "image_token": "<image_soft_token>"})
    _special(tokenizer, ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                         "<image_soft_token>"])
    return tokenizer


def _qwen2_tokenizer(specials: list[str], *, eos="<|im_end|>", extra_special_tokens=None):
    """Qwen2's byte-level BPE: "Ġ" for a space, no BOS added, <|endoftext|> 151643, <|im_start|> 151644, <|im_end|>
    151645 (llava-onevision-qwen2-0.5b-ov-hf added_tokens.json, main; Qwen2-VL-2B-Instruct config.json bos 151643,
    eos 151645, copy: wsibnvs/ShowUI-2B), eos <|im_end|>, pad <|endoftext|>; ``specials`` are the added tokens after
    those, in their published order. Unverified: each checkpoint's tokenizer_config.json (``tokenizer_class``
    ``Qwen2Tokenizer``, the eos and pad names)."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _byte_level_pieces()
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=eos,
                               pad_token="<|endoftext|>", extra_special_tokens=extra_special_tokens or {})
    _special(tokenizer, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *specials])
    return tokenizer


def _llama3_tokenizer(specials: list[str]):
    """Llama 3's tokenizer as Idefics3-8B-Llama3 is taken to ship it (unverified: its tokenizer_config.json was not
    seen): ``PreTrainedTokenizerFast``, a byte-level BPE like Qwen's, bos <|begin_of_text|> added in front (its chat
    template writes none), eos <end_of_utterance>, pad <|reserved_special_token_0|>."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _byte_level_pieces()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = _byte_level()
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                        eos_token="<end_of_utterance>", pad_token="<|reserved_special_token_0|>",
                                        clean_up_tokenization_spaces=False)
    _special(tokenizer, ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", *specials])
    bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)])
    return tokenizer


# ---- chat templates ------------------------------------------------------------------------------------------------

# llava-v1.6-mistral-7b-hf chat_template.json (openvino.genai's chat_template_fallback_map.hpp @8433e664^; the
# prompt of hf convert_llava_next_weights_to_hf.py @9426c8c and test_modeling_llava_next.py @0eea3b5):
# "[INST] <image>\n<question> [/INST]", a system text in Llama 2's "<<SYS>>\n...\n<</SYS>>\n\n" before the first
# turn, the images of a turn before its text; no generation prompt of its own. (An answer ends "<\s> " there, sic:
# written "</s> " here, since no prompt this project builds holds an answer.)
MISTRAL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ '<<SYS>>\n' }}{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{{ '\n<</SYS>>\n\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '[INST] ' }}"
    "{%- for part in parts if part['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{{ ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ ' ' + part['text'] + '</s> ' }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# Idefics3-8B-Llama3's chat template (the chat_template key of its preprocessor_config.json @92a708a): SmolVLM's
# layout (models.tiny) after "<|begin_of_text|>" in place of "<|im_start|>".
IDEFICS3_LLAMA3_CHAT_TEMPLATE = IDEFICS3_CHAT_TEMPLATE.replace("<|im_start|>", "<|begin_of_text|>", 1)

# ---- per family -----------------------------------------------------------------------------------------------------


def _clip_vision():
    from transformers import CLIPVisionConfig

    # hidden_act quick_gelu (CLIP ViT-L/14-336's); 2 layers so that vision_feature_layer -2 is a real layer's output.
    return CLIPVisionConfig(image_size=CLIP_SIZE, patch_size=CLIP_PATCH, projection_dim=32, hidden_act="quick_gelu",
                            **_VISION)


def _clip_processor(cls_name: str, **extra):
    return _image_processor_cls(cls_name)(
        size={"shortest_edge": CLIP_SIZE}, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE}, do_center_crop=True,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3, **extra)


def _build_llava(family):
    from transformers import (
        LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig, LlavaNextForConditionalGeneration,
        LlavaNextProcessor, LlavaProcessor, MistralConfig,
    )

    tokenizer = _llama_tokenizer(["<image>", "<pad>"])  # published ids 32000, 32001
    tokenizer.pad_token = "<pad>"
    bos, eos, pad, image = _ids(tokenizer, "<s>", "</s>", "<pad>", "<image>")
    special = dict(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    # llava-1.5-7b-hf config.json (copy above): image_token_index 32000, pad_token_id 32001, vision_feature_layer -2,
    # vision_feature_select_strategy "default" (the CLS feature dropped: 576 of 577), projector gelu; image_seq_length
    # 576 = (336 / 14)^2. processor_config.json: patch_size 14, vision_feature_select_strategy "default",
    # num_additional_image_tokens 1 (unverified for the 7b: seen in llava-1.5-13b-hf @657f531 and derivatives).
    # generation_config.json (copy: mohitsha/llava-1.5-7b-hf @90f63e9): bos 1, eos 2, pad 32001; the NeXT one's the
    # same (derivative unsloth/llava-v1.6-mistral-7b-hf-bnb-4bit).
    common = dict(vision_config=_clip_vision(), image_token_index=image, vision_feature_layer=-2,
                  vision_feature_select_strategy="default", projector_hidden_act="gelu",
                  image_seq_length=TOKENS_PER_VIEW["llava"])
    proc_kwargs = dict(patch_size=CLIP_PATCH, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    if family == "llava":
        # Vicuna-7B v1.5 text (config.json copy above): max_position_embeddings 4096, rms_norm_eps 1e-5, vocab 32064.
        text = LlamaConfig(vocab_size=_padded(len(tokenizer)), max_position_embeddings=4096, rms_norm_eps=1e-5,
                           **special, **_TEXT)
        config = LlavaConfig(text_config=text, **common)
        processor = LlavaProcessor(image_processor=_clip_processor("CLIPImageProcessor"), tokenizer=tokenizer,
                                   chat_template=LLAVA_CHAT_TEMPLATE, **proc_kwargs)
        return config, LlavaForConditionalGeneration, processor, special
    # llava-v1.6-mistral-7b-hf config.json (TensorRT-LLM's copy above): Mistral-7B-Instruct-v0.2 text
    # (max_position_embeddings 32768, rope_theta 1e6, sliding_window null, rms_norm_eps 1e-5, vocab 32064),
    # image_grid_pinpoints above, use_image_newline_parameter true, vision_feature_layer -2, "default";
    # preprocessor_config.json: LlavaNextImageProcessor of the CLIP tower's values, do_pad true (the class default;
    # hf convert @9426c8c).
    text = MistralConfig(vocab_size=_padded(len(tokenizer)), max_position_embeddings=32768, rope_theta=1e6,
                         sliding_window=None, rms_norm_eps=1e-5, **special, **_TEXT)
    config = LlavaNextConfig(text_config=text, image_grid_pinpoints=NEXT_PINPOINTS, **common)
    image_processor = _clip_processor("LlavaNextImageProcessor", image_grid_pinpoints=NEXT_PINPOINTS, do_pad=True)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   chat_template=MISTRAL_CHAT_TEMPLATE, **proc_kwargs)
    return config, LlavaNextForConditionalGeneration, processor, special


def _build_llava_onevision(family):
    from transformers import (
        LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor, Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = _qwen2_tokenizer(["<image>", "<video>"])  # published 151646, 151647
    eos, pad, image, video = _ids(tokenizer, "<|im_end|>", "<|endoftext|>", "<image>", "<video>")
    vision = SiglipVisionConfig(image_size=ONEVISION_SIZE, patch_size=ONEVISION_PATCH, vision_use_head=False,
                                **_VISION)
    # Qwen2-0.5B-Instruct's text config (hf convert @d058e0f takes it whole): max_position_embeddings 32768,
    # rope_theta 1e6, tie_word_embeddings true — unverified (that config was not seen).
    text = Qwen2Config(vocab_size=_padded(len(tokenizer)), eos_token_id=eos, pad_token_id=pad, bos_token_id=None,
                       max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True, **_TEXT)
    # config.json: vision_feature_layer -1, vision_aspect_ratio "anyres_max_9" (LlavaOnevisionConfig's defaults, which
    # hf convert @d058e0f keeps), vision_feature_select_strategy "full"; generation_config.json: unverified (eos
    # <|im_end|>, pad <|endoftext|> written here).
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=image, video_token_index=video,
        image_grid_pinpoints=ONEVISION_PINPOINTS, vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9", tie_word_embeddings=True,
    )
    # preprocessor_config.json: LlavaOnevisionImageProcessor.from_pretrained of the SigLIP tower's (hf convert
    # @d058e0f): 384 x 384, do_pad true (class default); mean/std 0.5 and resample 3 are SigLIP's, unverified here.
    image_processor = _image_processor_cls("LlavaOnevisionImageProcessor")(
        size={"height": ONEVISION_SIZE, "width": ONEVISION_SIZE}, image_grid_pinpoints=ONEVISION_PINPOINTS,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_pad=True, resample=3,
    )
    # processor_config.json: num_image_tokens 729, vision_feature_select_strategy "full" (hf convert @d058e0f; the
    # sister llava-onevision-qwen2-0.5b-si-hf's file @d1dac38), vision_aspect_ratio "anyres_max_9"; the chat template:
    # models.tiny.ONEVISION_CHAT_TEMPLATE.
    processor = processor_class(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=ONEVISION_CHAT_TEMPLATE,
        num_image_tokens=TOKENS_PER_VIEW["llava_onevision"], vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return config, LlavaOnevisionForConditionalGeneration, processor, dict(eos_token_id=eos, pad_token_id=pad)


def _qwen_vl_tokens():
    # Qwen2-VL-2B-Instruct's added tokens: <|vision_start|> 151652, <|vision_end|> 151653, <|image_pad|> 151655,
    # <|video_pad|> 151656 (config.json vision_start/end, image and video token ids, copy: wsibnvs/ShowUI-2B; the
    # same ids in Qwen2.5-VL-3B's, copy: dahwinsingularity/vllm2); <|vision_pad|> 151654 unverified.
    tokenizer = _qwen2_tokenizer(["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                                  "<|video_pad|>"])
    return tokenizer, _ids(tokenizer, "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>",
                           "<|image_pad|>", "<|video_pad|>")


def _mrope(head_dim: int, published: list[int]) -> list[int]:
    """A published mrope_section (t, h, w halves of a 128-wide head) scaled to ``head_dim``."""
    half = head_dim // 2
    h = w = half * published[1] // sum(published)
    return [half - h - w, h, w]


def _build_qwen(family):
    if family == "qwen3_vl":
        return _build_qwen3_vl()
    image_processor = _image_processor_cls("Qwen2VLImageProcessor")(
        min_pixels=QWEN2_MIN_PIXELS, max_pixels=QWEN2_MAX_PIXELS, patch_size=QWEN2_PATCH, merge_size=QWEN_MERGE,
        temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor

        # Qwen2-VL-2B-Instruct: patch 14, merge 2, temporal 2 (preprocessor_config.json copies above); config.json
        # max_position_embeddings 32768, rope_theta 1e6, mrope_section [16, 24, 24] (copy: wsibnvs/ShowUI-2B).
        vision = dict(depth=2, embed_dim=32, hidden_size=_TEXT["hidden_size"], num_heads=2, mlp_ratio=2)
        mrope, theta, max_positions = [16, 24, 24], 1e6, 32768
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model
        from transformers import Qwen2_5_VLProcessor as Processor

        # Qwen2.5-VL-3B-Instruct config.json (copies: dahwinsingularity/vllm2, huihui-ai/Qwen2.5-VL-3B-Instruct-
        # abliterated): vision patch_size 14, spatial_merge_size 2, window_size 112 (a window of 4 x 4 merged
        # tokens), fullatt_block_indexes [7, 15, 23, 31] of 32 (here: [1] of 2), tokens_per_second 2; text
        # max_position_embeddings 128000, rope_theta 1e6, mrope_section [16, 24, 24].
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=_TEXT["hidden_size"],
                      window_size=112, fullatt_block_indexes=[1], tokens_per_second=2)
        mrope, theta, max_positions = [16, 24, 24], 1e6, 128000
    vision.update(patch_size=QWEN2_PATCH, spatial_merge_size=QWEN_MERGE, temporal_patch_size=2, in_channels=3)
    tokenizer, (eos, pad, start, end, image, video) = _qwen_vl_tokens()
    head_dim = _TEXT["hidden_size"] // _TEXT["num_attention_heads"]
    text = dict(vocab_size=_padded(len(tokenizer)), eos_token_id=eos, pad_token_id=pad, bos_token_id=None,
                max_position_embeddings=max_positions,
                rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": _mrope(head_dim, mrope)},
                **_TEXT)
    config = Config(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                    vision_start_token_id=start, vision_end_token_id=end)
    processor = processor_class(Processor)(image_processor=image_processor, tokenizer=tokenizer,
                                           chat_template=QWEN_CHAT_TEMPLATE)
    # generation_config.json: eos_token_id [151645, 151643] (<|im_end|>, <|endoftext|>), pad 151643 — unverified for
    # both checkpoints (their generation_config.json was not seen).
    return config, Model, processor, dict(eos_token_id=[eos, pad], pad_token_id=pad)


def _build_qwen3_vl():
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tokenizer, (eos, pad, start, end, image, video) = _qwen_vl_tokens()
    head_dim = _TEXT["hidden_size"] // _TEXT["num_attention_heads"]
    # Qwen3-VL text_config: head_dim 128, mrope_section [24, 20, 20], mrope_interleaved true, rope_theta 5e6,
    # max_position_embeddings 262144 — seen in a Qwen3-VL-32B-like config (quanliang/F1), not in the 2B's (unverified).
    rope = {"rope_type": "default", "rope_theta": 5e6, "mrope_section": _mrope(head_dim, [24, 20, 20]),
            "mrope_interleaved": True}
    text = dict(vocab_size=_padded(len(tokenizer)), pad_token_id=pad, head_dim=head_dim,
                max_position_embeddings=262144, rope_parameters=rope, **_TEXT)
    # vision_config: patch_size 16, spatial_merge_size 2, temporal_patch_size 2 (the 2B's preprocessor copy above),
    # num_position_embeddings 2304 (48 x 48; the same 32B-like config), deepstack_visual_indexes [5, 11, 17] of 24
    # layers (unverified; here [0] of 2). Chat template and generation_config.json: unverified.
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=_TEXT["hidden_size"],
                  patch_size=QWEN3_PATCH, spatial_merge_size=QWEN_MERGE, temporal_patch_size=2, in_channels=3,
                  num_position_embeddings=2304, deepstack_visual_indexes=[0])
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                           vision_start_token_id=start, vision_end_token_id=end)
    image_processor = _image_processor_cls("Qwen2VLImageProcessor")(
        size={"shortest_edge": QWEN3_MIN_PIXELS, "longest_edge": QWEN3_MAX_PIXELS}, patch_size=QWEN3_PATCH,
        merge_size=QWEN_MERGE, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = processor_class(Qwen3VLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                  chat_template=QWEN3_CHAT_TEMPLATE)
    return config, Qwen3VLForConditionalGeneration, processor, dict(eos_token_id=[eos, pad], pad_token_id=pad)


def _build_gemma3(family):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, SiglipVisionConfig

    tokenizer = _gemma_tokenizer()
    pad, eos, bos, end_turn, boi, eoi, image = _ids(tokenizer, "<pad>", "<eos>", "<bos>", "<end_of_turn>",
                                                    "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    vision = SiglipVisionConfig(image_size=GEMMA3_SIZE, patch_size=GEMMA3_PATCH, vision_use_head=False, **_VISION)
    head_dim = _TEXT["hidden_size"] // _TEXT["num_attention_heads"]
    # gemma-3-4b-it config.json text_config (copy: mlx-community/gemma-3-4b-it-bf16): sliding_window 1024,
    # sliding_window_pattern 6 (five sliding layers to one global; here one of each), query_pre_attn_scalar = head_dim
    # (256 there), max_position_embeddings 131072, rope_theta 1e6 with rope_scaling {"factor": 8.0, "rope_type":
    # "linear"} for the global layers and rope_local_base_freq 1e4 for the sliding ones — passed as the file has
    # them, so that transformers converts them as it converts the real file. vocab 262208: unverified.
    text = dict(vocab_size=_padded(len(tokenizer)), head_dim=head_dim, query_pre_attn_scalar=head_dim,
                sliding_window=1024, layer_types=["sliding_attention", "full_attention"], pad_token_id=pad,
                rope_theta=1e6, rope_scaling={"factor": 8.0, "rope_type": "linear"}, rope_local_base_freq=1e4,
                eos_token_id=eos, bos_token_id=bos, max_position_embeddings=131072, **_TEXT)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=GEMMA3_TOKENS,
                          boi_token_index=boi, eoi_token_index=eoi, image_token_index=image)
    image_processor = _image_processor_cls("Gemma3ImageProcessor")(
        size={"height": GEMMA3_SIZE, "width": GEMMA3_SIZE}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        resample=2,
    )
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=GEMMA3_TOKENS)
    # generation_config.json: eos_token_id [1, 106] (<eos>, <end_of_turn>) as config.json's (copy above); the file
    # itself, bos 2 and pad 0: unverified.
    return config, Gemma3ForConditionalGeneration, processor, dict(
        bos_token_id=bos, eos_token_id=[eos, end_turn], pad_token_id=pad)


def _build_idefics3(family):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig

    # Idefics3-8B-Llama3 added tokens: <fake_token_around_image> 128256, <image> 128257, <end_of_utterance> 128258,
    # and the <row_r_col_c> / <global-img> tags the processor writes, as added, not special, tokens — unverified (the
    # tokenizer files were not seen); so are its generation_config.json and the Llama 3.1 text values below.
    tags = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tokenizer = _llama3_tokenizer(["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                                   *tags])
    bos, eos, pad, image = _ids(tokenizer, "<|begin_of_text|>", "<end_of_utterance>", "<|reserved_special_token_0|>",
                                "<image>")
    special = dict(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    vision = dict(image_size=IDEFICS3_FRAME, patch_size=IDEFICS3_PATCH, **_VISION)
    # text: Llama 3.1 8B Instruct (max_position_embeddings 131072, rope_theta 500000; vocab 128259 + tags).
    text = LlamaConfig(vocab_size=_padded(len(tokenizer)), max_position_embeddings=131072, rope_theta=5e5, **special,
                       **_TEXT)
    config = Idefics3Config(vision_config=vision, text_config=text, image_token_id=image,
                            scale_factor=IDEFICS3_SCALE)
    image_processor = _image_processor_cls("Idefics3ImageProcessor")(
        size={"longest_edge": 4 * IDEFICS3_FRAME}, max_image_size={"longest_edge": IDEFICS3_FRAME},
        do_image_splitting=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=1,
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=IDEFICS3_TOKENS, chat_template=IDEFICS3_LLAMA3_CHAT_TEMPLATE)
    return config, Idefics3ForConditionalGeneration, processor, special


def _build_internvl(family):
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, Qwen2Config

    # InternVL3-1B-hf's tokenizer: Qwen2.5-VL-7B-Instruct's + <img>, </img>, <IMG_CONTEXT> (image_token_id 151667),
    # ... (hf convert_internvl_weights_to_hf.py); <img> 151665, </img> 151666 and <video> among the extra special
    # tokens: unverified.
    tokenizer = _qwen2_tokenizer(["<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
                                 extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                                                       "context_image_token": "<IMG_CONTEXT>",
                                                       "video_token": "<video>"})
    eos, pad, image = _ids(tokenizer, "<|im_end|>", "<|endoftext|>", "<IMG_CONTEXT>")
    vision = dict(image_size=[INTERNVL_TILE, INTERNVL_TILE], patch_size=[INTERNVL_PATCH, INTERNVL_PATCH], **_VISION)
    # Qwen2.5-0.5B text: max_position_embeddings 32768, rope_theta 1e6 — unverified.
    text = Qwen2Config(vocab_size=_padded(len(tokenizer)), eos_token_id=eos, pad_token_id=pad, bos_token_id=None,
                       max_position_embeddings=32768, rope_theta=1e6, **_TEXT)
    # config.json: downsample_ratio 0.5, image_seq_length 256 (see INTERNVL_TOKENS); vision_feature_layer -1,
    # vision_feature_select_strategy "default", projector_hidden_act gelu: unverified.
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=image,
                            image_seq_length=INTERNVL_TOKENS, downsample_ratio=0.5, vision_feature_layer=-1,
                            vision_feature_select_strategy="default", projector_hidden_act="gelu")
    image_processor = _image_processor_cls("GotOcr2ImageProcessor")(
        size={"height": INTERNVL_TILE, "width": INTERNVL_TILE}, crop_to_patches=True, min_patches=1,
        max_patches=INTERNVL_MAX_TILES, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        resample=3,
    )
    processor = processor_class(InternVLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                   image_seq_length=INTERNVL_TOKENS,
                                                   chat_template=INTERNVL_CHAT_TEMPLATE)
    # generation_config.json (InternVL3-1B-hf refs/pr/2): bos 151643 (<|endoftext|>), eos 151645 (<|im_end|>), no pad
    # (the loader takes the tokenizer's).
    return config, InternVLForConditionalGeneration, processor, dict(bos_token_id=pad, eos_token_id=eos)


def _build_instructblip(family):
    from transformers import (
        InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor, InstructBlipQFormerConfig,
        InstructBlipVisionConfig, LlamaConfig,
    )

    from models.tiny import _qformer_tokenizer

    # Vicuna-7B v1.1's SentencePiece tokenizer as instructblip-vicuna-7b ships it: tokenizer_config.json
    # LlamaTokenizer (b5bc015); special_tokens_map.json (c344252) BOS = EOS = UNK = "</s>", pad "[PAD]";
    # added_tokens.json (4fd0ddb) [PAD] 32000, <image> 32001, <video> 32002 — LAVIS's own choice of tokens
    # (blip2_vicuna_instruct.py).
    # transformers 5 builds this model type's tokenizer through LlamaTokenizer's own pipeline (Metaspace, not the
    # file's normalizer).
    tokenizer = _llama_tokenizer(["[PAD]", "<image>", "<video>"], bos="</s>", unk="</s>")
    tokenizer.pad_token = "[PAD]"
    eos, pad, image = _ids(tokenizer, "</s>", "[PAD]", "<image>")
    unk, start = _ids(tokenizer, "<unk>", "<s>")  # ids 0 and 1: the published configs' BOS and EOS
    # generation_config.json (9e55477): bos 0, eos 1, pad 32000; config.json text_config: bos 0, eos 1, pad -1
    # (transformers' convert_instructblip_original_to_pytorch.py @996a401 took them from decapoda-research/llama-7b-hf's
    # config; copies of config.json, unverified at a commit). Not what ends an answer: see models.adapters.instructblip.
    special = dict(bos_token_id=unk, eos_token_id=start, pad_token_id=pad)
    # The Q-Former's tokenizer: bert-base-uncased's WordPiece (its qformer_tokenizer/ folder), as models.tiny's.
    qformer_tokenizer = _qformer_tokenizer()
    vision = InstructBlipVisionConfig(image_size=BLIP_SIZE, patch_size=BLIP_PATCH, initializer_range=0.02,
                                      **_VISION)
    qformer = InstructBlipQFormerConfig(vocab_size=len(qformer_tokenizer), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, cross_attention_frequency=2,
                                        encoder_hidden_size=_VISION["hidden_size"],
                                        pad_token_id=qformer_tokenizer.pad_token_id)
    text = LlamaConfig(vocab_size=_padded(len(tokenizer)), max_position_embeddings=2048, rms_norm_eps=1e-6,
                       bos_token_id=unk, eos_token_id=start, pad_token_id=-1, **_TEXT)  # Vicuna-7B v1.1: 2048 positions
    config = InstructBlipConfig(vision_config=vision, qformer_config=qformer, text_config=text,
                                num_query_tokens=BLIP_QUERIES, image_token_index=image)
    image_processor = _image_processor_cls("BlipImageProcessor")(
        size={"height": BLIP_SIZE, "width": BLIP_SIZE}, image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3)
    processor = InstructBlipProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                      qformer_tokenizer=qformer_tokenizer, num_query_tokens=BLIP_QUERIES)
    return config, InstructBlipForConditionalGeneration, processor, special


_BUILDERS = {"llava": _build_llava, "llava_next": _build_llava, "llava_onevision": _build_llava_onevision,
             "qwen2_vl": _build_qwen, "qwen2_5_vl": _build_qwen, "qwen3_vl": _build_qwen, "gemma3": _build_gemma3,
             "idefics3": _build_idefics3, "internvl": _build_internvl, "instructblip": _build_instructblip}


def build_published(family: str, save_dir: str | os.PathLike, seed: int = 0) -> str:
    """Build a tiny random ``family`` checkpoint with its published checkpoint's geometry (``PUBLISHED_CHECKPOINTS``)
    into ``save_dir`` and return the folder's path; ``models.load_model`` loads it as it loads the published one.

    family: one of ``PUBLISHED_FAMILIES``. Seeded as ``build_tiny`` (the global RNG is left untouched; the EOS row of
    the output layer scaled so that some answers end on their own).
    """
    if family not in _BUILDERS:
        raise ValueError(f"Unknown published family {family!r}; choose one of {', '.join(PUBLISHED_FAMILIES)}")
    folder = save_built(family, _BUILDERS[family](family), save_dir, seed)
    for name, values in _PUBLISHED_FILE_VALUES.get(family, {}).items():
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        saved.update(values)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(saved, f, indent=2)
    return folder


# Values of a published file that the classes here do not write themselves. instructblip-vicuna-7b's
# processor_config.json (4fd0ddb) names the video processor class (the repository also serves InstructBlipVideo).
_PUBLISHED_FILE_VALUES = {"instructblip": {"processor_config.json": {"processor_class": "InstructBlipVideoProcessor"}}}
