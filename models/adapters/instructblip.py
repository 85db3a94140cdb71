"""InstructBLIP with a decoder-only language model (Vicuna: ``Salesforce/instructblip-vicuna-7b`` / ``-13b``).

Layout: one square view (``pixel_values`` (1, 3, S, S); 224 px published) through a ViT; ``num_query_tokens`` learned
queries (32) read its patches in the Q-Former, which also reads the prompt in its own BERT tokenizer
(``qformer_input_ids``: the instruction-aware queries of InstructBLIP); ``language_projection`` maps the query outputs
into the language model, where they fill ``num_query_tokens`` ``<image>`` tokens at the very start of the prompt,
before the BOS token (``</s>`` in the published tokenizer; ``InstructBlipProcessor``).

Prompt: plain text, no chat template: the processor's constructor takes none, and LAVIS's ``blip2_vicuna_instruct``
and transformers' own example (``InstructBlipForConditionalGeneration.forward``'s docstring) feed the instruction as
it is (VCD's InstructBLIP POPE script: the question and its answer-format suffix, nothing else). A system
text (ICD's instruction) and a context (CODE's description) go before the question: ``"<system> <context>\\n\\n
<question>"``, and the answer follows the question directly. The Q-Former reads the same text, cut to its
``max_position_embeddings`` (BERT's 512) as LAVIS cuts it (to 128).

Quirks, handled through the adapter's hooks:

- ``InstructBlipForConditionalGeneration.forward`` encodes the image at every call (``get_image_features`` unless it
  is given ``mm_encoder_outputs``), and has no path without pixels. ``forward`` runs the model itself where the batch
  feeds the image (a prefill) and its ``language_model`` (a Llama) on a cached step, which feeds only new tokens, as
  the model's own ``generate`` does (``self.language_model.generate(inputs_embeds=...)``); a text-only batch (M3ID's
  and PAI's rows without the image, CODE's description row, Self-Aug's choice) is a prompt for the language model
  alone, without the query tokens. The output is the language model's in both cases.
- The Q-Former's text differs in length between rows: ``batch_vision_kwargs`` pads it on the right with its
  tokenizer's pad id and mask 0 (its mask is the Q-Former's own bidirectional one).
- Checkpoints with a Flan-T5 (encoder-decoder) language model are refused at load (``check_config``): the engine
  continues one decoder-only cache per row.
- Special tokens: the published files disagree. Salesforce/instructblip-vicuna-7b's generation_config.json (commit
  9e55477) and its text config say BOS 0, EOS 1 (values transformers' conversion script
  ``convert_instructblip_original_to_pytorch.py`` took from ``decapoda-research/llama-7b-hf``'s config), while its
  tokenizer (special_tokens_map.json) has BOS = EOS = UNK = ``</s>`` (2) and pad ``[PAD]`` (32000) — the tokens
  LAVIS sets (``blip2_vicuna_instruct.py``: ``add_special_tokens`` ``[PAD]``, then ``</s>`` as BOS, EOS and UNK).
  LAVIS (@506965b) trains every answer to end with ``</s>`` (``text_output + eos_token``) and its ``generate``
  stops at the EOS of the Vicuna weights it loads (a local folder's config, not published with the model: taken to
  be ``</s>``, 2, as its ``outputs[outputs == 0] = 2`` after generating suggests); transformers' ``generate`` on the
  published files stops only at 1 (``<s>``, which the model never learnt to write) and so runs to the token limit
  (tried on the tiny build with those values: it wrote ``</s>`` and went on). The stop set is both
  (``eos_token_ids``: the tokenizer's ``</s>`` first, then the generation config's 1); the prompt starts with the
  tokenizer's BOS ``</s>``, as transformers' own integration test shows (``test_inference_vicuna_7b``: ``[2, 1724,
  338, ...]``).
- Processor: the published processor_config.json (commit 4fd0ddb) names ``InstructBlipVideoProcessor`` (the same
  repository serves ``InstructBlipVideoForConditionalGeneration``), which ``AutoProcessor`` would load: a video
  processor (torchvision only) that writes ``<video>`` tokens, none of which the image model reads. The loader
  takes ``InstructBlipProcessor`` (``processor_class``) whatever the file names: the image processor of
  preprocessor_config.json, both tokenizers and processor_config.json's ``num_query_tokens``.

What it cannot do, and why: the query tokens have no place in the picture (each attends to every patch), so
``RowInputs.image_grid`` is None: no attention heatmap, only the share of attention on the query tokens. The methods
that act on image tokens (PAI, SID, AvisC, OPERA, ECD's image-attention feature) act on those 32 query tokens, as
AvisC's and OPERA's InstructBLIP experiments did; SID's default keep of 100 tokens is more than there are, which
keeps them all. DCD's projector is ``language_projection`` (the linear map from the Q-Former into the language
model); the Q-Former before it stays the model's own.
"""

from __future__ import annotations

import torch

from ._common import SingleViewAdapter


VICUNA_ROLE_WORDS = ("USER:", "ASSISTANT:")  # lmsys/vicuna-7b-v1.1's template: "... USER: ... ASSISTANT:"


class InstructBlipAdapter(SingleViewAdapter):
    family = "instructblip"
    processor_class = "InstructBlipProcessor"
    vision_keys = ("pixel_values", "qformer_input_ids", "qformer_attention_mask")

    @classmethod
    def check_config(cls, config) -> None:
        if not getattr(config, "use_decoder_only_language_model", True):
            text = getattr(getattr(config, "text_config", None), "model_type", "an encoder-decoder")
            raise ValueError(
                f"InstructBLIP with a {text} language model (encoder-decoder, as the Flan-T5 checkpoints) is not "
                "supported: the decoding engine runs decoder-only language models; use a Vicuna one "
                "(Salesforce/instructblip-vicuna-7b)"
            )

    # ---- prompts -----------------------------------------------------------------------------------------------------
    def prompt_text(self, question, *, with_image, system=None, context=None) -> str:
        """The plain prompt; the processor puts the image's query tokens before it."""
        messages = self.messages(question, with_image=with_image, system=system, context=context)
        texts = [(part["text"] + " " if m["role"] == "system" else part["text"])
                 for m in messages for part in m["content"] if part["type"] == "text"]
        return "".join(texts)

    @property
    def control_strings(self) -> set[str]:
        """Both tokenizers' special and added tokens (the question reaches the Q-Former's too), the image token, and
        the role words of Vicuna's own chat (``USER:``, ``ASSISTANT:``): InstructBLIP's prompt has no turns, but its
        language model was trained on them."""
        strings = {str(getattr(self.processor, "image_token", "<image>")), *VICUNA_ROLE_WORDS}
        for tokenizer in (self.tokenizer, self.qformer_tokenizer):
            strings |= {str(token) for token in getattr(tokenizer, "all_special_tokens", [])}
            strings |= {str(token) for token in getattr(tokenizer, "added_tokens_decoder", {}).values()}
        return strings

    @property
    def qformer_tokenizer(self):
        return self.processor.qformer_tokenizer

    def build_row(self, question, image=None, *, system=None, context=None):
        row = super().build_row(question, image, system=system, context=context)
        limit = int(self.model.config.qformer_config.max_position_embeddings)
        if row.has_image and row.vision_kwargs["qformer_input_ids"].shape[-1] > limit:
            vision = dict(row.vision_kwargs)
            for key in ("qformer_input_ids", "qformer_attention_mask"):  # the first tokens and the closing [SEP]
                vision[key] = torch.cat([vision[key][:, : limit - 1], vision[key][:, -1:]], dim=-1)
            row.vision_kwargs = vision
        return row

    def _image_tokens(self, input_ids, vision_kwargs):
        positions = self.image_token_indices(input_ids)
        expected = int(self.model.config.num_query_tokens)
        if positions.numel() != expected:
            raise ValueError(f"{positions.numel()} image tokens, expected {expected} (num_query_tokens)")
        return positions, None  # queries, not patches: no grid over the picture

    # ---- pixels ------------------------------------------------------------------------------------------------------
    def batch_vision_kwargs(self, rows):
        rows = [r for r in rows if r]
        if not rows:
            return {}
        width = max(r["qformer_input_ids"].shape[-1] for r in rows)
        pad = self.qformer_tokenizer.pad_token_id
        pads = {"qformer_input_ids": 0 if pad is None else int(pad), "qformer_attention_mask": 0}

        def right_padded(key, tensor):
            return torch.nn.functional.pad(tensor, (0, width - tensor.shape[-1]), value=pads[key])

        out = {"pixel_values": torch.cat([r["pixel_values"] for r in rows])}
        out.update({key: torch.cat([right_padded(key, r[key]) for r in rows]) for key in pads})
        return out

    def image_projector(self):
        return self.model.language_projection

    # ---- running the model -------------------------------------------------------------------------------------------
    def forward(self, **inputs):
        if "pixel_values" in inputs:
            return self.model(**inputs).language_model_outputs
        return self.model.language_model(**inputs)
