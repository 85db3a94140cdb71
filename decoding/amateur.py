"""CD's and LCD's amateur: which model it is for an expert, and the row it reads.

The amateur is a second model with its own rows and KV cache: an ``AmateurRow`` names the model that runs it, and the
engine gives those rows a row group of their own, stepped in the same engine step as the expert's rows, each fed its
side's chosen token (``decoding.engine``). Its prompt is the *expert's* chat-template prompt with the image tokens
taken out, as LCD feeds its language model (``avshalomman/lcd@30f8bbf lcd.py`` L46–52 drops id 32000, llava-hf's
image token; here every image-token position the adapter names), not the amateur's own template.

Where an expert finds its amateur, first found first:

1. the one the caller attached: ``use_amateur(model, "lmsys/vicuna-7b-v1.5")`` (the library; eval's ``--amateur``);
2. the one shipped beside the model: ``<model folder>/amateur/`` (the embedded shapes-world model ships one, trained
   by ``python -m eval.amateur_train``), or for a Hub id ``$CD_AMATEUR_HOME/<id with / as -->``, found as ECD's
   detector is (``decoding.detector.trained_folder``). The app uses only these: a visitor never names a model.

LCD on the families whose LVLM is its own LLM (``models.amateur.SELF_AMATEUR_FAMILIES``: InstructBLIP, Gemma 3) uses
the text-only row of the same weights instead (``amateur`` "self"), as its spec says; it can be asked for on any
family.
"""

from __future__ import annotations

import os
import weakref

import torch

from models.adapters.base import FamilyAdapter, RowInputs
from models.amateur import SELF_AMATEUR_FAMILIES, AmateurAdapter, AmateurRow, load_amateur
from models.loader import ModelLoadError

from .detector import model_source, shown_folder, shown_id, trained_folder

FOLDER = "amateur"
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # expert model -> (source, AmateurAdapter)


class AmateurMissing(ValueError):
    """The model has no amateur (none attached, none shipped beside it), or the one found cannot serve."""


def use_amateur(adapter: FamilyAdapter, source: str, *, device=None, dtype=None) -> AmateurAdapter:
    """Load the causal LM ``source`` (a Hub id or a folder) as ``adapter``'s amateur for CD and LCD, from now on.
    ValueError when its tokenizer is not the model's; ``ModelLoadError`` when it cannot be loaded."""
    amateur = load_amateur(adapter, source, device=device, dtype=dtype)
    _ATTACHED[adapter.model] = (source, amateur)
    return amateur


def amateur_folder(adapter: FamilyAdapter) -> str:
    """Where the amateur shipped for this model lives (``<model folder>/amateur``)."""
    return trained_folder(model_source(adapter), FOLDER)


def amateur_for(adapter: FamilyAdapter, method: str) -> AmateurAdapter:
    """The amateur attached to this model, else the one shipped beside it (loaded once); ``AmateurMissing`` naming
    what to do when there is none."""
    attached = _ATTACHED.get(adapter.model)
    if attached is not None:
        return attached[1]
    folder = amateur_folder(adapter)
    shown = shown_folder(model_source(adapter), FOLDER)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        self_note = " (or, for LCD, amateur=self: the model's own text-only row)"
        raise AmateurMissing(
            f"{method} needs an amateur language model with this model's tokenizer, and {shown_id(adapter.model_id)} "
            f"has none: attach one with decoding.use_amateur(model, ID) or eval's --amateur ID (for LLaVA-1.5, "
            f"lmsys/vicuna-7b-v1.5), or ship one in {shown}{self_note}"
        )
    try:
        amateur = load_amateur(adapter, folder)
    except (ModelLoadError, ValueError) as error:
        message = str(error).replace(repr(folder), shown).replace(folder, shown)  # no server path in a refusal
        raise AmateurMissing(f"the amateur in {shown} cannot serve {method}: {message}") from None
    _ATTACHED[adapter.model] = (folder, amateur)
    return amateur


def amateur_source(adapter: FamilyAdapter) -> str:
    """What the trace shows as the amateur of this model (no server path)."""
    attached = _ATTACHED.get(adapter.model)
    if attached is None:
        return "none"
    source = attached[0]
    return shown_folder(model_source(adapter), FOLDER) if source == amateur_folder(adapter) else shown_id(source)


def uses_own_text_row(adapter: FamilyAdapter, choice: int) -> bool:
    """Whether LCD's ``amateur`` choice (0 the model's amateur, or its own text-only row on the families whose LVLM
    is its LLM; 1 always its own text-only row; 2 always the separate amateur) means the model's own text-only row."""
    return choice == 1 or (choice == 0 and adapter.family in SELF_AMATEUR_FAMILIES)


def check_amateurs(adapter: FamilyAdapter, methods: list[tuple[str, dict]]) -> None:
    """Before a long run (eval): ``AmateurMissing`` if a method of ``methods`` (name, resolved parameters) needs a
    separate amateur this model does not have."""
    for name, params in methods:
        if name == "cd" or (name == "lcd" and not uses_own_text_row(adapter, params["amateur"])):
            amateur_for(adapter, name.upper())


def text_prompt_ids(original: RowInputs) -> torch.Tensor:
    """The expert's prompt ids (1, L') with every image-token position removed: what LCD's language model reads."""
    keep = torch.ones(original.length, dtype=torch.bool)
    keep[original.image_token_positions.cpu()] = False
    return original.input_ids[:, keep]


def amateur_row(amateur: AmateurAdapter, original: RowInputs, whole_prompt: bool = True) -> AmateurRow:
    """The amateur's row: the expert's prompt without its image tokens, or only its last token (``whole_prompt``
    False: CD's ``--ignore_prefix yes``, ``XiangLi1999/ContrastiveDecoding@170e914 run_generation.py`` L277–300, the
    amateur then reads the prompt's last token and the continuation)."""
    ids = text_prompt_ids(original)
    if not whole_prompt:
        ids = ids[:, -1:]
    positions = torch.arange(ids.shape[-1], dtype=torch.long)[None]
    return AmateurRow(ids, positions, runner=amateur)


def untrained_amateur(adapter: FamilyAdapter, seed: int = 0) -> str:
    """A one-layer Llama of random weights with the model's tokenizer and output width, saved where CD and LCD look
    for this model's amateur; returns the folder. What the engine tests run CD and LCD with on tiny models."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.amateur import output_width

    tokenizer = adapter.tokenizer
    config = LlamaConfig(vocab_size=output_width(adapter.model), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=adapter.max_length or 2048, pad_token_id=adapter.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    folder = amateur_folder(adapter)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
