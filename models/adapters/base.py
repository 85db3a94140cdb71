"""The contract between one model family and the decoding engine.

Everything that differs between LVLM families lives behind this class: how a chat prompt is written with and without
the image, which tokens are image tokens and on what patch grid they lie, how a row's position ids are computed
(plain 1-D or Qwen2-VL's M-RoPE), how several rows' pixel tensors are put into one batch, and how the preprocessed
pixel tensor is seen as images (so that augmentations can act on it) and put back.

`decoding/` only talks to a model through an adapter; it never looks at the family.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from PIL import Image


@dataclass
class RowInputs:
    """One decoding row's prompt, unbatched (batch dimension 1) and unpadded.

    input_ids:      (1, L) prompt token ids.
    position_ids:   (1, L), or (3, 1, L) for M-RoPE families; the engine continues them with ``max + 1`` per step.
    token_kwargs:   other per-token tensors of shape (1, L) the model needs (e.g. ``mm_token_type_ids``);
                    the engine left-pads them with zeros.
    vision_kwargs:  the pixel tensors and their metadata for this row (``pixel_values``, ``image_sizes``,
                    ``image_grid_thw`` ...); empty for a text-only row.
    image_token_positions: (N,) indices into the row of the image tokens whose attention is shown (and which
                    PAI, SID, AvisC, OPERA and ECD act on), in row-major order over ``image_grid`` where there is one;
                    empty for a text-only row.
    image_grid:     (rows, cols) of those N tokens, ``rows * cols == N``; None for a text-only row, and for an image
                    row whose image tokens have no place in the picture (InstructBLIP's Q-Former queries: each reads
                    the whole image), which then has no attention heatmap, only its share of attention on them.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    token_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    vision_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    image_token_positions: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    image_grid: tuple[int, int] | None = None

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[-1])

    @property
    def has_image(self) -> bool:
        return bool(self.vision_kwargs)


class FamilyAdapter:
    """Base class of the per-family adapters. Subclasses set ``family`` and override what differs.

    An adapter wraps a loaded model and its processor. Construct through ``models.load_model`` (or a subclass
    directly in tests).
    """

    family: str = "base"
    # The processor class to load for this family whatever the checkpoint's processor_config.json names (None: the
    # one it names, through AutoProcessor); see InstructBlipAdapter.
    processor_class: str | None = None

    def __init__(self, model, processor, model_id: str = ""):
        self.model = model
        self.processor = processor
        self.model_id = model_id

    # ---- prompts -------------------------------------------------------------------------------------------------
    def build_row(
        self,
        question: str,
        image: Image.Image | None = None,
        *,
        system: str | None = None,
        context: str | None = None,
    ) -> RowInputs:
        """Chat-templated prompt for one row, with the generation prompt appended.

        image:   the raw image, or None for a text-only prompt (M3ID's branch, self-augmentation's choice).
        system:  an optional system instruction (ICD's disturbance instruction).
        context: text placed before the question, in the user turn (CODE's description in place of the image).
        """
        raise NotImplementedError

    # ---- pixels --------------------------------------------------------------------------------------------------
    def batch_vision_kwargs(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Merge the ``vision_kwargs`` of several image rows (in row order) into one batch's keyword arguments."""
        raise NotImplementedError

    def pixel_views(self, vision_kwargs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The preprocessed (normalised) pixels of one row as image-shaped tensors, each (3, H, W).

        One view for single-image families; LLaVA-NeXT-like families give the base view and the high-resolution canvas.
        """
        raise NotImplementedError

    def with_pixel_views(self, vision_kwargs: dict[str, torch.Tensor], views: list[torch.Tensor]) -> dict:
        """Inverse of ``pixel_views``: a copy of ``vision_kwargs`` whose pixels are rebuilt from (changed) views."""
        raise NotImplementedError

    @property
    def image_mean(self) -> tuple[float, float, float]:
        """Per-channel mean the processor normalises with (to un-normalise for colour inversion)."""
        return tuple(self.processor.image_processor.image_mean)

    @property
    def image_std(self) -> tuple[float, float, float]:
        return tuple(self.processor.image_processor.image_std)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the model's base input view; RITUAL's resized crop goes back to this size."""
        raise NotImplementedError

    def image_grid_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """(left, top, right, bottom), in the pixels of a picture of ``size`` (width, height): the part of it that
        ``RowInputs.image_grid`` lies over. The whole picture, unless the family's preprocessing crops it."""
        width, height = size
        return (0.0, 0.0, float(width), float(height))

    def image_projector(self):
        """The module that maps the vision tower's features into the language model's embeddings (DCD trains copies
        of it), or None where the family has none apart from its vision tower. LLaVA-style families:
        ``multi_modal_projector``."""
        return getattr(getattr(self.model, "model", None), "multi_modal_projector", None)

    # Where a vision encoder's layers are found: under a module of one of these names, in every family supported
    # (LLaVA-style ``vision_tower.encoder.layers``, InternVL's ``encoder.layer``, Qwen-VL's ``visual.blocks``,
    # Idefics3's and InstructBLIP's ``vision_model.encoder.layers``).
    VISION_MODULE_NAMES = ("vision_tower", "visual", "vision_model")

    def vision_encoder_layers(self) -> torch.nn.ModuleList | None:
        """The vision encoder's transformer layers, each with its ``mlp`` (VTI steers their outputs), in order; None
        where none is found. The longest module list under the vision tower whose every member has an ``mlp``
        (Qwen3-VL's DeepStack mergers have none)."""
        found = None
        for name, module in self.model.named_modules():
            if not isinstance(module, torch.nn.ModuleList) or not len(module):
                continue
            if not set(name.split(".")) & set(self.VISION_MODULE_NAMES):
                continue
            if all(isinstance(getattr(layer, "mlp", None), torch.nn.Module) for layer in module):
                if found is None or len(module) > len(found):
                    found = module
        return found

    # ---- tokens --------------------------------------------------------------------------------------------------
    @property
    def max_length(self) -> int | None:
        """The longest sequence (prompt + answer) the language model takes, from its config; None if it says none."""
        config = self.model.config
        config = getattr(config, "text_config", None) or config
        value = getattr(config, "max_position_embeddings", None)
        return int(value) if value else None

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def eos_token_ids(self) -> list[int]:
        """Every id that ends an answer: the tokenizer's EOS first (the token the model was trained to end with, and
        what a training target ends with), then the generation config's EOS ids not already in. Both count because a
        published checkpoint's two files need not agree: instructblip-vicuna-7b's generation_config.json says 1 (<s>)
        while its tokenizer, and the authors' code, end answers with </s> (2); Qwen2-VL's and Gemma 3's generation
        configs add a second id (<|endoftext|>, <end_of_turn>) to the tokenizer's."""
        ids = []
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (self.tokenizer.eos_token_id, configured):
            for token in (value if isinstance(value, (list, tuple)) else [value]):
                if token is not None and int(token) >= 0 and int(token) not in ids:
                    ids.append(int(token))
        return ids

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            eos = self.eos_token_ids
            pad = eos[0] if eos else 0
        return int(pad)

    def decode(self, token_ids) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def token_piece(self, token_id: int) -> str:
        """The text of one token as it appears inside an answer (spaces kept).

        Decoded after an anchor token and the anchor's text taken off: a SentencePiece tokenizer's decoder drops the
        leading space of a text's first piece (Llama's and Mistral's ``Strip(" ", 1, 0)``, a ``Metaspace`` decoder's
        first "▁"), so "▁cat" alone decodes to "cat" and a candidate list or a yes/no piece would lose its space."""
        token_id = int(token_id)
        if self._piece_anchor is not None:
            anchor, alone = self._piece_anchor
            both = self.tokenizer.decode([anchor, token_id], skip_special_tokens=False)
            if alone and both.startswith(alone):
                return both[len(alone):]
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    @functools.cached_property
    def _piece_anchor(self) -> tuple[int, str] | None:
        """A special token to decode pieces after (the BOS, EOS or pad token: its text is its own, and nothing merges
        with it) and its text, or None where the tokenizer has none. Found once: every candidate of every step's
        trace is a piece."""
        tokenizer = self.tokenizer
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokenizer, name, None)
            if isinstance(value, int):
                return value, tokenizer.decode([value], skip_special_tokens=False)
        return None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """The model's compute dtype (what floating inputs such as ``pixel_values`` should be cast to)."""
        return self.model.dtype

    def to_model(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A copy of ``tensors`` on the model's device, floating-point ones cast to the model's dtype."""
        return {
            k: v.to(self.device, dtype=self.dtype if v.is_floating_point() else None) for k, v in tensors.items()
        }

    # ---- running the model ---------------------------------------------------------------------------------------
    def forward(self, **inputs):
        """One forward of the model as ``decoding`` runs it, and its language model's output (``logits``, ``cache``,
        and ``hidden_states`` / ``attentions`` when asked for).

        inputs: the batch's per-token tensors (``input_ids``, ``attention_mask``, ``position_ids``, the rows'
        ``token_kwargs``), the merged ``vision_kwargs`` in a forward that reads the image (a prefill; none in a cached
        step, which feeds only new tokens), and the run's options (``cache``, ``use_cache``, ``logits_to_keep``,
        ``output_attentions``, ``output_hidden_states``, ``lab_control``, ``return_dict``). Default: the model itself,
        which skips its vision tower when no pixels are given.
        """
        return self.model(**inputs)

    def check_one_layer_enhancement(self, layer: int) -> None:
        """Refuse (ValueError naming the family) a model whose language model cannot take ONLY's side path: it needs
        decoder layers with an attention ``self_attn.o_proj`` at ``layer`` and, at the last, a LLaMA-shaped block
        (``input_layernorm``, ``post_attention_layernorm``, ``mlp``, and no further norms around them, as Gemma's
        ``pre_feedforward_layernorm``), and the decoder's final ``norm``."""
        decoder = self.model.get_decoder()
        layers = getattr(decoder, "layers", None)
        why = None
        if not isinstance(layers, torch.nn.ModuleList) or not isinstance(getattr(decoder, "norm", None),
                                                                        torch.nn.Module):
            why = "its language model names no decoder layers and final norm"
        elif not 0 <= layer < len(layers) or not hasattr(getattr(layers[layer], "self_attn", None), "o_proj"):
            why = f"its decoder layer {layer} has no attention with an output projection"
        elif not all(isinstance(getattr(layers[-1], n, None), torch.nn.Module)
                     for n in ("input_layernorm", "post_attention_layernorm", "mlp")) or any(
                hasattr(layers[-1], n) for n in ("pre_feedforward_layernorm", "post_feedforward_layernorm")):
            why = "its last decoder layer is not LLaMA-shaped (one norm before attention, one before the MLP)"
        if why:
            raise ValueError(f"ONLY cannot run on the {self.family} family: {why}")

    def one_layer_enhanced_hidden(self, last_layer_input: torch.Tensor, enhanced_attention: torch.Tensor,
                                  final_hidden: torch.Tensor, residual_weight: float, final_weight: float):
        """ONLY's "textually enhanced" last hidden state (before ``lm_head``), from the edited layer's attention
        output ``cd`` carried through the last decoder layer's norms and MLP alone: ``r = residual_weight · h_in +
        input_layernorm(cd)``, ``r += mlp(post_attention_layernorm(r))``, ``norm(r) + final_weight · h_final``
        (``final_hidden``: the model's own normed last hidden state). All (rows, hidden). Source: ``zifuwan/ONLY@109bffe
        transformers/.../llama/modeling_llama.py`` L656-662 and L993, ``experiments/llava/model/language_model/
        llava_llama.py`` L116; LLaMA-shaped layers only (``check_one_layer_enhancement``)."""
        decoder = self.model.get_decoder()
        last = decoder.layers[-1]
        r = residual_weight * last_layer_input + last.input_layernorm(enhanced_attention)
        r = r + last.mlp(last.post_attention_layernorm(r))
        return decoder.norm(r) + final_weight * final_hidden

    @classmethod
    def check_config(cls, config) -> None:
        """Refuse (ValueError, saying why) a checkpoint of this family that the adapter cannot run, before its weights
        are loaded; ``config`` is the checkpoint's. Default: every one runs."""
