"""DCD's two image projections at decoding time (Chen et al., NeurIPS 2025, arXiv 2504.08809).

DCD trains two copies of the model's image projector, decoupled: a positive one on the chosen answers of preference
pairs and a negative one on the rejected ones (``python -m eval.dcd_train``), and decodes ``(1+α)·l_pos − α·l_neg``
from the same image through both (``decoding.rules.dcd``). Here both sides are rows of the same prompt and image whose
image-token embeddings are replaced (``decoding.attention.ReplacedImageEmbeddings``) by the image features through a
copy: the model's own ``get_image_features`` path, run once per request, while a forward hook on its projector
(``ProjectorSwap``) returns the copy's output on the same input. Which module is the projector is the adapter's
knowledge (``FamilyAdapter.image_projector``: LLaVA-style families' ``multi_modal_projector``, Idefics3's
``connector``); a family without one (Qwen-VL: its merger is part of the vision tower), or a model without trained
copies, is refused (``DCDMissing``). The paper's code is not public: whether its LLM is frozen, α and the data mix
are not verified.

The copies of a model live in ``<model folder>/dcd/`` (``positive.safetensors``, ``negative.safetensors``: state
dicts of the projector, and ``dcd.json``), or for a Hub id in ``$CD_DCD_HOME/<id with / as -->`` (default
``~/.cache/cd-lab/dcd``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import threading
import weakref

import torch
from safetensors.torch import load_file, save_file

from .attention import ReplacedImageEmbeddings
from .detector import model_source, shown_id, trained_folder

SIDES = ("positive", "negative")
CONFIG = "dcd.json"


def weights_file(side: str) -> str:
    return f"{side}.safetensors"


class DCDMissing(ValueError):
    """No projector copies were trained for this model, or its family has no separate projector."""


class ProjectorSwap:
    """Runs a model with ``projector`` in place of its projector module ``target``, through a forward hook on
    ``target`` (its output replaced by the copy's, on the same input): the model itself is not edited. The input is
    cast to the copy's dtype and its output to the model's, so a copy trained in fp32 runs beside a bf16 model."""

    def __init__(self, target: torch.nn.Module, projector: torch.nn.Module):
        self.target, self.projector = target, projector

    def _replace(self, module, args, output):
        if threading.get_ident() != self.owner:  # another run's forward of this model, in another thread, meanwhile
            return None
        weight = next(self.projector.parameters(), None)
        if weight is not None:
            args = tuple(a.to(weight.dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
        out = self.projector(*args)
        return out.to(output.dtype) if torch.is_tensor(output) and torch.is_tensor(out) else out

    def __enter__(self):
        self.owner = threading.get_ident()
        self.handle = self.target.register_forward_hook(self._replace)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def dcd_folder(model_id: str) -> str:
    """Where the projector copies of ``model_id`` live: ``<folder>/dcd`` for a local model folder, else under
    ``$CD_DCD_HOME`` (default ``~/.cache/cd-lab/dcd``)."""
    return trained_folder(model_id, "dcd")


def image_projector(adapter) -> torch.nn.Module:
    """The adapter's image projector, or ``DCDMissing`` for a family without one."""
    projector = adapter.image_projector()
    if projector is None:
        raise DCDMissing(
            f"DCD needs a separate image projector to train copies of, and the {adapter.family} family has none "
            "(its vision features reach the language model through the vision tower itself); DCD runs on "
            "LLaVA-style families and Idefics3 (`python -m eval.dcd_train` trains their copies)."
        )
    return projector


_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def projector_copies(adapter) -> dict[str, torch.nn.Module]:
    """The positive and negative projector copies trained for this model, loaded once per model (and again when the
    files change); ``DCDMissing`` when there are none, or when they do not fit this model's projector."""
    own = image_projector(adapter)
    folder = dcd_folder(model_source(adapter))
    paths = {side: os.path.join(folder, weights_file(side)) for side in SIDES}
    missing = [side for side, path in paths.items() if not os.path.exists(path)]
    if missing:
        raise DCDMissing(
            f"DCD needs positive and negative projector copies trained for this model ({shown_id(adapter.model_id)}), "
            f"and it has no {' or '.join(missing)} one (in its dcd/ folder, or under $CD_DCD_HOME for a Hub model). "
            "Train them with `python -m eval.dcd_train --model MODEL` (the embedded shapes-world model ships its own)."
        )
    key = (folder, tuple(os.path.getmtime(p) for p in paths.values()))
    cached = _COPIES.get(adapter.model)
    if cached is not None and cached[0] == key:
        return cached[1]
    dtype = next(own.parameters()).dtype
    copies = {}
    for side, path in paths.items():
        projector = copy.deepcopy(own)
        try:
            projector.load_state_dict(load_file(path, device=str(adapter.device)))
        except RuntimeError as error:
            raise DCDMissing(f"the DCD {side} projector found for {shown_id(adapter.model_id)} does not fit this "
                             f"model's projector ({error}); train copies for it with `python -m eval.dcd_train`"
                             ) from None
        copies[side] = projector.to(dtype).eval().requires_grad_(False)
    _COPIES[adapter.model] = (key, copies)
    return copies


class _Captured(Exception):
    def __init__(self, inputs: dict):
        self.inputs = inputs


def _capture(owner: int, module, args, kwargs=None):
    """The decoder's pre-hook: stops thread ``owner``'s forward with the decoder's keyword arguments. Another run's
    forward of this model, in another thread meanwhile, runs on (it may even call this without ``kwargs``: torch
    marks a hook as taking them only after adding it)."""
    if threading.get_ident() == owner:
        raise _Captured(kwargs)


def language_model_inputs(adapter, row, context: contextlib.AbstractContextManager | None = None) -> dict:
    """The keyword arguments the language model receives for ``row`` (prompt and image) alone: ``inputs_embeds``
    (the image features merged into the text embeddings), and, where a family sends vision features further (Qwen3-VL's
    ``deepstack_visual_embeds``), those too. The model's own input path (``get_image_features`` and the merge) runs
    up to the language model, under ``context`` (a hook on the vision path: DCD's ``ProjectorSwap``, VTI's steered
    vision encoder); the language model itself does not run."""
    inputs = adapter.to_model({"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids),
                               "position_ids": row.position_ids, **row.token_kwargs, **row.vision_kwargs})
    capture = functools.partial(_capture, threading.get_ident())
    hook = adapter.model.get_decoder().register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.inference_mode(), context or contextlib.nullcontext():
            adapter.model(**inputs, use_cache=False)
        raise AssertionError("the language model was never called")
    except _Captured as captured:
        return captured.inputs
    finally:
        hook.remove()


def replaced_image_embeddings(adapter, row, embeds: torch.Tensor) -> ReplacedImageEmbeddings:
    """The edit that gives ``row`` the image-token embeddings of ``embeds`` ((1, L, hidden): the row's whole input
    embeddings, as ``language_model_inputs`` captures them)."""
    index = adapter.image_token_indices(row.input_ids)
    offsets = index - row.image_token_positions[0]
    return ReplacedImageEmbeddings(offsets.cpu(), embeds[0, index.to(embeds.device)].clone())


def projected_image_embeddings(adapter, row, projector: torch.nn.Module | None) -> ReplacedImageEmbeddings:
    """The edit that gives ``row`` (prompt and image) the image-token embeddings of ``projector`` (None: the model's
    own): the model's own input path run up to the language model, with ``ProjectorSwap`` in place."""
    own = image_projector(adapter)
    swap = ProjectorSwap(own, projector) if projector is not None else None
    return replaced_image_embeddings(adapter, row, language_model_inputs(adapter, row, swap)["inputs_embeds"])


def untrained_projectors(adapter, scale: float = 0.5, seed: int = 0) -> str | None:
    """Random projector copies for ``adapter``'s model (its own weights plus noise), saved where DCD looks for them;
    returns the folder, or None for a family without a projector. What the engine tests run DCD with on tiny models
    (the copies mean nothing)."""
    own = adapter.image_projector()
    if own is None:
        return None
    folder = dcd_folder(model_source(adapter))
    os.makedirs(folder, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for side in SIDES:
        state = {}
        for name, value in own.state_dict().items():
            value = value.detach().float().cpu()
            spread = value.std() if value.numel() > 1 else value.abs() + 1.0
            noise = torch.randn(value.shape, generator=generator) * scale * spread
            state[name] = (value + noise).contiguous()
        save_file(state, os.path.join(folder, weights_file(side)))
    with open(os.path.join(folder, CONFIG), "w") as f:
        json.dump({"untrained": True, "seed": seed}, f)
    return folder
