"""Tiny random checkpoints of the real architectures, for tests and offline demos.

``build_tiny(family, save_dir)`` writes a folder that ``load_model(save_dir)`` loads through exactly the path a user's
Hub checkpoint takes (``AutoProcessor`` + ``AutoModelForImageTextToText``): the real model classes built from small
configs with seeded random weights, a byte-level BPE tokenizer trained on the spot with the family's special tokens,
the family's real processor and image processor, and a chat template in the family's style. Nothing is downloaded.
"""

from __future__ import annotations

import os

import torch

from models._processors import processor_class

TINY_FAMILIES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "idefics3",
                 "internvl", "instructblip")

# ---- tokenizer -------------------------------------------------------------------------------------------------------

_CORPUS = """\
What is in the image? Describe the image in detail. Is there a cat in the picture? Answer with yes or no.
The image shows a small brown dog sitting on a green lawn next to a red ball.
A black cat is sleeping on a wooden table near the window.
Two people are walking along the beach at sunset while the waves roll in.
There is a white car parked on the street in front of a tall building.
A bowl of fruit with apples, bananas and oranges sits on the kitchen counter.
The man in the blue shirt is riding a bicycle down a busy road.
A woman is holding an umbrella because it is raining in the city.
The sky is blue and there are a few white clouds above the mountains.
Three children are playing football in a park with many trees.
A plate with a sandwich and a cup of coffee is on the table.
The train is arriving at the station and people are waiting on the platform.
A bird is flying over the lake near a small boat.
There is no cat in this picture, but there is a dog.
Yes, there is a person in the image. No, there is no horse in the image.
The photo was taken indoors; the room has a sofa, a lamp and a television.
On the left there is a tree, and on the right there is a house with a red roof.
The giraffe is eating leaves from the top of a tall tree in the zoo.
A pizza with cheese and tomatoes is cut into eight slices.
The street sign says stop, and a bus is turning at the corner.
Please answer the question based on the image. Give a short answer.
How many animals are there? There are two animals: a cat and a dog.
What color is the car? The car is red. What is the man doing? He is reading a book.
Where is the laptop? The laptop is on the desk beside a keyboard and a mouse.
The elephant is standing in the water and spraying itself.
A skier is going down a snowy hill under a bright sun.
The kitchen has a stove, a refrigerator, a sink and a microwave.
A group of people are sitting at a long table having dinner together.
The clock on the wall shows ten past three in the afternoon.
An airplane is flying high above the clouds.
The teddy bear is sitting on the bed next to a pillow.
A surfer is riding a big wave in the ocean.
A horse is standing in a field behind a wooden fence.
The description says the picture shows a kitchen with a table.
You are a helpful assistant. You are a confused assistant who makes mistakes. Answer briefly.
Look carefully at the picture and describe every object you can see, its color and its position.
0 1 2 3 4 5 6 7 8 9 10 first second third left right top bottom middle small large big little
"""

_CHAT_WORDS = "USER: ASSISTANT: user assistant system \n"


def _train_tokenizer(special_tokens: list[str], vocab_size: int = 640):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.splitlines() if line] + [_CHAT_WORDS]
    tok.train_from_iterator(lines * 3, trainer)
    return tok


def _wrap_tokenizer(tok, *, bos=None, eos, pad, unk=None, add_bos=False, extra=None):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if add_bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    kwargs = dict(tokenizer_object=tok, eos_token=eos, pad_token=pad, clean_up_tokenization_spaces=False)
    if bos is not None:
        kwargs["bos_token"] = bos
    if unk is not None:
        kwargs["unk_token"] = unk
    if extra:
        kwargs["extra_special_tokens"] = extra
    return PreTrainedTokenizerFast(**kwargs)


# ---- chat templates (the families' real styles) ---------------------------------------------------------------------

# LLaVA-1.5 / LLaVA-NeXT (vicuna): "<sys> USER: <image>\n<question> ASSISTANT:"
LLAVA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] + ' ' }}{%- endfor -%}"
    "{%- else -%}"
    "{{ message['role'].upper() + ': ' }}"
    "{%- for part in parts if part['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] + ' ' }}{%- endfor -%}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# LLaVA-OneVision (Qwen2's ChatML as llava-hf writes it): "<|im_start|>user\n<image>\n<question><|im_end|>\n
# <|im_start|>assistant\n" — every turn "<|im_start|>" role "\n", its images ("<image>\n" each) before its text,
# "<|im_end|>\n"; no default system turn. What the llava-onevision-qwen2-7b-si-hf chat_template.json (974bbb6) and the
# template of transformers' convert_llava_onevision_weights_to_hf.py (d058e0f) render; transformers'
# tests/models/llava_onevision/test_modeling_llava_onevision.py (032b32a) prompts the same way.
ONEVISION_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- for part in parts if part['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# Qwen2-VL / Qwen2.5-VL: default system prompt, <|vision_start|><|image_pad|><|vision_end|> in place of the image.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# Qwen3-VL: the Qwen2-VL layout without the default system turn (Qwen/Qwen3-VL-2B-Instruct's chat_template.json writes
# a system turn only when the messages hold one).
QWEN3_CHAT_TEMPLATE = QWEN_CHAT_TEMPLATE.replace(
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif -%}",
    "",
)

# InternVL (OpenGVLab/InternVL3-1B-hf's chat_template.jinja): ChatML without a default system turn, the image
# "<IMG_CONTEXT>\n" before the text (the processor expands it to <img>, the tiles' <IMG_CONTEXT> tokens, </img>).
INTERNVL_CHAT_TEMPLATE = QWEN3_CHAT_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n")

# Gemma 3 (google/gemma-3-4b-it's chat_template): <bos>, turns "<start_of_turn>user|model\n ... <end_of_turn>\n", a
# system text at the start of the first user turn, <start_of_image> where the image is, texts trimmed.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# Idefics3 (HuggingFaceTB/SmolVLM-Instruct's chat_template.json): "<|im_start|>User:<image>...<end_of_utterance>\n
# Assistant:", the role capitalised, ": " before text and ":" before an image.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{{ message['role'] | capitalize }}{{ ':' if parts[0]['type'] == 'image' else ': ' }}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- elif part['type'] == 'image' -%}{{ '<image>' }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<end_of_utterance>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)

# ---- sizes -----------------------------------------------------------------------------------------------------------

_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=2048)
_TILE = 32  # LLaVA-family base view / tile size (px)
_PATCH = 8  # LLaVA-family vision patch size -> a 4 x 4 grid per view
_PINPOINTS = [[32, 64], [64, 32], [64, 64]]
_QWEN_PATCH, _QWEN_MERGE = 8, 2  # Qwen: 16 px per merged token
_QWEN_MIN_PIXELS, _QWEN_MAX_PIXELS = 16 * 16, 64 * 64
_EOS_SCALE = 2.0  # the EOS row of the output layer is scaled so that some greedy answers end on their own
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # OpenAI CLIP's normalisation (CLIPImageProcessor's defaults)
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _image_processor_cls(name: str):
    """The torchvision image processor where torchvision is installed, else its PIL twin (same outputs, saved under
    the same ``image_processor_type``), without transformers' fallback warning."""
    import transformers
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available() and hasattr(transformers, name + "Pil"):
        return getattr(transformers, name + "Pil")
    return getattr(transformers, name)


def _clip_vision():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=_TILE, patch_size=_PATCH, projection_dim=32)


def _llama_text(vocab_size, bos, eos, pad):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, **_TEXT)


def _llava_tokenizer():
    tok = _train_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"])
    return _wrap_tokenizer(tok, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=True)


def _qwen_tokenizer(extra_tokens):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra_tokens]
    tok = _train_tokenizer(specials)
    return _wrap_tokenizer(tok, eos="<|im_end|>", pad="<|endoftext|>")


def _qwen_vl_tokenizer():
    """The Qwen-VL tokenizer and its ids of im_end, endoftext, vision_start, vision_end, image_pad, video_pad."""
    tokenizer = _qwen_tokenizer(["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                                 "<|video_pad|>"])
    return tokenizer, _ids(tokenizer, "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>",
                           "<|image_pad|>", "<|video_pad|>")


def _ids(tokenizer, *tokens):
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


# ---- per family ------------------------------------------------------------------------------------------------------

def _build_llava(family):
    from transformers import (
        LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig, LlavaNextForConditionalGeneration,
        LlavaNextProcessor, LlavaProcessor,
    )

    tokenizer = _llava_tokenizer()
    bos, eos, pad, image = _ids(tokenizer, "<s>", "</s>", "<pad>", "<image>")
    common = dict(vision_config=_clip_vision(), text_config=_llama_text(len(tokenizer), bos, eos, pad),
                  image_token_index=image, vision_feature_select_strategy="default", vision_feature_layer=-2)
    size = {"shortest_edge": _TILE}
    crop = {"height": _TILE, "width": _TILE}
    proc_kwargs = dict(patch_size=_PATCH, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    if family == "llava":
        config = LlavaConfig(image_seq_length=(_TILE // _PATCH) ** 2, **common)
        model_cls = LlavaForConditionalGeneration
        image_processor = _image_processor_cls("CLIPImageProcessor")(size=size, crop_size=crop)
        processor = LlavaProcessor(
            image_processor=image_processor, tokenizer=tokenizer,
            chat_template=LLAVA_CHAT_TEMPLATE, **proc_kwargs,
        )
    else:
        config = LlavaNextConfig(image_grid_pinpoints=_PINPOINTS, image_seq_length=(_TILE // _PATCH) ** 2, **common)
        model_cls = LlavaNextForConditionalGeneration
        image_processor = _image_processor_cls("LlavaNextImageProcessor")(
            size=size, crop_size=crop, image_grid_pinpoints=_PINPOINTS
        )
        processor = LlavaNextProcessor(
            image_processor=image_processor, tokenizer=tokenizer,
            chat_template=LLAVA_CHAT_TEMPLATE, **proc_kwargs,
        )
    return config, model_cls, processor, dict(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)


def _build_llava_onevision(family):
    from transformers import (
        LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor, Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = _qwen_tokenizer(["<image>", "<video>"])
    eos, pad, image, video = _ids(tokenizer, "<|im_end|>", "<|endoftext|>", "<image>", "<video>")
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=_TILE, patch_size=_PATCH)
    text = Qwen2Config(vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=pad, bos_token_id=None, **_TEXT)
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=image, video_token_index=video,
        image_grid_pinpoints=_PINPOINTS, vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    image_processor = _image_processor_cls("LlavaOnevisionImageProcessor")(
        size={"height": _TILE, "width": _TILE}, image_grid_pinpoints=_PINPOINTS,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    # Images only: without torchvision there can be no video processor (see models/_processors.py).
    processor = processor_class(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=ONEVISION_CHAT_TEMPLATE,
        num_image_tokens=(_TILE // _PATCH) ** 2, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return config, LlavaOnevisionForConditionalGeneration, processor, dict(eos_token_id=eos, pad_token_id=pad)


def _build_qwen(family):
    if family == "qwen3_vl":
        return _build_qwen3_vl()
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor

        vision = dict(depth=2, embed_dim=32, hidden_size=_TEXT["hidden_size"], num_heads=2, mlp_ratio=2)
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model
        from transformers import Qwen2_5_VLProcessor as Processor

        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=_TEXT["hidden_size"],
                      window_size=2 * _QWEN_PATCH * _QWEN_MERGE, fullatt_block_indexes=[1])
    vision.update(patch_size=_QWEN_PATCH, spatial_merge_size=_QWEN_MERGE, temporal_patch_size=2, in_channels=3)

    tokenizer, (eos, pad, start, end, image, video) = _qwen_vl_tokenizer()
    head_half = _TEXT["hidden_size"] // _TEXT["num_attention_heads"] // 2
    mrope = [head_half - 2 * (head_half * 3 // 8), head_half * 3 // 8, head_half * 3 // 8]
    text = dict(vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=pad, bos_token_id=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope}, **_TEXT)
    config = Config(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                    vision_start_token_id=start, vision_end_token_id=end)
    image_processor = _image_processor_cls("Qwen2VLImageProcessor")(
        min_pixels=_QWEN_MIN_PIXELS, max_pixels=_QWEN_MAX_PIXELS, patch_size=_QWEN_PATCH, merge_size=_QWEN_MERGE,
        temporal_patch_size=2,
    )
    processor = processor_class(Processor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE
    )
    return config, Model, processor, dict(eos_token_id=eos, pad_token_id=pad)


def _build_qwen3_vl():
    """Qwen3-VL: Qwen2-VL's patch layout and M-RoPE (interleaved over the head's frequencies), a vision tower with
    learned position embeddings and DeepStack (features of the vision layers in ``deepstack_visual_indexes`` added to
    the language model's first layers at the image tokens). Published: patch 16, merge 2, image mean/std 0.5
    (Qwen/Qwen3-VL-2B-Instruct preprocessor_config.json); here patch 8 as the other tiny Qwens."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tokenizer, (eos, pad, start, end, image, video) = _qwen_vl_tokenizer()
    head_dim = _TEXT["hidden_size"] // _TEXT["num_attention_heads"]
    half = head_dim // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    text = dict(vocab_size=len(tokenizer), pad_token_id=pad, head_dim=head_dim,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope,
                                 "mrope_interleaved": True}, **_TEXT)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=_TEXT["hidden_size"],
                  patch_size=_QWEN_PATCH, spatial_merge_size=_QWEN_MERGE, temporal_patch_size=2, in_channels=3,
                  num_position_embeddings=64, deepstack_visual_indexes=[0])
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                           vision_start_token_id=start, vision_end_token_id=end)
    image_processor = _image_processor_cls("Qwen2VLImageProcessor")(
        min_pixels=_QWEN_MIN_PIXELS, max_pixels=_QWEN_MAX_PIXELS, patch_size=_QWEN_PATCH, merge_size=_QWEN_MERGE,
        temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = processor_class(Qwen3VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN3_CHAT_TEMPLATE
    )
    return config, Qwen3VLForConditionalGeneration, processor, dict(eos_token_id=eos, pad_token_id=pad)


def _build_gemma3(family):
    """Gemma 3: a SigLIP tower whose patch grid is average-pooled to ``mm_tokens_per_image`` tokens (here 8 x 8
    patches of 4 px pooled 2 x 2 to 4 x 4; published: 896 px, patch 14, 64 x 64 pooled to 16 x 16 = 256,
    google/gemma-3-4b-it config.json), a Gemma 3 text model with sliding and global layers (sliding window 1024
    there too: longer than any tiny prompt, so the engine's crop and fork never meet a full window), image
    mean/std 0.5, generation ending on <eos> or <end_of_turn> (its generation_config.json: [1, 106])."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, SiglipVisionConfig

    tok = _train_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                            "<start_of_image>", "<end_of_image>", "<image_soft_token>"])
    tokenizer = _wrap_tokenizer(tok, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True,
                                extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                       "image_token": "<image_soft_token>"})
    pad, eos, bos, end_turn, boi, eoi, image = _ids(tokenizer, "<pad>", "<eos>", "<bos>", "<end_of_turn>",
                                                    "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    tokens_per_image = 16
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=_TILE, patch_size=_TILE // 8)
    head_dim = _TEXT["hidden_size"] // _TEXT["num_attention_heads"]
    text = dict(vocab_size=len(tokenizer), head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=1024,
                layer_types=["sliding_attention", "full_attention"], pad_token_id=pad, eos_token_id=eos,
                bos_token_id=bos, **_TEXT)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens_per_image,
                          boi_token_index=boi, eoi_token_index=eoi, image_token_index=image)
    image_processor = _image_processor_cls("Gemma3ImageProcessor")(
        size={"height": _TILE, "width": _TILE}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=tokens_per_image)
    return config, Gemma3ForConditionalGeneration, processor, dict(
        bos_token_id=bos, eos_token_id=[eos, end_turn], pad_token_id=pad)


def _build_idefics3(family):
    """Idefics3: a SigLIP-like tower on 32-px frames of 4-px patches (8 x 8), pixel-shuffled by 2 to 4 x 4 = 16
    tokens a frame; images resized to a longest edge of 2 frames and split (published, HuggingFaceM4/Idefics3-8B-
    Llama3: 364-px frames of 14-px patches, scale factor 2, 169 tokens, longest edge 4 x 364), a Llama text model,
    image mean/std 0.5."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    tags = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = _train_tokenizer(["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                            "<image>", "<global-img>", *tags])
    tokenizer = _wrap_tokenizer(tok, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|endoftext|>")
    bos, eos, pad, image = _ids(tokenizer, "<|im_start|>", "<end_of_utterance>", "<|endoftext|>", "<image>")
    patch, scale = _TILE // 8, 2
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=_TILE,
                  patch_size=patch)
    config = Idefics3Config(vision_config=vision, text_config=_llama_text(len(tokenizer), bos, eos, pad),
                            image_token_id=image, scale_factor=scale)
    image_processor = _image_processor_cls("Idefics3ImageProcessor")(
        size={"longest_edge": 2 * _TILE}, max_image_size={"longest_edge": _TILE}, do_image_splitting=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=(_TILE // patch) ** 2 // scale**2,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE)
    return config, Idefics3ForConditionalGeneration, processor, dict(bos_token_id=bos, eos_token_id=eos,
                                                                     pad_token_id=pad)


def _build_internvl(family):
    """InternVL: an InternViT-like tower on 32-px tiles of 4-px patches (8 x 8), pixel-shuffled by 0.5 to 4 x 4 = 16
    tokens a tile; 1 to 4 tiles and a thumbnail (published, OpenGVLab/InternVL3-1B-hf: 448-px tiles of 14-px
    patches, downsample ratio 0.5, 256 tokens, up to 12 tiles, ImageNet mean/std); a Qwen2 text model and its
    ChatML template (no default system turn), the image written ``<IMG_CONTEXT>\n`` before the text."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, Qwen2Config

    tok = _train_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
                            "<video>"])
    tokenizer = _wrap_tokenizer(tok, eos="<|im_end|>", pad="<|endoftext|>",
                                extra={"start_image_token": "<img>", "end_image_token": "</img>",
                                       "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    eos, pad, image = _ids(tokenizer, "<|im_end|>", "<|endoftext|>", "<IMG_CONTEXT>")
    patch, tokens = _TILE // 8, 16
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=[_TILE, _TILE], patch_size=[patch, patch])
    text = Qwen2Config(vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=pad, bos_token_id=None, **_TEXT)
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=image, image_seq_length=tokens,
                            downsample_ratio=0.5)
    image_processor = _image_processor_cls("GotOcr2ImageProcessor")(
        size={"height": _TILE, "width": _TILE}, crop_to_patches=True, min_patches=1, max_patches=4,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    processor = processor_class(InternVLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                   image_seq_length=tokens, chat_template=INTERNVL_CHAT_TEMPLATE)
    return config, InternVLForConditionalGeneration, processor, dict(eos_token_id=eos, pad_token_id=pad)


def _qformer_tokenizer():
    """The Q-Former's BERT WordPiece tokenizer (bert-base-uncased's normaliser, pre-tokenizer, ``[CLS] $A [SEP]``),
    its vocabulary the corpus's words and characters (word-initial and "##" continuations). Written out, not trained:
    the WordPiece trainer breaks ties differently run to run, which made two builds of one seed differ."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = sorted({word for line in _CORPUS.splitlines()
                    for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))})
    chars = sorted({char for word in words for char in word})
    pieces = [*specials, *chars, *(f"##{char}" for char in chars), *(word for word in words if len(word) > 1)]
    tok = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", clean_up_tokenization_spaces=False)


def _build_instructblip(family):
    """InstructBLIP with a Vicuna (Llama) language model: a ViT on 32-px images of 8-px patches (16 patches and CLS),
    a 2-layer Q-Former (cross-attention every 2nd layer) whose 8 learned queries read the image and the prompt (in its
    own BERT tokenizer), and a linear ``language_projection`` into the language model, where the 8 query outputs sit
    as ``<image>`` tokens before ``<s>``. Published (the Salesforce checkpoints' geometry, as transformers 5.24's
    ``InstructBlipVisionConfig`` / ``InstructBlipQFormerConfig`` / ``InstructBlipConfig`` defaults give it; LAVIS's
    ``blip2_vicuna_instruct``): 224-px images, patch 14, a 39-layer ViT-g, a 12-layer BERT-base Q-Former with
    cross-attention every 2nd layer, 32 query tokens, BlipImageProcessor with CLIP's mean/std; Vicuna-7B / 13B. No
    chat template, as there: the processor's constructor takes none, and the adapter writes the plain prompt
    (``InstructBlipAdapter``). The ViT's own initializer_range (1e-10 by default) is raised to 0.02: near-zero
    weights would hide the image."""
    from transformers import (
        InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor,
        InstructBlipQFormerConfig, InstructBlipVisionConfig,
    )

    tokenizer = _llava_tokenizer()  # Vicuna's: <s> first, </s> ends, <image> the query tokens' placeholder
    bos, eos, pad, image = _ids(tokenizer, "<s>", "</s>", "<pad>", "<image>")
    qformer_tokenizer = _qformer_tokenizer()
    queries = 8
    vision = InstructBlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=_TILE, patch_size=_PATCH, initializer_range=0.02)
    qformer = InstructBlipQFormerConfig(vocab_size=len(qformer_tokenizer), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, cross_attention_frequency=2,
                                        pad_token_id=qformer_tokenizer.pad_token_id)
    config = InstructBlipConfig(vision_config=vision, qformer_config=qformer,
                                text_config=_llama_text(len(tokenizer), bos, eos, pad), num_query_tokens=queries,
                                image_token_index=image)
    image_processor = _image_processor_cls("BlipImageProcessor")(
        size={"height": _TILE, "width": _TILE}, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    processor = InstructBlipProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                      qformer_tokenizer=qformer_tokenizer, num_query_tokens=queries)
    return config, InstructBlipForConditionalGeneration, processor, dict(bos_token_id=bos, eos_token_id=eos,
                                                                         pad_token_id=pad)


# Matrices the model's own init leaves at zero, which in a random model would hide the image entirely: Gemma 3's
# image projection (``Gemma3PreTrainedModel._init_weights`` zeroes ``mm_input_projection_weight``; trained
# checkpoints load theirs), and InstructBLIP's query tokens (zeroed by ``InstructBlipPreTrainedModel._init_weights``:
# every query would read the image alike).
_ZERO_INIT = {"gemma3": ("model.multi_modal_projector.mm_input_projection_weight",),
              "instructblip": ("query_tokens",)}

_BUILDERS = {
    "llava": _build_llava,
    "llava_next": _build_llava,
    "llava_onevision": _build_llava_onevision,
    "qwen2_vl": _build_qwen,
    "qwen2_5_vl": _build_qwen,
    "qwen3_vl": _build_qwen,
    "gemma3": _build_gemma3,
    "idefics3": _build_idefics3,
    "internvl": _build_internvl,
    "instructblip": _build_instructblip,
}


def build_tiny(family: str, save_dir: str | os.PathLike, seed: int = 0) -> str:
    """Build a tiny random ``family`` checkpoint into ``save_dir`` and return the folder's path.

    family: one of ``TINY_FAMILIES``.
    The weights are random (seeded, the global RNG is left untouched; the EOS row of the output layer is scaled x2 so
    that some answers end on their own), so answers are gibberish, but every shape, token and code path is the real
    family's.
    """
    if family not in _BUILDERS:
        raise ValueError(f"Unknown tiny family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    return save_built(family, _BUILDERS[family](family), save_dir, seed)


def save_built(family: str, built: tuple, save_dir: str | os.PathLike, seed: int) -> str:
    """Instantiate a builder's ``(config, model class, processor, special token ids)`` with seeded random weights
    (the global RNG left untouched; ``_ZERO_INIT`` matrices drawn, the EOS rows scaled by ``_EOS_SCALE``) and save
    model, generation config and processor into ``save_dir``; returns the folder's path."""
    from transformers import GenerationConfig

    save_dir = os.fspath(save_dir)
    config, model_cls, processor, special_ids = built
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).eval()
        with torch.no_grad():
            for name in _ZERO_INIT.get(family, ()):  # drawn like the other matrices, from the same seeded stream
                model.get_parameter(name).normal_(0.0, config.initializer_range)
    with torch.no_grad():  # every id that ends an answer: the generation config's and the tokenizer's EOS
        configured = special_ids["eos_token_id"]
        ends = set(configured if isinstance(configured, list) else [configured]) | {processor.tokenizer.eos_token_id}
        model.get_output_embeddings().weight[sorted(ends)] *= _EOS_SCALE
    model.generation_config = GenerationConfig(**special_ids)
    os.makedirs(save_dir, exist_ok=True)
    model.save_pretrained(save_dir)
    processor.save_pretrained(save_dir)
    return save_dir


# ---- full-size architectures with random weights (benchmarks) ------------------------------------------------------

def random_llava_1_5_7b(device: str | torch.device = "cuda", dtype: torch.dtype = torch.float16, seed: int = 0):
    """LLaVA-1.5-7B's architecture (llava-hf/llava-1.5-7b-hf's published config: CLIP ViT-L/14-336 + Vicuna-7B,
    576 image tokens) with random weights, in memory, wrapped in its adapter: what speed benchmarks need without the
    14 GB download. The tokenizer is the tiny one trained on the spot (its ids all fall inside the 32064-token vocab).
    Weights are drawn from a normal of std 0.02 so activations stay finite in fp16.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from models.adapters import LlavaAdapter

    tokenizer = _llava_tokenizer()
    bos, eos, pad = _ids(tokenizer, "<s>", "</s>", "<pad>")
    tokenizer_image = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    # The tiny tokenizer's "<image>" id stands for LLaVA's image token here; the config names it.
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer_image,
                         vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=576,
                         projector_hidden_act="gelu")
    image_processor = _image_processor_cls("CLIPImageProcessor")(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    )
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=LLAVA_CHAT_TEMPLATE,
                               patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).to(dtype).eval()
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    return LlavaAdapter(model, processor, model_id="random:llava-1.5-7b")
