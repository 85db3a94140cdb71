"""A model's ranked attention heads, whose masking DeCoRe and MaskCD contrast with (``decoding.attention.HeadMask``).

DeCoRe (Gema et al., arXiv 2410.18860) masks a text LLM's *retrieval heads*, ranked by the Retrieval_Head needle test
and shipped per LLM (``aryopg/DeCoRe@d1fa5a9 retrieval_heads/<model>.json``: ``"layer-head"`` -> a list of scores,
ranked by their mean, the top ``num_retrieval_heads`` 50 kept: ``src/models/decore_entropy.py`` L56–74). None exist
for an LVLM, so here, as MaskCD (Deng & Yang, EMNLP 2025 Findings) describes, a model's heads are ranked by how much
they attend to the image while it writes captions: ``python -m eval.image_heads`` scores every (layer, head) by the
mean share of the newest query's attention on the image tokens over the generated tokens, and saves the ranking in
``<model folder>/image_heads/heads.json`` (for a Hub id, ``$CD_IMAGE_HEADS_HOME/<id with / as -->``,
``decoding.detector.trained_folder``). A file in DeCoRe's own format (``"layer-head"`` -> scores) is read too: a
retrieval-head list placed there is ranked as the release ranks it.

A model without a list is refused (``HeadListMissing``), naming the command.
"""

from __future__ import annotations

import json
import os

import torch

from .detector import shown_id, trained_folder

PART, FILE = "image_heads", "heads.json"
# DeCoRe masks 50 heads (configs/decoder/decore_entropy.yaml num_retrieval_heads) of Llama's 32 x 32 = 1024.
RELEASED_HEADS, RELEASED_TOTAL = 50, 1024
COMMAND = "python -m eval.image_heads --model MODEL"


class HeadListMissing(ValueError):
    """No head list for this model, or one made for a model of other sizes."""


def head_geometry(model) -> tuple[int, int]:
    """(decoder layers, query heads per layer) of the model's language model."""
    text = model.config.get_text_config()
    return int(text.num_hidden_layers), int(text.num_attention_heads)


def scaled_head_count(total_heads: int) -> int:
    """DeCoRe's share of masked heads (50 of 1024, 4.9 %) for a model of ``total_heads`` query heads, rounded, at
    least 1.

    >>> scaled_head_count(1024), scaled_head_count(16), scaled_head_count(28 * 28)
    (50, 1, 38)
    """
    return max(1, round(RELEASED_HEADS * total_heads / RELEASED_TOTAL))


def head_folder(model_id: str) -> str:
    return trained_folder(model_id, PART)


def save_head_list(folder: str, scores: torch.Tensor, chosen: int, extra: dict | None = None) -> str:
    """``scores`` (layers, heads) saved as ``"layer-head"`` -> score, with the ranking (highest first) and the
    ``chosen`` top count; returns the file's path."""
    layers, heads = scores.shape
    flat = {f"{layer}-{head}": float(scores[layer, head]) for layer in range(layers) for head in range(heads)}
    ranked = sorted(flat, key=lambda name: -flat[name])
    data = {"num_layers": layers, "num_heads": heads, "chosen": chosen, "chosen_heads": ranked[:chosen],
            "ranked": ranked, "scores": flat, **(extra or {})}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def _ranking(data: dict) -> tuple[list[tuple[int, int]], int | None]:
    """The heads ranked, and the chosen count (None: the file names none); ours, or DeCoRe's ``"layer-head"`` ->
    scores (ranked by the mean, as ``decore_entropy.py`` L69–74 does)."""
    scores = data.get("scores", data)
    means = {name: (sum(v) / len(v) if isinstance(v, list) else v) for name, v in scores.items()}
    ranked = sorted(means, key=lambda name: -means[name])
    return [tuple(int(part) for part in name.split("-")) for name in ranked], data.get("chosen")


def masked_heads(model, model_id: str, count: int = 0) -> tuple[tuple[int, int], ...]:
    """The top ``count`` heads of the model's list (0: the count the list was made with, else DeCoRe's share of this
    model's heads); ``HeadListMissing`` when there is none or it does not fit this model."""
    path = os.path.join(head_folder(model_id), FILE)
    if not os.path.exists(path):
        raise HeadListMissing(
            f"DeCoRe and MaskCD need a list of this model's image heads ({shown_id(model_id)}), and it has none (in "
            f"its image_heads/ folder, or under $CD_IMAGE_HEADS_HOME for a Hub model). Make one with `{COMMAND}` "
            "(the embedded shapes-world model ships its own).")
    try:
        with open(path) as f:
            ranked, chosen = _ranking(json.load(f))
    except (OSError, ValueError, TypeError, AttributeError, ZeroDivisionError):
        raise HeadListMissing(f"the head list of {shown_id(model_id)} could not be read; make it again with "
                              f"`{COMMAND}`") from None
    layers, heads = head_geometry(model)
    if not ranked or any(len(h) != 2 or not (0 <= h[0] < layers and 0 <= h[1] < heads) for h in ranked):
        raise HeadListMissing(f"the head list found for {shown_id(model_id)} names heads this model ({layers} layers "
                              f"of {heads} heads) does not have; make one for it with `{COMMAND}`")
    count = count or (chosen if isinstance(chosen, int) and chosen > 0 else scaled_head_count(layers * heads))
    if count > len(ranked):
        raise ValueError(f"heads is {count}, and this model's head list ranks {len(ranked)} heads: give at most "
                         f"{len(ranked)} (0: the list's own count)")
    return tuple(ranked[:count])


def untrained_head_list(model, model_id: str, seed: int = 0) -> str:
    """A head list of random scores for ``model``, saved where DeCoRe and MaskCD look for it; returns the folder.
    What the engine tests run them with on tiny models (its ranking means nothing)."""
    layers, heads = head_geometry(model)
    scores = torch.rand(layers, heads, generator=torch.Generator().manual_seed(seed))
    folder = head_folder(model_id)
    save_head_list(folder, scores, scaled_head_count(layers * heads), {"untrained": True})
    return folder
