"""ECD-like: a small trained hallucination detector scoring every candidate token from the model's own forward.

ECD (Fieback, Balar, Spiegelberg, Gottschalk, ECML-PKDD 2025, arXiv 2504.12137) decodes against a lightweight,
calibrated detector of hallucinated tokens trained on per-token features of the frozen LVLM (its predecessor
MetaToken, arXiv 2405.19186: a small binary meta-classifier per LVLM), one LVLM forward per token. No code of either
paper is public; what is known comes from the abstract and secondary summaries (the project's methods survey, part
2 §8). The feature list, the detector family, how a per-candidate score is had without extra forwards and the exact
combination are **not** in what we could read, so everything below is our own ("ECD-like"):

- features of one decoding step, all from the forward that proposes the candidates: per candidate ``v`` its
  log-probability, log(1 + rank) and margin (``log p_v`` minus the best other candidate's), and per step the
  entropy, the top probability, the share of the last query's attention on the image tokens in each layer, and the
  raw hidden state at a middle layer;
- the detector is logistic, ``z_v = w·[cand_v; step] + b + (A·[h; step] + a)·(B·e_v)``, bilinear in the step's
  context and the candidate's input embedding ``e_v``, so one forward scores the whole vocabulary; ``σ(z_v)`` is
  the probability that writing ``v`` here is wrong (trained on labels from the shapes world's grader or COCO
  instance labels: a hallucinated object, colour or count word, a wrong yes or no);
- decoding (``rules.ecd``) lowers each plausible candidate by ``λ·softplus(z_v) = −λ·log P(v is right)``.

The weights of a model's detector live in ``<model folder>/ecd/`` (``detector.safetensors`` + ``detector.json``),
or for a Hub id in ``$CD_ECD_HOME/<id with / as -->`` (default ``~/.cache/cd-lab/ecd``). They are trained by
``python -m eval.ecd_train``. A model without one is refused (``DetectorMissing``): a detector fits one model only.
"""

from __future__ import annotations

import json
import os
import weakref

import torch
from safetensors.torch import load_file, save_file

WEIGHTS, CONFIG = "detector.safetensors", "detector.json"
CANDIDATE_FEATURES = ("log_prob", "log_rank", "margin")
STEP_FEATURES = ("entropy", "top_prob")  # then one image-attention share per layer


class DetectorMissing(ValueError):
    """No detector was trained for this model (or it was trained for another one)."""


def candidate_features(logits: torch.Tensor) -> torch.Tensor:
    """(batch, vocab, 3): every candidate's log-probability, log(1 + rank) (0 for the top token) and margin
    (``log p_v − max_{u≠v} log p_u``: positive for the top token only).

    >>> candidate_features(torch.log(torch.tensor([[0.5, 0.3, 0.2]])))[0, :, 1:].round(decimals=4)
    tensor([[ 0.0000,  0.5108],
            [ 0.6931, -0.5108],
            [ 1.0986, -0.9163]])
    """
    lp = torch.log_softmax(logits.float(), dim=-1)
    order = lp.argsort(dim=-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(lp.shape[-1], device=lp.device).expand_as(order))
    top2 = lp.topk(min(2, lp.shape[-1]), dim=-1).values
    best_other = torch.where(rank == 0, top2[:, -1:], top2[:, :1])
    return torch.stack([lp, torch.log1p(rank.float()), lp - best_other], dim=-1)


def step_features(logits: torch.Tensor, image_attention: torch.Tensor) -> torch.Tensor:
    """(batch, 2 + layers): the step's entropy (nats), top probability and per-layer image-attention share."""
    p = torch.softmax(logits.float(), dim=-1)
    entropy = torch.special.entr(p).sum(dim=-1, keepdim=True)
    return torch.cat([entropy, p.amax(dim=-1, keepdim=True), image_attention.float()], dim=-1)


class Detector(torch.nn.Module):
    """The logistic detector; ``config`` holds its sizes, the hidden-state index it reads and what it was fit on."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        hidden, embed, rank = config["hidden_size"], config["embed_size"], config["rank"]
        n_step = len(STEP_FEATURES) + config["num_layers"]
        n_flat = len(CANDIDATE_FEATURES) + n_step
        self.linear = torch.nn.Linear(n_flat, 1)
        self.context = torch.nn.Linear(hidden + n_step, rank)
        self.token = torch.nn.Linear(embed, rank, bias=False)
        for name, size in (("flat", n_flat), ("hidden", hidden)):  # standardisation, set from the training data
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))

    @property
    def hidden_layer(self) -> int:
        return int(self.config["hidden_layer"])

    def fit_standardisation(self, flat: torch.Tensor, hidden: torch.Tensor) -> None:
        self.flat_mean.copy_(flat.mean(0))
        self.flat_std.copy_(flat.std(0).clamp_min(1e-4))
        self.hidden_mean.copy_(hidden.mean(0))
        self.hidden_std.copy_(hidden.std(0).clamp_min(1e-4))

    def score(self, candidates, step, hidden, token_proj) -> torch.Tensor:
        """Logits ``z`` of P(wrong): ``candidates`` (..., n, 3), ``step`` (..., k), ``hidden`` (..., d) and the
        candidates' projected embeddings ``token_proj`` (..., n, rank) or (n, rank) -> (..., n)."""
        n_cand = candidates.shape[-1]
        flat = torch.cat([candidates, step[..., None, :].expand(*candidates.shape[:-1], step.shape[-1])], dim=-1)
        flat = (flat - self.flat_mean) / self.flat_std
        h = (hidden.float() - self.hidden_mean) / self.hidden_std
        z_step = (step - self.flat_mean[n_cand:]) / self.flat_std[n_cand:]
        context = self.context(torch.cat([h, z_step], dim=-1))  # (..., rank)
        bilinear = (token_proj * context[..., None, :]).sum(-1)
        return self.linear(flat)[..., 0] + bilinear

    def vocabulary_logits(self, logits, hidden, image_attention, token_proj) -> torch.Tensor:
        """(batch, vocab) logits of P(wrong) for every candidate of one step."""
        return self.score(candidate_features(logits), step_features(logits, image_attention), hidden, token_proj)


def save_detector(detector: Detector, folder: str, extra: dict | None = None) -> None:
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().contiguous().to(torch.float32) for k, v in detector.state_dict().items()}
    save_file(state, os.path.join(folder, WEIGHTS))
    with open(os.path.join(folder, CONFIG), "w") as f:
        json.dump({**detector.config, **(extra or {})}, f, indent=1, sort_keys=True)


def load_detector(folder: str) -> Detector:
    with open(os.path.join(folder, CONFIG)) as f:
        config = json.load(f)
    detector = Detector(config)
    detector.load_state_dict(load_file(os.path.join(folder, WEIGHTS)))
    return detector.eval()


def model_signature(model) -> dict:
    """What a detector must match: the language model's depth, width and the candidates' embedding table."""
    text = model.config.get_text_config()
    embeddings = model.get_input_embeddings().weight
    return {"num_layers": int(text.num_hidden_layers), "hidden_size": int(text.hidden_size),
            "embed_size": int(embeddings.shape[1]), "vocab_size": int(embeddings.shape[0])}


def trained_folder(model_id: str, name: str) -> str:
    """Where the trained part ``name`` ("ecd", "dcd") of ``model_id`` lives: ``<folder>/<name>`` for a local model
    folder, else under ``$CD_<NAME>_HOME`` (default ``~/.cache/cd-lab/<name>``), as ``<id with / as -->``."""
    if model_id and os.path.isdir(model_id):
        return os.path.join(model_id, name)
    home = os.environ.get(f"CD_{name.upper()}_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "cd-lab", name)
    return os.path.join(home, (model_id or "unnamed").replace("/", "--"))


def model_source(adapter) -> str:
    """What a model's trained parts are found by: the local folder its weights were loaded from (transformers keeps
    it as ``model.name_or_path``) when it still exists, else its ``model_id``. An app names a local model by a display
    name in its traces (``demo.model_pool``), and the parts shipped in its folder are found all the same."""
    loaded = getattr(adapter.model, "name_or_path", None)
    return loaded if isinstance(loaded, str) and loaded and os.path.isdir(loaded) else adapter.model_id


def shown_folder(source: str, name: str) -> str:
    """``trained_folder(source, name)`` as a trace shows it, naming no server path: ``<model folder's name>/<name>``
    for a local model, ``$CD_<NAME>_HOME/<id with / as -->`` for a Hub id (the home's own path left out)."""
    if source and os.path.isdir(source):
        return f"{shown_id(source)}/{name}"
    return f"$CD_{name.upper()}_HOME/{(source or 'unnamed').replace('/', '--')}"


def detector_folder(model_id: str) -> str:
    """Where the detector of ``model_id`` lives: ``<folder>/ecd`` for a local model folder, else under
    ``$CD_ECD_HOME`` (default ``~/.cache/cd-lab/ecd``)."""
    return trained_folder(model_id, "ecd")


class BoundDetector:
    """A detector bound to the model it was trained for, the candidates' embedding projection computed once."""

    def __init__(self, detector: Detector, model):
        self.detector = detector.to(model.get_input_embeddings().weight.device)
        with torch.inference_mode():
            self.token_proj = self.detector.token(model.get_input_embeddings().weight.float())

    @property
    def hidden_layer(self) -> int:
        return self.detector.hidden_layer

    def logits(self, step: dict[str, torch.Tensor]) -> torch.Tensor:
        """(1, vocab) detector logits from a rule's inputs: the original row's logits and its ``Side.features``."""
        with torch.inference_mode():
            return self.detector.vocabulary_logits(
                step["original"], step[f"hidden {self.hidden_layer}"], step["image attention"], self.token_proj
            )


_BOUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shown_id(model_id: str | None) -> str:
    """A model as refusals name it: a Hub id as it is, a local folder by its name only (messages reach visitors,
    and the server's paths are none of their business)."""
    if not model_id:
        return "unnamed"
    return os.path.basename(os.path.normpath(model_id)) if os.path.exists(model_id) else model_id


def detector_for(model, model_id: str) -> BoundDetector:
    """The detector trained for this model, loaded once per model; ``DetectorMissing`` when there is none, or when
    the one found was trained for a model of other sizes."""
    folder = detector_folder(model_id)
    cached = _BOUND.get(model)
    if cached is not None and cached[0] == folder:
        return cached[1]
    if not os.path.exists(os.path.join(folder, WEIGHTS)):
        raise DetectorMissing(
            f"ECD needs a hallucination detector trained for this model ({shown_id(model_id)}), and it has none (in "
            f"its ecd/ folder, or under $CD_ECD_HOME for a Hub model). Train one with `python -m eval.ecd_train "
            "--model MODEL` (the embedded shapes-world model ships its own)."
        )
    detector = load_detector(folder)
    signature = model_signature(model)
    trained = {k: detector.config.get(k) for k in signature}
    if trained != signature:
        raise DetectorMissing(f"the ECD detector found for {shown_id(model_id)} was trained for a model with "
                              f"{trained}, not this one ({signature}); train one for it with "
                              "`python -m eval.ecd_train`")
    bound = BoundDetector(detector, model)
    _BOUND[model] = (folder, bound)
    return bound


def untrained_detector(adapter, rank: int = 4, seed: int = 0) -> str:
    """A detector of random weights for ``adapter``'s model, saved where ECD looks for it; returns the folder.
    What the engine tests run ECD with on tiny models (its scores mean nothing)."""
    torch.manual_seed(seed)
    signature = model_signature(adapter.model)
    detector = Detector({**signature, "hidden_layer": signature["num_layers"] // 2, "rank": rank})
    folder = detector_folder(model_source(adapter))
    save_detector(detector, folder, {"untrained": True})
    return folder
