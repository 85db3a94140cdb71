"""The shapes-world LLaVA: a closed-vocabulary word-level tokenizer, LLaVA-1.5's processor and chat template, and a
tiny ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama language model), saved with ``save_pretrained`` so
that ``models.load_model(folder)`` loads it like any Hub checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from models.tiny import LLAVA_CHAT_TEMPLATE, _image_processor_cls

from . import world

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
PATCH = 8
# The words of the chat template, of every question and answer family, and of the decoding methods' own prompts
# that fit the world (CODE puts the model's description before the question; ICD's instruction maps to <unk>).
_WORDS = (
    "USER: ASSISTANT: is there a an the in image ? . , and exactly are describe of above below left right yes no "
    + " ".join(world.NUMBER_WORDS.values())
)


def vocabulary() -> list[str]:
    words = list(dict.fromkeys(_WORDS.split() + list(world.KINDS) + list(world.PLURALS.values())
                               + list(world.COLOURS)))
    return list(SPECIAL_TOKENS) + words


def build_tokenizer():
    """Word-level tokenizer over the closed vocabulary (whitespace split, BOS prepended, unknown words -> <unk>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)


def build_processor():
    from transformers import LlavaProcessor

    size = world.IMAGE_SIZE
    image_processor = _image_processor_cls("CLIPImageProcessor")(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return LlavaProcessor(image_processor=image_processor, tokenizer=build_tokenizer(),
                          chat_template=LLAVA_CHAT_TEMPLATE, patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


@dataclass
class ModelSize:
    vision_hidden: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 320


TINY_TEST_SIZE = ModelSize(32, 1, 2, 32, 1, 2, 64)


def build_model(processor, size: ModelSize | None = None, seed: int = 0):
    size = size or ModelSize()
    from transformers import CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = processor.tokenizer
    bos, eos, pad, image = (tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>", "<image>"))
    vision = CLIPVisionConfig(hidden_size=size.vision_hidden, intermediate_size=4 * size.vision_hidden,
                              num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
                              image_size=world.IMAGE_SIZE, patch_size=PATCH, projection_dim=size.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=size.text_hidden,
                       intermediate_size=size.text_intermediate, num_hidden_layers=size.text_layers,
                       num_attention_heads=size.text_heads, num_key_value_heads=size.text_heads,
                       max_position_embeddings=256, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                       tie_word_embeddings=False)
    # vision_feature_layer=-1: with four layers, LLaVA's usual -2 would leave one unused.
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image,
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=(world.IMAGE_SIZE // PATCH) ** 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    return model


def save_checkpoint(model, processor, folder: str | os.PathLike, dtype=torch.float16) -> str:
    """Write ``model`` (cast to ``dtype``) and ``processor`` to ``folder`` with ``save_pretrained``."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    import copy

    copy.deepcopy(model).to(dtype).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---- fast inputs for training and evaluation ----------------------------------------------------------------------

class Encoder:
    """Turns (picture, question, answer) into the exact tensors the processor would give, fast.

    The prompt ids of each distinct question are taken once from the real processor path (chat template, image-token
    expansion, BOS) and cached; pixels are normalised in numpy with the image processor's own mean and std (a 48 px
    picture is not resized or cropped). ``check`` compares both paths on one example.
    """

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        ip = processor.image_processor
        self.mean = np.asarray(ip.image_mean, dtype=np.float32)
        self.std = np.asarray(ip.image_std, dtype=np.float32)
        self.scale = float(ip.rescale_factor)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        self._prompts: dict[str, list[int]] = {}
        self._blank = world.render(world.Scene([]))

    def prompt_text(self, question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompt_ids(self, question: str) -> list[int]:
        if question not in self._prompts:
            encoded = self.processor(text=self.prompt_text(question), images=[self._blank], return_tensors="pt")
            self._prompts[question] = encoded["input_ids"][0].tolist()
        return self._prompts[question]

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.eos_id]

    def pixels(self, images) -> torch.Tensor:
        array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
        array = (array * self.scale - self.mean) / self.std
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()

    def batch(self, images, questions: list[str], answers: list[str] | None = None) -> dict:
        """Right-padded ``input_ids`` (pads are never attended by the real tokens of a causal model, so no mask is
        needed), ``targets`` (the next token to predict at each position: -100 except where the answer and its EOS
        are predicted), ``pixel_values`` and ``prompt_lengths``."""
        prompts = [self.prompt_ids(q) for q in questions]
        replies = [self.answer_ids(a) for a in answers] if answers is not None else [[] for _ in questions]
        width = max(len(p) + len(r) for p, r in zip(prompts, replies))
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(prompts), width), -100, dtype=torch.long)
        for i, (p, r) in enumerate(zip(prompts, replies)):
            input_ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            if r:
                targets[i, len(p) - 1 : len(p) + len(r) - 1] = torch.tensor(r)
        return {"input_ids": input_ids, "targets": targets, "pixel_values": self.pixels(images),
                "prompt_lengths": torch.tensor([len(p) for p in prompts])}

    def check(self, image, question: str) -> None:
        """Raise if the fast path and the processor disagree on this example."""
        encoded = self.processor(text=self.prompt_text(question), images=[image], return_tensors="pt")
        fast = self.batch([image], [question])
        if encoded["input_ids"][0].tolist() != fast["input_ids"][0].tolist():
            raise AssertionError("fast prompt ids differ from the processor's")
        if not torch.allclose(encoded["pixel_values"].float(), fast["pixel_values"], atol=1e-5):
            raise AssertionError("fast pixel values differ from the processor's")

