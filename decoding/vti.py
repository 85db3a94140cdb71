"""VTI — Visual and Textual Intervention (Liu, Ye, Zou, ICLR 2025; ``shengliu66/VTI@bb5dfee``): two fixed steering
directions computed once per model from a calibration set, applied to every layer as a norm-preserving rotation of its
MLP output (``decoding.rules.steer`` without VISTA's cosine boost, strength ``0.1·α``; ``vti_utils/llm_layers.py``
VTILayer L16–32):

- **textual**, one per decoder layer of the language model: the mean over demos of ``h(clean caption) −
  h(hallucinated caption)``, the hidden state of the caption's last token after the prompt and the clean image
  (``hidden_states[1:]``: the last layer's is transformers' normed final state, as released), plus the first principal
  direction of those differences, all layers flattened together (``vti_utils/utils.py`` L184–230);
- **visual**, one per vision-encoder layer and image-token position: the mean over demos of ``h(masked) − h(clean)``,
  ``h(masked)`` the layer's output averaged over copies of the image with ``mask_ratio`` of its patches filled with
  the per-channel mean of the normalised image, plus a first principal direction computed as the release lays the
  data out (``(layers, tokens, dim).reshape(tokens, −1)``: each PCA row mixes 25 layer-token slots, so that term is
  scrambled while the mean is exact; L46–81, L257–325). Where the vision encoder's output is not one view of a fixed
  number of tokens (tiles, dynamic resolution) a per-layer **token-mean** direction is used instead (ours: each
  demo's difference averaged over every token, then mean plus first principal direction as for the textual one).

At decoding time the textual steering is a ``decoding.steering.MlpSteering`` edit on the method's rows; the visual
steering runs the row's image alone through the vision encoder with forward hooks on every encoder layer's ``mlp``
(``steered_vision``) and hands the resulting image-token embeddings to the row (``ReplacedImageEmbeddings``, as DCD's
projector copies do): so only the method's rows see it, whatever else shares the batch. A family whose vision tower
feeds the language model beyond its input embeddings (Qwen3-VL's DeepStack features) is refused visual steering.

The directions of a model live in ``<model folder>/vti/`` (``directions.safetensors`` and ``vti.json``: the command,
seed, demos and settings that made them), or for a Hub id in ``$CD_VTI_HOME/<id with / as -->`` (default
``~/.cache/cd-lab/vti``); ``python -m eval.vti_calibrate`` computes them, for each number of demos asked (50 as
released, 70 as the paper's README command). A model without them is refused (``VTIMissing``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import weakref
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file

from . import rules
from .attention import ReplacedImageEmbeddings
from .dcd import language_model_inputs, replaced_image_embeddings
from .detector import model_signature, model_source, shown_folder, shown_id, trained_folder
from .steering import MlpEdit, MlpSteering, check_mlp_edits

WEIGHTS, CONFIG = "directions.safetensors", "vti.json"
# run_mmhal_vti.py L156 (num_demos 50) and the README's command (70); L163-164: mask_ratio 0.99, num_trials 50.
RELEASED_DEMOS, PAPER_DEMOS = 50, 70
MASK_RATIO, TRIALS = 0.99, 50
STRENGTH_SCALE = 0.1  # llm_layers.py L28: ``normalize(x) + 0.1 * y``, y = lam · unit direction
CALIBRATE = "python -m eval.vti_calibrate --model MODEL --work DIR"


class VTIMissing(ValueError):
    """No VTI directions were computed for this model (or for this number of demos, or for another model)."""


def vti_folder(model_id: str) -> str:
    """Where the directions of ``model_id`` live: ``<folder>/vti`` for a local model folder, else under
    ``$CD_VTI_HOME`` (default ``~/.cache/cd-lab/vti``)."""
    return trained_folder(model_id, "vti")


# ---- the directions from calibration differences --------------------------------------------------------------------

def mean_plus_first_component(x: torch.Tensor) -> torch.Tensor:
    """``(batch, F)``: for each of ``x``'s ``(batch, n, F)`` sets of n samples, their mean plus their first principal
    direction (a unit vector; its sign makes the largest-magnitude entry of the first left singular vector positive,
    ``svd_flip``): the release's ``PCA(n_components=1)`` and ``(components_.sum(1) + mean_)``
    (``vti_utils/pca.py`` L6–39, ``utils.py`` L228 and L323). Float32.

    >>> mean_plus_first_component(torch.tensor([[[1.0, 0.0], [3.0, 0.0]]]))
    tensor([[1., 0.]])
    """
    x = x.float()
    mean = x.mean(dim=1, keepdim=True)
    u, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    first = u[..., 0]  # (batch, n)
    sign = torch.sign(first.gather(1, first.abs().argmax(dim=1, keepdim=True)))  # (batch, 1)
    return mean[:, 0] + sign * vh[:, 0]


def textual_direction(differences: torch.Tensor) -> torch.Tensor:
    """``(layers, hidden)`` from ``(demos, layers, hidden)`` clean-minus-hallucinated differences: mean plus the first
    principal direction of the differences flattened over all layers together (``utils.py`` L218–229)."""
    n, layers, hidden = differences.shape
    return mean_plus_first_component(differences.reshape(1, n, layers * hidden)).view(layers, hidden)


def visual_token_direction(differences: torch.Tensor) -> torch.Tensor:
    """``(layers, tokens, dim)`` from ``(demos, layers, tokens, dim)`` masked-minus-clean differences, as released
    (``utils.py`` L312–323): each demo's ``(layers, tokens, dim)`` reshaped to ``(tokens, layers·dim)`` (rows that mix
    layers and tokens), stacked to ``(tokens, demos, layers·dim)``, mean plus first principal direction per row, and
    the result read back as ``(layers, tokens, dim)``: the mean term is each layer and token's exact mean, the
    principal term is scrambled across them."""
    n, layers, tokens, dim = differences.shape
    rows = torch.stack([d.reshape(tokens, -1) for d in differences], dim=1)
    return mean_plus_first_component(rows).reshape(layers, tokens, dim)


# ---- the vision encoder ---------------------------------------------------------------------------------------------

def vision_layers(adapter) -> torch.nn.ModuleList:
    layers = adapter.vision_encoder_layers()
    if layers is None:
        raise VTIMissing(f"VTI's visual steering needs the vision encoder's layers, and none was found in the "
                         f"{adapter.family} family's model")
    return layers


def _layer_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def vision_layer_outputs(adapter):
    """Within the block, the dict it yields gets each vision-encoder layer's output (the residual stream after the
    layer, float32, on the CPU) of the last forward, by layer index: the release's ``hidden_states[1:]`` of the vision
    model (no final norm)."""
    captured: dict[int, torch.Tensor] = {}

    def keep(index, module, args, output):
        captured[index] = _layer_output(output).detach().float().cpu()

    layers = vision_layers(adapter)
    handles = [layer.register_forward_hook(functools.partial(keep, i)) for i, layer in enumerate(layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _steer_tokens(output: torch.Tensor, directions: torch.Tensor, strength: float) -> torch.Tensor:
    """``rules.steer`` of each token of a ``(1, tokens, dim)`` output along its own direction (``(tokens, dim)``)."""
    per_token = torch.vmap(lambda x, d: rules.steer.__wrapped__(x, d, strength=strength, cosine_boost=False))
    return per_token(output[0], directions.to(output.device))[None]


def _steer_vision_mlp(index: int, tokens, means, strength: float, used: set, owner: int, module, args, output):
    """A vision-encoder layer's ``mlp`` forward hook: its output steered, per token where the layer's output is one
    view of the calibrated tokens, else along the layer's token-mean direction; in thread ``owner``'s forwards only
    (another run of the model, in another thread meanwhile, is not this row's)."""
    if threading.get_ident() != owner:
        return None
    if tokens is not None and output.dim() == 3 and output.shape[0] == 1 and output.shape[1:] == tokens.shape[1:]:
        used.add("per-token")
        steered = _steer_tokens(output, tokens[index], strength)
    else:
        used.add("token-mean")
        steered = rules.steer.__wrapped__(output, means[index].to(output.device), strength=strength,
                                          cosine_boost=False)
    return steered.to(output.dtype)


@contextlib.contextmanager
def steered_vision(adapter, tokens: torch.Tensor | None, means: torch.Tensor, strength: float):
    """Within the block, every vision-encoder layer's MLP output is steered (``rules.steer``, no boost, ``strength``)
    along its visual direction: ``tokens`` ``(layers, tokens, dim)`` (None: none) or ``means`` ``(layers, dim)``.
    Yields the set of the kinds of direction used."""
    used: set = set()
    owner = threading.get_ident()
    handles = [layer.mlp.register_forward_hook(
        functools.partial(_steer_vision_mlp, i, tokens, means, strength, used, owner))
        for i, layer in enumerate(vision_layers(adapter))]
    try:
        yield used
    finally:
        for handle in handles:
            handle.remove()


def patch_size(adapter) -> int:
    """The vision encoder's patch side in pixels (its config's ``patch_size``; a pair names it twice)."""
    size = getattr(adapter.model.config.vision_config, "patch_size", None)
    size = size[0] if isinstance(size, (list, tuple)) else size
    if not isinstance(size, int) or size < 1:
        raise VTIMissing(f"the {adapter.family} family's vision config names no patch size to mask")
    return size


def masked_view(view: torch.Tensor, patch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A copy of a normalised ``(3, H, W)`` view with ``int(ratio · patches)`` of its ``patch``-pixel patches (drawn
    by ``generator``) filled with the view's per-channel mean (``utils.py`` L46–81, L170–173).

    >>> masked_view(torch.arange(8.0).view(1, 2, 4), 2, 0.5, torch.Generator().manual_seed(0)).tolist()
    [[[3.5, 3.5, 2.0, 3.0], [3.5, 3.5, 6.0, 7.0]]]
    """
    rows, cols = view.shape[1] // patch, view.shape[2] // patch
    count = rows * cols
    chosen = torch.randperm(count, generator=generator)[: int(ratio * count)]
    out = view.clone()
    mean = view.mean(dim=(1, 2), keepdim=True)
    for index in chosen.tolist():
        r, c = divmod(index, cols)
        out[:, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = mean
    return out


# ---- stored directions ----------------------------------------------------------------------------------------------

@dataclass
class Directions:
    """A model's VTI directions by number of demos: ``text[n]`` ``(layers, hidden)``, ``visual_mean[n]``
    ``(vision layers, dim)``, ``visual_tokens[n]`` ``(vision layers, tokens, dim)`` where calibration saw one view of
    a fixed number of tokens; ``config``: what ``vti.json`` records."""

    text: dict[int, torch.Tensor]
    visual_mean: dict[int, torch.Tensor]
    visual_tokens: dict[int, torch.Tensor]
    config: dict

    def counts(self) -> list[int]:
        return sorted(self.text)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in ("text", "visual_mean", "visual_tokens"):
            for n, value in getattr(self, name).items():
                out[f"{name}.{n}"] = value.detach().float().contiguous().cpu()
        return out


def vti_signature(adapter) -> dict:
    """What directions must match: the language model's depth and width, the vision encoder's depth."""
    signature = model_signature(adapter.model)
    return {"num_layers": signature["num_layers"], "hidden_size": signature["hidden_size"],
            "vision_layers": len(vision_layers(adapter))}


def save_directions(directions: Directions, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    save_file(directions.tensors(), os.path.join(folder, WEIGHTS))
    with open(os.path.join(folder, CONFIG), "w", encoding="utf-8") as f:
        json.dump(directions.config, f, indent=1, sort_keys=True)
        f.write("\n")


def load_directions(folder: str) -> Directions:
    with open(os.path.join(folder, CONFIG), encoding="utf-8") as f:
        config = json.load(f)
    found: dict[str, dict[int, torch.Tensor]] = {"text": {}, "visual_mean": {}, "visual_tokens": {}}
    for key, value in load_file(os.path.join(folder, WEIGHTS)).items():
        name, n = key.rsplit(".", 1)
        found[name][int(n)] = value
    return Directions(found["text"], found["visual_mean"], found["visual_tokens"], config)


_LOADED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def directions_for(adapter) -> Directions:
    """The directions computed for this model, loaded once per model (again when the file changes); ``VTIMissing``
    when there are none, or when they were computed for a model of other sizes."""
    source = model_source(adapter)
    folder = vti_folder(source)
    path = os.path.join(folder, WEIGHTS)
    if not os.path.exists(path):
        raise VTIMissing(
            f"VTI needs steering directions computed for this model ({shown_id(adapter.model_id)}), and it has none "
            f"(in its vti/ folder, or under $CD_VTI_HOME for a Hub model). Compute them with `{CALIBRATE}` (the "
            "embedded shapes-world model ships its own).")
    config = os.path.join(folder, CONFIG)
    key = (folder, os.path.getmtime(path), os.path.getmtime(config) if os.path.exists(config) else None)
    cached = _LOADED.get(adapter.model)
    if cached is not None and cached[0] == key:
        return cached[1]
    directions = load_directions(folder)
    signature = vti_signature(adapter)
    computed = {k: directions.config.get("signature", {}).get(k) for k in signature}
    if computed != signature:
        raise VTIMissing(f"the VTI directions found in {shown_folder(source, 'vti')} were computed for a model with "
                         f"{computed}, not this one ({signature}); compute them for it with `{CALIBRATE}`")
    _LOADED[adapter.model] = (key, directions)
    return directions


def untrained_directions(adapter, counts=(RELEASED_DEMOS, PAPER_DEMOS), seed: int = 0) -> str:
    """Random directions for ``adapter``'s model (the language model's, the vision encoder's token-mean ones and, for
    a single-view encoder, per-token ones of its own token count), saved where VTI looks for them; returns the
    folder. What the engine tests run VTI with on tiny models (the directions mean nothing)."""
    generator = torch.Generator().manual_seed(seed)
    signature = vti_signature(adapter)
    probe = adapter.build_row("probe", _probe_image(adapter))
    with vision_layer_outputs(adapter) as outputs:
        language_model_inputs(adapter, probe)
    shape = outputs[0].shape
    dim = shape[-1]
    text, means, tokens = {}, {}, {}
    for n in counts:
        text[n] = torch.randn(signature["num_layers"], signature["hidden_size"], generator=generator)
        means[n] = torch.randn(signature["vision_layers"], dim, generator=generator)
        if len(shape) == 3 and shape[0] == 1:
            tokens[n] = torch.randn(signature["vision_layers"], shape[1], dim, generator=generator)
    folder = vti_folder(model_source(adapter))
    save_directions(Directions(text, means, tokens, {"untrained": True, "seed": seed, "signature": signature}),
                    folder)
    return folder


def _probe_image(adapter):
    from PIL import Image

    height, width = adapter.image_size
    return Image.new("RGB", (width, height), (128, 96, 64))


# ---- the method's row edit -------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SteeredRow(ReplacedImageEmbeddings, MlpEdit):
    """A VTI row with both parts: its image-token embeddings from the steered vision encoder (the embedding
    replacement of ``ReplacedImageEmbeddings``) and its decoder layers' MLP outputs steered by ``text`` (the
    ``MlpEdit`` protocol of ``decoding.steering``)."""

    text: MlpSteering | None = None

    def edits_layer(self, layer: int, *args, **kwargs) -> bool:
        return self.text.edits_layer(layer, *args, **kwargs)

    def edit(self, layer: int, output: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.text.edit(layer, output, *args, **kwargs)


def check_family(adapter, alpha_image: float) -> None:
    """Refuse (ValueError naming the family) a model VTI cannot steer: decoder layers without an ``mlp``, or, for the
    visual part, a vision encoder whose layers are not found."""
    check_mlp_edits(adapter, "VTI")
    if alpha_image:
        vision_layers(adapter)


def visual_embeddings(adapter, row, directions: Directions, demos: int, alpha_image: float):
    """The row's image-token embeddings with the vision encoder steered (``steered_vision``), and the kind of
    direction used; refused for a family whose vision tower feeds the language model beyond its input embeddings."""
    tokens = directions.visual_tokens.get(demos)
    with steered_vision(adapter, tokens, directions.visual_mean[demos], STRENGTH_SCALE * alpha_image) as used:
        inputs = language_model_inputs(adapter, row)
    if inputs.get("deepstack_visual_embeds") is not None:
        raise ValueError(f"VTI's visual steering cannot run on the {adapter.family} family: its vision tower also "
                         "feeds features into the language model's layers (DeepStack), which this edit does not "
                         "carry; set alpha_image to 0 (as released) for its textual steering alone")
    return replaced_image_embeddings(adapter, row, inputs["inputs_embeds"]), "+".join(sorted(used))


def row_edit(adapter, row, directions: Directions, demos: int, alpha_text: float, alpha_image: float):
    """The VTI edit of one row (None when both strengths are 0) and the kind of visual direction it used ("" when
    none): the textual steering of its decoder layers, the visual steering of its image's embeddings, or both."""
    text = None
    if alpha_text:
        text = MlpSteering(directions.text[demos].to(adapter.device), STRENGTH_SCALE * alpha_text,
                           cosine_boost=False)
    if not alpha_image or not row.has_image:
        return text, ""
    image, kind = visual_embeddings(adapter, row, directions, demos, alpha_image)
    if text is None:
        return image, kind
    return SteeredRow(image.offsets, image.embeddings, text=text), kind


def check_demos(adapter, directions: Directions, demos: int) -> None:
    if demos not in directions.text:
        raise VTIMissing(f"the VTI directions of {shown_id(adapter.model_id)} were computed from "
                         f"{', '.join(map(str, directions.counts())) or 'no'} demos, not {demos}: set demos to one of "
                         f"those, or compute them with `{CALIBRATE} --demos {demos}`")
