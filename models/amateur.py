"""The amateur of Contrastive Decoding (CD) and LCD: a text-only causal language model that shares the expert LVLM's
tokenizer, run by the engine as a row group of its own (``decoding.amateur``).

An ``AmateurAdapter`` is bound to one expert: it checks that the two tokenizers agree on the ids they have in common
(refusing when they do not: a contrast of two different vocabularies compares unrelated tokens), and puts the
amateur's logits on the expert's vocabulary, truncated to the common range, ``-inf`` for the ids it lacks (the rules
give those log-prob 0, as LCD's release pads them: ``decoding.rules.amateur_log_probs``). An id the expert chose that
the amateur lacks is fed to it as its unknown token.

Which families need no separate amateur: LCD's amateur is the LVLM's own language model fed the text without the
image; where the LLM is frozen inside the LVLM (InstructBLIP) or the LVLM *is* its LLM (Gemma 3), that is the
text-only row of the same weights (``SELF_AMATEUR_FAMILIES``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .adapters.base import FamilyAdapter, RowInputs
from .loader import ModelLoadError, choose_device, choose_dtype

SELF_AMATEUR_FAMILIES = ("gemma3", "instructblip")


@dataclass
class AmateurRow(RowInputs):
    """A row the amateur model runs (``runner``), not the expert: the engine gives it a row group of its own."""

    runner: FamilyAdapter | None = None


def output_width(model) -> int:
    """How many logits a model gives per position (its output layer's rows; a padded head has more than its
    tokenizer has tokens)."""
    return int(model.get_output_embeddings().weight.shape[0])


def _tokens(tokenizer, n: int) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(n)))


def shared_vocabulary(expert_model, expert_tokenizer, amateur_model, amateur_tokenizer) -> int:
    """How many leading ids the two models share: ValueError where the tokenizers give an id of their common range
    different tokens. With tokenizers of the same size the shorter output layer decides (padded heads kept); else the
    smaller tokenizer (LLaVA-1.5's 32,002 tokens against Vicuna's 32,000: the image and pad tokens are the expert's
    own)."""
    n = min(len(expert_tokenizer), len(amateur_tokenizer))
    expert_tokens, amateur_tokens = _tokens(expert_tokenizer, n), _tokens(amateur_tokenizer, n)
    differ = [i for i, (a, b) in enumerate(zip(expert_tokens, amateur_tokens, strict=True)) if a != b]
    if differ:
        i = differ[0]
        raise ValueError(
            f"the amateur's tokenizer differs from the model's: {len(differ)} of their {n} common ids are other "
            f"tokens (id {i}: {expert_tokens[i]!r} against {amateur_tokens[i]!r}); CD and LCD need an amateur with "
            "the same tokenizer (for LLaVA-1.5, its Vicuna)"
        )
    if len(expert_tokenizer) == len(amateur_tokenizer):
        return min(output_width(expert_model), output_width(amateur_model))
    return n


class AmateurAdapter(FamilyAdapter):
    """A text-only causal LM bound to an expert: its logits on the expert's vocabulary (``shared`` leading ids kept,
    ``-inf`` after them up to the expert's ``width``)."""

    family = "text"

    def __init__(self, model, tokenizer, model_id: str, width: int, shared: int):
        super().__init__(model, None, model_id)
        self._tokenizer = tokenizer
        self.width, self.shared = width, shared
        unknown = tokenizer.unk_token_id
        self.unknown_id = int(unknown if unknown is not None else self.pad_token_id)

    @property
    def tokenizer(self):
        return self._tokenizer

    def forward(self, **inputs):
        ids = inputs["input_ids"]
        inputs["input_ids"] = torch.where(ids < self.shared, ids, torch.full_like(ids, self.unknown_id))
        out = self.model(**inputs)
        logits = out.logits[..., : self.shared]
        if self.shared < self.width:
            pad = logits.new_full((*logits.shape[:-1], self.width - self.shared), float("-inf"))
            logits = torch.cat([logits, pad], dim=-1)
        out.logits = logits
        return out


def bind_amateur(expert: FamilyAdapter, model, tokenizer, model_id: str) -> AmateurAdapter:
    """The amateur ``model`` bound to ``expert`` (ValueError where their tokenizers differ)."""
    shared = shared_vocabulary(expert.model, expert.tokenizer, model, tokenizer)
    return AmateurAdapter(model, tokenizer, model_id, output_width(expert.model), shared)


def load_amateur(expert: FamilyAdapter, source: str, *, device=None, dtype=None) -> AmateurAdapter:
    """Load a causal LM checkpoint (a Hub id or a local folder) as ``expert``'s amateur, on the expert's device and
    in its dtype unless told otherwise. ``ModelLoadError`` when it cannot be loaded, ValueError when its tokenizer is
    not the expert's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = choose_device(device or expert.device)
    dtype = choose_dtype(device, dtype or expert.dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"the amateur {source!r} could not be loaded as a causal language model: "
                             f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    return bind_amateur(expert, model, tokenizer, source)
