"""The one registry of decoding methods: a ``Method`` record per method, read by the app, ``eval``, the bench and
the tests alike.

A record says everything about a method except the per-step math, which is a pure function in ``decoding.rules``:
its name and titles, its parameters (default, slider range, one-line help, where the default comes from), how its
contrast rows are built (``build``: branch construction, from ``decoding.branches`` / ``decoding.branch_rows``), how
one step's logits are combined (``rule``: a thin binding of the pure rule to the rows and parameters) and which per-step
scalars it reports (names from ``STEP_SCALARS``, the same meaning for every method). One engine runs every method.

Adding a method is one rule in ``rules.py``, one record here, and its tests.

>>> get_method("vcd").short_name, [p.name for p in get_method("vcd").params]
('VCD', ['alpha', 'beta', 'noise_step'])
>>> get_method("ritual").resolve({"alpha_pos": 2})
{'alpha_pos': 2.0, 'beta': 0.1}
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image

from models.adapters.base import FamilyAdapter, RowInputs

from . import branch_rows, branches, rules
from . import agla
from .amateur import amateur_for, amateur_row, amateur_source, uses_own_text_row
from .attention import BlindTokens, Edit, HeadMask, ImageAmplification, OneLayerEnhancement, SelfIntrospection
from .attention import AttentionDropout
from .dcd import projected_image_embeddings, projector_copies
from . import vti
from .detector import detector_for, model_source, shown_folder
from .image_heads import head_geometry, masked_heads
from .steering import MlpSteering, VisualRetracing, check_mlp_edits, last_position_layer_outputs
from .combination import Combination, RuleFn, contrast

# Visual dependence is measured against this distortion, the same for every method and both panels.
VISUAL_DEPENDENCE_NOISE_STEP = 500


# ---- parameters and per-step scalars -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One tunable parameter of a method.

    default:  the authors' default (``source`` says where it is set).
    low/high: the UI slider's range; validity is ``minimum`` / ``maximum`` (``alpha >= 0`` has no upper bound).
    step:     the slider step; ``integer`` for integer parameters (``noise_step``).
    minimum / min_inclusive / maximum: the valid domain (maximum inclusive; None = unbounded).
    """

    name: str
    default: float
    low: float
    high: float
    help: str
    source: str = ""
    step: float = 0.01
    integer: bool = False
    minimum: float | None = 0.0
    min_inclusive: bool = True
    maximum: float | None = None
    kind: ClassVar[str] = "number"  # "number", or "text" (``TextParam``): what control sets it

    def validate(self, value):
        """``value`` checked against the domain, as float (int for integer parameters); else ValueError naming it."""
        if self.integer:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            v = int(value)
        else:
            v = rules._real(self.name, value)  # the rules' own check: a finite real number
        if self.minimum is not None:
            if self.min_inclusive and v < self.minimum:
                raise ValueError(f"{self.name} must be >= {self.minimum:g}, got {v}")
            if not self.min_inclusive and v <= self.minimum:
                raise ValueError(f"{self.name} must be > {self.minimum:g}, got {v}")
        if self.maximum is not None and v > self.maximum:
            raise ValueError(f"{self.name} must be <= {self.maximum:g}, got {v}")
        return v


# The most characters a text parameter takes (ICD's instruction): far above an instruction, far below a context.
MAX_TEXT_CHARS = 2000


@dataclass(frozen=True)
class TextParam(Param):
    """A text parameter (ICD's disturbance instruction): a non-empty string of at most ``MAX_TEXT_CHARS`` characters;
    ``low``/``high`` count characters. The model's adapter checks it like the question when the row is built (a
    character no tokenizer takes is refused, role markers and special tokens are broken: ``user_text``)."""

    kind: ClassVar[str] = "text"

    def validate(self, value):
        if not isinstance(value, str):
            raise ValueError(f"{self.name} must be text")  # not echoed: a visitor's value may be anything
        if not value.strip():
            raise ValueError(f"{self.name} is empty: give a text, or leave the default")
        if len(value) > self.high:
            raise ValueError(f"{self.name} is too long: {len(value)} characters, the limit is {self.high:g}")
        return value


@dataclass(frozen=True)
class StepScalar:
    symbol: str
    meaning: str


# Every per-step scalar any method reports, by the one name it has everywhere (trace, JSON, app, tests).
STEP_SCALARS = {
    "contrast_weight": StepScalar(
        "α_t",
        "this step's contrast weight in out = (1+α_t)·l − α_t·l′ (CODE: 1 − BD; M3ID: (1−γ_t)/γ_t, as "
        "l + (l − l_u)·(1−γ_t)/γ_t is that form)",
    ),
    "premature_layer": StepScalar(
        "j*",
        "DoLa's premature layer at this step: the candidate whose early-exit distribution is farthest (JSD) from the "
        "final layer's (a hidden-state index: 0 = the embeddings)",
    ),
    "anchor_layer": StepScalar(
        "j*",
        "DeCo's anchor layer at this step: the early exit (through the final norm) that gives one of the final layer's "
        "candidates its highest probability (a hidden-state index: 0 = the embeddings)",
    ),
    "anchor_weight": StepScalar(
        "α·m",
        "DeCo's weight on the anchor layer's logits in l_N + α·m·l_j*: m is the anchor layer's highest probability on "
        "a candidate (not the chosen token's)",
    ),
    "enhancement_distance": StepScalar(
        "d",
        "ONLY's L1 distance Σ|p − p̃| (0 to 2) between the model's distribution and the textually enhanced one at this "
        "step; below γ the two are fused collaboratively, else contrastively",
    ),
    "collaborative": StepScalar(
        "c",
        "ONLY's branch at this step: 1 = collaborative (d < γ: l + α₁·l̃), 0 = contrastive ((1+α₂)·l − α₂·l̃)",
    ),
    "removed_heads": StepScalar(
        "n",
        "ONLY: the heads of its layer removed at this step (text-to-image attention entropy ratio below the heads' "
        "mean)",
    ),
    "retrace_layer": StepScalar(
        "ℓ+1",
        "MemVR: the decoder layer whose FFN read the visual tokens as memory in this step's forward (0-based; the one "
        "after the first layer whose uncertainty passed the threshold), or −1 when none did",
    ),
    "layer_uncertainty": StepScalar(
        "E",
        "MemVR: the highest logit-lens uncertainty (top-10 entropy over ln 10, 0 to 1) among the layers it checked in "
        "this step's forward: the one that fired when one did (0 when no layer is in its window)",
    ),
    "over_trust_penalty": StepScalar(
        "P",
        "OPERA's over-trust penalty taken off this token's logit (penalty_weights × the candidate's penalty: minus its "
        "image attention over the first 10 tokens, then the largest column score of its attention window); 0 at a "
        "rollback step",
    ),
    "hallucination_flag": StepScalar(
        "P_h",
        "ECD-like: the trained detector's probability that the original branch's most probable token at this step is "
        "a hallucination, σ(z) at argmax l (how strongly the rule pushes against what plain decoding would say)",
    ),
    "amateur_entropy": StepScalar(
        "H",
        "LCD: the entropy (nats) of its language model's next-token distribution at this step; the contrast weight "
        "is α/H, so a confident language prior is subtracted harder",
    ),
    "plausibility_cut": StepScalar(
        "β_t",
        "this step's plausibility cut: tokens with p < β_t·max(p) under the original branch are dropped "
        "(SAVCD: sigmoid(−γ·H); CODE: BD)",
    ),
}


# ECD's strength, chosen on the validation world of the embedded model (never its test world) by
# `python -m eval.ecd_train --sweep`: the lam of fewest graded errors (hallucinated + missed words) over 400 sampled
# questions, of 0, 1, 2, 4, 6, 8, 12, 16: 116, 109, 102, 93, 93, 91, 91, 90 (baseline 137); flat from 4 on
# (assets/shapes-llava/ecd/sweep.json; MODEL_CARD.md, "ECD-like detector").
ECD_DEFAULT_LAM = 16.0
ECD_LAM_SOURCE = "ours: chosen on the embedded model's validation world (MODEL_CARD.md, ECD), not the paper's"


# ---- the record ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BranchRequest:
    """What a method's branch construction may use: the model, the request, its original row, the run's seed, and
    the noised twin visual dependence is measured against (None when it is not): a method that edits its original
    row's image (DCD's positive projection) edits that twin the same way, so that the two differ by the noise only.

    pre_steps: how the model is run before the answer (CODE's description, Self-Aug's choice, VACoDe's first step),
    handed in by the layer above the engine (``decoding.comparison`` gives ``decoding.engine.Engine(adapter)``), so
    that the registry stays below the engine; a method without pre-steps needs none."""

    adapter: FamilyAdapter
    image: Image.Image
    question: str
    original: RowInputs
    seed: int
    progress: branch_rows.ProgressFn | None = None
    do_sample: bool = False
    distorted: RowInputs | None = None
    pre_steps: branch_rows.PreSteps | None = None

    def model_pre_steps(self) -> branch_rows.PreSteps:
        if self.pre_steps is None:
            raise ValueError("this method runs the model before its answer: its BranchRequest needs pre_steps "
                             "(decoding.engine.Engine(adapter))")
        return self.pre_steps


@dataclass
class Branches:
    """A method's contrast rows by role, and what was done to build them (reported to the user).

    original:  a prompt of the method's own in place of the request's original row (PBA's edited question), or None.
    rule_args: what the rule needs from construction besides the parameters (OLM's yes / no token ids).
    layers:    hidden-state indices whose early-exit logits the rule receives as "layer j" (DoLa's candidates).
    attention_edits: role -> an attention edit on that row (PAI's amplification, SID's self-introspection).
    features:  hidden-state indices of the original row's per-token features the rule receives (``Side.features``:
               ECD's detector), or None.
    normed_layers: hidden-state indices whose early exits through the final norm the rule receives as
               "normed layer j" (``Side.normed_layers``: DeCo's candidates).
    """

    rows: dict[str, RowInputs]
    info: dict[str, Any] = field(default_factory=dict)
    original: RowInputs | None = None
    rule_args: dict[str, Any] = field(default_factory=dict)
    layers: tuple[int, ...] = ()
    attention_edits: dict[str, Edit] = field(default_factory=dict)
    features: tuple[int, ...] | None = None
    normed_layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Note:
    """One paragraph of what a method's pre-steps did, for people: ``text``, the library's own words (Markdown
    emphasis allowed), and ``quote``, the model's or a user's own words it shows verbatim (None: none)."""

    text: str
    quote: str | None = None


NotesFn = Callable[[dict[str, Any]], list[Note]]

# What the rows every side has fed the model; a record's ``labels`` name its contrast rows (and may rename these).
ROW_LABELS = {"original": "original (image + question)", "distorted": "noised image (for visual dependence)"}


def _no_notes(info: dict[str, Any]) -> list[Note]:
    return []


@dataclass(frozen=True)
class Method:
    """One decoding method. ``build(request, params)`` makes its contrast rows (roles ``contrast_roles``);
    ``rule(logits_by_role, t, params)`` combines step ``t``'s float32 ``(1, vocab)`` logits into the distribution to
    decode from, with the per-step ``scalars`` it reports. ``kind`` is "method", or "control" for the baselines that
    tell a method's effect from its artifacts (its truncation alone, a push toward "yes"). ``search`` is "beam"
    for a method decoded by beam search (``decoding.beam``, OPERA): greedy or sampled token picking is refused.
    Its display is its own too: ``labels`` name its contrast rows and ``notes(info)`` says, in ``Note``s, what its
    construction did (the app renders both as they are)."""

    name: str
    title: str
    short_name: str
    source: str
    params: tuple[Param, ...]
    contrast_roles: tuple[str, ...]
    build: Callable[[BranchRequest, dict[str, Any]], Branches]
    rule: RuleFn
    scalars: tuple[str, ...] = ()
    kind: str = "method"
    search: str = "token"  # "token": the engine picks each side's next token; "beam": beam search (OPERA)
    labels: dict[str, str] = field(default_factory=dict)  # contrast role -> what that row fed the model, in words
    notes: NotesFn = _no_notes  # what construction did (its ``Branches.info``), in words

    def label(self, role: str) -> str:
        """What the row ``role`` of this method's side fed the model, in words."""
        return self.labels.get(role) or ROW_LABELS.get(role, role)

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The defaults overridden by ``params``; unknown names and bad values raise ValueError."""
        params = dict(params or {})
        names = [p.name for p in self.params]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"{self.name} has no parameter(s) {unknown}; it takes {sorted(names)}")
        return {p.name: p.validate(params.get(p.name, p.default)) for p in self.params}

    def combine(
        self, params: dict[str, Any], rule_args: dict[str, Any] | None = None
    ) -> Callable[[dict[str, torch.Tensor], int], Combination]:
        """The per-step rule bound to resolved ``params`` (and construction's ``rule_args``): what the engine calls
        at every step."""
        return functools.partial(self.rule, params={**params, **(rule_args or {})})


def role_label(method: str, role: str) -> str:
    """What the row ``role`` of a side decoded by ``method`` (a registry name, or "baseline") fed the model."""
    return REGISTRY[method].label(role) if method in REGISTRY else ROW_LABELS.get(role, role)


def get_method(name: str) -> Method:
    """The registered method called ``name``; the one place an unknown method name is refused."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


# ---- branch construction -------------------------------------------------------------------------------------------
def _noised(request: BranchRequest, params: dict) -> Branches:
    """VCD's distorted image: diffusion noise at ``noise_step`` on the preprocessed pixels."""
    row = branch_rows.noised_row(request.original, params["noise_step"], request.seed)
    return Branches({"noised": row}, {"noise_step": params["noise_step"], "noise_seed": request.seed})


def _transformed(request: BranchRequest, params: dict) -> Branches:
    """RITUAL's randomly transformed image, drawn once per query from the run's seed."""
    adapter = request.adapter
    image, transform = branches.ritual_transform(
        request.image, random.Random(request.seed), output_size=adapter.image_size
    )
    return Branches(
        {"transformed": adapter.build_row(request.question, image)},
        {"transform": transform, "transform_seed": request.seed},
    )


def _transformed_and_noised(request: BranchRequest, params: dict) -> Branches:
    built, noised = _transformed(request, params), _noised(request, params)
    return Branches({**built.rows, **noised.rows}, {**built.info, **noised.info})


def _self_augmented(request: BranchRequest, params: dict) -> Branches:
    """Self-Aug: the model, text-only, picks the augmentation that most disrupts this question; applied to the
    preprocessed views."""
    adapter = request.adapter
    name, reason, parsed = branch_rows.choose_augmentation(
        adapter, request.question, request.model_pre_steps(), progress=request.progress
    )
    row, aug_info = branch_rows.augmented_row(adapter, request.original, name, request.seed)
    info = {"augmentation": name, "augmentation_reason": reason, "choice_parsed": parsed, **aug_info}
    return Branches({"augmented": row}, info)


def _described(request: BranchRequest, params: dict) -> Branches:
    """CODE: the question over the model's own description of the image, with no image."""
    description = branch_rows.describe_image(
        request.adapter, request.image, request.model_pre_steps(), progress=request.progress
    )
    context = branches.description_context(description)
    return Branches(
        {"description": request.adapter.build_row(request.question, None, context=context)},
        {"description": description},
    )


def _text_only(request: BranchRequest, params: dict) -> Branches:
    """M3ID, CAD and AdaCAD: the same prompt without the image."""
    return Branches({"text_only": request.adapter.build_row(request.question, None)})


def _disturbed(request: BranchRequest, params: dict) -> Branches:
    """ICD: the same image and question under a disturbing system instruction (``instruction``: ours by default, or
    the user's, checked like the question)."""
    instruction = request.adapter.user_text(params["instruction"], "ICD's instruction")
    row = request.adapter.build_row(request.question, request.image, system=instruction)
    return Branches({"disturbed": row}, {"instruction": instruction})


def _noisy_instruction_text(request: BranchRequest, params: dict) -> str:
    """ID's noisy instruction for this question (the question is the instruction, the image the input), by variant:
    the meta-instruction before the question (opposite_full) or in its place (opposite), nothing (none), 60 % of
    its words shuffled (trunc_shuf), a random word of the model's vocabulary (random_words)."""
    variant, question = branches.ID_VARIANTS[params["variant"]], request.question
    if variant in ("opposite_full", "opposite"):
        instruction = request.adapter.user_text(params["instruction"], "ID's instruction")
        return f"{instruction}\n{question}" if variant == "opposite_full" else instruction
    if variant == "trunc_shuf":
        return branches.truncated_shuffled(question, random.Random(request.seed))
    if variant == "random_words":  # the release: one word of NLTK's list, then ".\n\n" before the input
        tokenizer = request.adapter.tokenizer
        words = branches.vocabulary_words(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
        return random.Random(request.seed).choice(words) + "." if words else ""
    return ""


def _noisy_instruction(request: BranchRequest, params: dict) -> Branches:
    """Instructive Decoding: the same image under a noisy instruction (``variant``), the question distorted or
    replaced; the words this model's tokenizer does not know are counted for the page."""
    text = _noisy_instruction_text(request, params)
    tokenizer = request.adapter.tokenizer
    unknown = tokenizer.encode(text, add_special_tokens=False).count(tokenizer.unk_token_id) if text else 0
    info = {"variant": branches.ID_VARIANTS[params["variant"]], "noisy_instruction": text, "unknown_tokens": unknown}
    return Branches({"noisy": request.adapter.build_row(text, request.image)}, info)


def _dropout_amateur(request: BranchRequest, params: dict) -> Branches:
    """Distillation CD: the same prompt and image as its amateur row, with dropout on that row's attention
    probabilities in every decoder layer (``decoding.attention.AttentionDropout``, drawn from the run's seed); as
    released, none (the release sets a rate no attention module reads), and the amateur is the original row itself."""
    rate = 0.0 if params["as_released"] else params["dropout"]
    info = {"dropout": rate, "as_released": bool(params["as_released"]), "seed": request.seed,
            "decoder_layers": _decoder_layers(request.adapter)}
    edits = {"amateur": AttentionDropout(p=rate, seed=request.seed)} if rate > 0 else {}
    return Branches({"amateur": request.original}, info, attention_edits=edits)


def _local_view(request: BranchRequest, params: dict) -> Branches:
    """AGLA-like: the picture with the pixels least relevant to the question blacked out (the top ``ratio`` kept),
    ranked by the model's own prefill attention over the image tokens (``mask`` 0) or, on the shapes world, by the
    scene's ground truth (``mask`` 1), then the family's own preprocessing (``decoding.agla``)."""
    image, question = request.image, request.question
    if params["mask"]:
        scene = agla.known_scene(image)
        if scene is None:
            raise ValueError("AGLA-like's oracle mask (mask 1) needs a shapes-world scene whose ground truth is known "
                             "(the shapes-world lab's); this picture is none. Use mask 0, the model's own attention")
        relevance = agla.oracle_relevance(scene, question)
    else:
        grid = request.original.image_grid
        if grid is None:
            raise ValueError("AGLA-like's mask cannot be laid over this picture: this model's image tokens have no "
                             "place in it (InstructBLIP's Q-Former queries each read the whole picture)")
        attention = branch_rows.prefill_image_attention(request.adapter, request.original).mean(dim=0)
        box = request.adapter.image_grid_box(image.size)  # the part of the picture the image tokens see
        relevance = agla.upsampled(attention.reshape(grid).cpu(), image.size, box)
    keep = agla.keep_top(relevance, params["ratio"])
    info = {"mask": "oracle" if params["mask"] else "attention", "ratio": params["ratio"],
            "kept_ratio": agla.kept_share(relevance, keep)}
    return Branches({"local": request.adapter.build_row(question, agla.blacked(image, keep))}, info)


def _masked_heads(request: BranchRequest, params: dict, uniform: bool, last_query_only: bool) -> Branches:
    """DeCoRe and MaskCD: the same prompt and image as a contrast row of its own, with the top ``heads`` of the
    model's head list masked (``decoding.image_heads``; a model without a list is refused)."""
    adapter = request.adapter
    heads = masked_heads(adapter.model, model_source(adapter), params["heads"])
    layers, per_layer = head_geometry(adapter.model)
    info = {"masked_heads": [f"{layer}-{head}" for layer, head in heads], "total_heads": layers * per_layer,
            "head_list": shown_folder(model_source(adapter), "image_heads"),
            "masking": "uniform" if uniform else "zeroed", "last_query_only": last_query_only}
    edit = HeadMask(heads, uniform=uniform, last_query_only=last_query_only)
    return Branches({"masked": request.original}, info, attention_edits={"masked": edit})


def _decore_heads(request: BranchRequest, params: dict) -> Branches:
    return _masked_heads(request, params, uniform=True, last_query_only=bool(params["as_released"]))


def _maskcd_heads(request: BranchRequest, params: dict) -> Branches:
    return _masked_heads(request, params, uniform=False, last_query_only=False)


def _amateur_model(request: BranchRequest, params: dict) -> Branches:
    """CD: the amateur model's row, the expert's prompt without its image tokens (``amateur_prompt`` 1) or only its
    last token (0, as the release's outputs were made); the rule is told whether this run is greedy (its cut)."""
    amateur = amateur_for(request.adapter, "CD")
    row = amateur_row(amateur, request.original, whole_prompt=bool(params["amateur_prompt"]))
    cut = bool(params["cut"]) or request.do_sample
    info = {"amateur": amateur_source(request.adapter), "amateur_prompt_tokens": row.length,
            "whole_prompt": bool(params["amateur_prompt"]), "head_cut": params["beta"] if cut else 0.0}
    return Branches({"amateur": row}, info, rule_args={"head_cut": info["head_cut"]})


def _language_model(request: BranchRequest, params: dict) -> Branches:
    """LCD: the LVLM's language model on the expert's prompt without its image tokens: the attached or shipped
    amateur, or (``amateur`` 1, or 0 on the families whose LVLM is its LLM) the model's own text-only row."""
    adapter = request.adapter
    own = uses_own_text_row(adapter, params["amateur"])
    if own:
        row = adapter.build_row(request.question, None)
    else:
        row = amateur_row(amateur_for(adapter, "LCD"), request.original)
    info = {"amateur": "self" if own else amateur_source(adapter), "amateur_prompt_tokens": row.length}
    return Branches({"amateur": row}, info)


def _no_branches(request: BranchRequest, params: dict) -> Branches:
    return Branches({})


# cd_rethink's PBA prompt (inference/pope_infer_pba.py L51) is " Answer the question using a single word or phrase.
# Answer yes whenever possible."; the first sentence is POPE's answer-format suffix, which eval adds to every side.
PBA_SUFFIX = " Answer yes whenever possible."


def _yes_prompt(request: BranchRequest, params: dict) -> Branches:
    """PBA: the same image with the question asking for "yes" whenever possible."""
    prompt = request.question + PBA_SUFFIX
    return Branches({}, {"prompt": prompt}, original=request.adapter.build_row(prompt, request.image))


def _answer_token(adapter: FamilyAdapter, word: str) -> int:
    """The first token of ``word`` as the model writes it at the start of an answer ("Yes", else "yes")."""
    tokenizer = adapter.tokenizer
    for spelling in (word, word.lower()):
        ids = tokenizer.encode(spelling, add_special_tokens=False)
        if ids and ids[0] != tokenizer.unk_token_id:
            return int(ids[0])
    raise ValueError(f"OLM needs a token for {word!r}, and this model's tokenizer has none")


def _yes_no_tokens(request: BranchRequest, params: dict) -> Branches:
    """OLM: no rows; the model's own "Yes" / "No" tokens (cd_rethink hard-codes LLaMA's 3869 / 1939)."""
    adapter = request.adapter
    ids = {"yes_id": _answer_token(adapter, "Yes"), "no_id": _answer_token(adapter, "No")}
    info = {**ids, "yes_piece": adapter.token_piece(ids["yes_id"]), "no_piece": adapter.token_piece(ids["no_id"])}
    return Branches({}, info, rule_args=ids)


def _farthest_augmentation(request: BranchRequest, params: dict) -> Branches:
    """VACoDe: each of Self-Aug's six augmentations, one first step each (one batched prefill); the augmentation whose
    next-token distribution is farthest (L2) from the original's is the contrast row."""
    adapter, names = request.adapter, branches.AUGMENTATIONS
    candidates = [branch_rows.augmented_row(adapter, request.original, name, request.seed) for name in names]
    first = request.model_pre_steps().first_step_logits([request.original, *(row for row, _ in candidates)])
    choice = int(rules.vacode_choice(first[:1], first[1:]))
    distances = rules.distribution_l2(first[:1].expand(len(names), -1), first[1:])
    row, aug_info = candidates[choice]
    info = {"augmentation": names[choice], "distances": dict(zip(names, distances.tolist())), **aug_info}
    return Branches({"augmented": row}, info)


def _amplified_with_text_only(request: BranchRequest, params: dict) -> Branches:
    """PAI: the original row's image attention amplified (``decoding.attention``), and the prompt without the image
    for the CFG term (the row M3ID uses)."""
    # As released, the first answer token goes unamplified only with the CFG term on (gamma != 1: --use-cfg, whose
    # processor clears the layers' use_cfg flag after the image row's prefill, CFG.py L32-49); gamma 1 is the release
    # without --use-cfg, amplified from the first token (attention.py L90).
    late = bool(params["as_released"]) and params["gamma"] != 1.0
    amplify = ImageAmplification(alpha=params["alpha"], first_layer=params["first_layer"], first_step=int(late))
    info = {"amplified_from_token": 2 if late else 1, "first_layer": params["first_layer"],
            "decoder_layers": _decoder_layers(request.adapter)}
    text_only = {"text_only": request.adapter.build_row(request.question, None)}
    return Branches(text_only, info, attention_edits={"original": amplify})


# SID's release keeps 100 of LLaVA-1.5's 576 image tokens for POPE (fast-v-attention-rank, pope_eval.py L83-107).
SID_RELEASED_KEEP, SID_RELEASED_IMAGE_TOKENS = 100, 576


def sid_keep_for(image_tokens: int) -> int:
    """SID's kept image tokens for a model with ``image_tokens`` of them, at the release's share (100 of 576),
    rounded, at least 1.

    >>> sid_keep_for(576), sid_keep_for(36), sid_keep_for(2)
    (100, 6, 1)
    """
    return max(1, round(SID_RELEASED_KEEP * image_tokens / SID_RELEASED_IMAGE_TOKENS))


def _decoder_layers(adapter: FamilyAdapter) -> int:
    return int(adapter.model.config.get_text_config().num_hidden_layers)


def _self_introspective(request: BranchRequest, params: dict) -> Branches:
    """SID: the same prompt and image as a contrast row of its own, whose attention keeps, from layer ``layer`` on,
    only the image tokens its own query attended least at the layer before (CT²S); ``keep`` 0 is the release's
    share of this model's image tokens."""
    image_tokens = int(request.original.image_token_positions.numel())
    keep = params["keep"] or sid_keep_for(image_tokens)
    edit = SelfIntrospection(keep=keep, layer=params["layer"])
    skip_cut = bool(params["as_released"]) and not request.do_sample
    info = {"kept_image_tokens": keep, "image_tokens": image_tokens, "from_layer": params["layer"],
            "decoder_layers": _decoder_layers(request.adapter), "greedy_skips_cut": skip_cut}
    return Branches(
        {"introspective": request.original}, info, rule_args={"skip_cut": skip_cut},
        attention_edits={"introspective": edit},
    )


def _blind_tokens(request: BranchRequest, params: dict) -> Branches:
    """AvisC: the original row's own prefill attention picks the image tokens it over-attends ("blind" tokens); the
    contrast row is the same prompt with every other image embedding zeroed."""
    attention = branch_rows.prefill_image_attention(request.adapter, request.original)
    blind = rules.avisc_blind_tokens(attention, gamma=params["layer_gamma"], lam=params["lam"])
    keep = tuple(int(i) for i in torch.nonzero(blind).flatten())
    info = {"blind_tokens": list(keep), "image_tokens": int(blind.numel())}
    return Branches({"blind": request.original}, info, attention_edits={"blind": BlindTokens(keep)})


def dola_candidate_layers(num_layers: int, high: bool, tied_embeddings: bool) -> tuple[int, ...]:
    """DoLa's candidate premature layers as transformers chose them for ``dola_layers="low" / "high"`` (4.52's
    ``_dola_decoding``, ``generation/utils.py`` L2915-2947, which the transformers-community/dola ``custom_generate``
    code keeps): the lower or upper half's even layers (for more than 40 layers, the first or last 20). With tied
    embeddings the lower half starts at 2, skipping the embeddings (index 0, an identity exit there); at 1 for a
    2-layer model; a lower half starting at its own end is that one layer. Where transformers' list comes out empty
    (tied, 3 layers: it then fails), the start layer alone.

    >>> dola_candidate_layers(32, high=False, tied_embeddings=False), dola_candidate_layers(32, True, False)[:3]
    ((0, 2, 4, 6, 8, 10, 12, 14), (16, 18, 20))
    >>> dola_candidate_layers(2, high=False, tied_embeddings=True), dola_candidate_layers(4, False, True)
    ((1,), (2,))
    """
    half = num_layers // 2
    if not tied_embeddings or num_layers < 2:
        start = 0
    else:
        start = 2 if num_layers > 2 else 1
    if high:
        layers = range(half, num_layers, 2) if num_layers <= 40 else range(num_layers - 20, num_layers, 2)
    else:  # a lower half that starts at its own end is empty: the start layer alone, below
        layers = range(start, half, 2) if num_layers <= 40 else range(start, 20, 2)
    return tuple(layers) or (start,)


def dola_tied_embeddings(config) -> bool:
    """Whether DoLa skips the embeddings' exit: the flag transformers reads, the model's top-level config's (not its
    text config's: InternVL's say different things), True where that config has none (4.52's ``PretrainedConfig``
    default, ``configuration_utils.py`` L223-224)."""
    return bool(getattr(config, "tie_word_embeddings", True))


def _candidate_layers(request: BranchRequest, params: dict) -> Branches:
    """DoLa: no rows; the premature layers to contrast the final one with, from the model's own depth."""
    config = request.adapter.model.config
    tied = dola_tied_embeddings(config)
    layers = dola_candidate_layers(config.get_text_config().num_hidden_layers, bool(params["high_layers"]), tied)
    return Branches({}, {"candidate_layers": list(layers)}, rule_args={"layers": layers}, layers=layers)


# ---- per-step rules bound to the rows ------------------------------------------------------------------------------
def _ritual_rule(L: dict, t: int, params: dict) -> Combination:
    logits = rules.ritual.__wrapped__(L["original"], L["transformed"], alpha=params["alpha_pos"], beta=params["beta"])
    return Combination(logits)


def _ritual_vcd_rule(L: dict, t: int, params: dict) -> Combination:
    p = params
    logits = rules.ritual_vcd.__wrapped__(
        L["original"], L["transformed"], L["noised"], alpha_pos=p["alpha_pos"], alpha=p["alpha"], beta=p["beta"]
    )
    return Combination(logits)


def _savcd_rule(L: dict, t: int, params: dict) -> Combination:
    original, gamma = L["original"], params["gamma"]
    logits = rules.savcd.__wrapped__(original, L["augmented"], alpha=params["alpha"], gamma=gamma)
    scalars = {"plausibility_cut": float(rules.savcd_beta.__wrapped__(original, gamma=gamma)[0])}
    return Combination(logits, scalars)


def _code_rule(L: dict, t: int, params: dict) -> Combination:
    exponent = params["exponent"]
    divergence = float(rules.code_divergence.__wrapped__(L["original"], L["description"], exponent=exponent)[0])
    logits = rules.code.__wrapped__(L["original"], L["description"], exponent=exponent)
    return Combination(logits, {"contrast_weight": 1.0 - divergence, "plausibility_cut": divergence})


def _m3id_rule(L: dict, t: int, params: dict) -> Combination:
    lam = params["lam"]
    logits = rules.m3id.__wrapped__(L["original"], L["text_only"], step=t, lam=lam, beta=params["beta"])
    return Combination(logits, {"contrast_weight": float(rules.m3id_weight.__wrapped__(t, lam=lam))})


def _adacad_rule(L: dict, t: int, params: dict) -> Combination:
    """``rules.adacad`` with its per-row weight computed once, for the rule (CAD at that weight) and the scalar."""
    original, text_only = L["original"], L["text_only"]
    weight = rules.adacad_weight.__wrapped__(original, text_only, threshold=params["threshold"])
    logits = rules.cad.__wrapped__(original, text_only, alpha=weight.unsqueeze(-1), beta=params["beta"])
    return Combination(logits, {"contrast_weight": float(weight[0])})


def _instructive_rule(L: dict, t: int, params: dict) -> Combination:
    return Combination(rules.instructive.__wrapped__(L["original"], L["noisy"], eps=params["eps"]))


def _distillation_cd_rule(L: dict, t: int, params: dict) -> Combination:
    return Combination(rules.distillation_cd.__wrapped__(L["original"], L["amateur"], beta=params["beta"],
                                                         alpha=params["alpha"]))


def _agla_rule(L: dict, t: int, params: dict) -> Combination:
    return Combination(rules.agla.__wrapped__(L["original"], L["local"], alpha=params["alpha"], beta=params["beta"]))


def _masked_head_rule(L: dict, t: int, params: dict) -> Combination:
    """DeCoRe's rule (``rules.decore``) for DeCoRe and MaskCD: the entropy weight (``entropy`` 1) or the fixed
    ``alpha``, computed once for the rule and the scalar."""
    original = L["original"]
    if params["entropy"]:
        weight = rules.decore_weight.__wrapped__(original, alpha_cap=params.get("alpha_cap", 0.0))
    else:
        weight = torch.full(original.shape[:1], float(params["alpha"]), device=original.device)
    logits = rules.decore.__wrapped__(original, L["masked"], alpha=weight.unsqueeze(-1))
    return Combination(logits, {"contrast_weight": float(weight[0])})


def _cd_rule(L: dict, t: int, params: dict) -> Combination:
    logits = rules.cd.__wrapped__(L["original"], L["amateur"], alpha=params["alpha"],
                                  amateur_temperature=params["amateur_temperature"], beta=params["head_cut"])
    return Combination(logits)


def _lcd_rule(L: dict, t: int, params: dict) -> Combination:
    weight, entropy = rules.lcd_weight(L["amateur"], alpha=params["alpha"], alpha_cap=params["alpha_cap"])
    logits = rules.lcd.__wrapped__(L["original"], L["amateur"], alpha=params["alpha"], beta=params["beta"],
                                   alpha_cap=params["alpha_cap"])
    return Combination(logits, {"contrast_weight": float(weight[0]), "amateur_entropy": float(entropy[0])})


def _apc_rule(L: dict, t: int, params: dict) -> Combination:
    return Combination(rules.apc_only.__wrapped__(L["original"], beta=params["beta"]))


def _original_rule(L: dict, t: int, params: dict) -> Combination:
    return Combination(L["original"].float().clone())  # a new tensor, as every rule's result


def _olm_rule(L: dict, t: int, params: dict) -> Combination:
    """OLM's chosen token as the only candidate (a one-hot distribution), so the trace reads like any rule's."""
    original = L["original"]
    chosen = rules.olm.__wrapped__(
        original, params["yes_id"], params["no_id"], mass=params["mass"], margin=params["margin"]
    )
    logits = torch.full_like(original, float("-inf"), dtype=torch.float32)
    return Combination(logits.scatter(-1, chosen[:, None], 0.0))


def _pai_rule(L: dict, t: int, params: dict) -> Combination:
    logits = rules.pai_cfg.__wrapped__(L["original"], L["text_only"], gamma=params["gamma"], beta=params["beta"])
    return Combination(logits)


_sid_contrast = contrast(rules.sid, "introspective")


def _sid_rule(L: dict, t: int, params: dict) -> Combination:
    if params["skip_cut"]:  # as released, greedy: the argmax of the unmasked difference (vcd_sample.py L190–191)
        original, introspective = L["original"].float(), L["introspective"].float()
        return Combination((1.0 + params["alpha"]) * original - params["alpha"] * introspective)
    return _sid_contrast(L, t, params)


def _dola_rule(L: dict, t: int, params: dict) -> Combination:
    layers, final = params["layers"], L["original"]
    candidates = torch.stack([L[f"layer {j}"] for j in layers])
    pick = int(rules.dola_select_layer(final, candidates)[0])
    logits = rules.dola.__wrapped__(final, candidates[pick], beta=params["beta"])
    return Combination(logits, {"premature_layer": float(layers[pick])})


def _deco_rule(L: dict, t: int, params: dict) -> Combination:
    layers = params["layers"]
    early = torch.stack([L[f"normed layer {j}"] for j in layers])
    top_p, top_k = params["threshold_top_p"], params["threshold_top_k"]
    logits, pick, m = rules.deco.__wrapped__(L["original"], early, alpha=params["alpha"], top_p=top_p, top_k=top_k)
    return Combination(logits, {"anchor_layer": float(layers[int(pick[0])]),
                                "anchor_weight": float(params["alpha"] * m[0])})


def _only_rule(L: dict, t: int, params: dict) -> Combination:
    logits, d = rules.only.__wrapped__(
        L["original"], L["enhanced"], alpha_collaborative=params["alpha_collaborative"],
        alpha_contrastive=params["alpha_contrastive"], beta=params["beta"], gamma=params["gamma"])
    distance = float(d[0])
    return Combination(logits, {"enhancement_distance": distance, "collaborative": float(distance < params["gamma"]),
                                "removed_heads": float(L["removed heads"].reshape(-1)[0])})


def _vista_rule(L: dict, t: int, params: dict) -> Combination:
    layers = params["layers"]
    if not layers:  # SLA off: the steered row's own logits
        return Combination(L["original"].float().clone())  # a new tensor, as every rule's result
    early = torch.stack([L[f"layer {j}"] for j in layers])
    return Combination(rules.vista_sla.__wrapped__(L["original"], early, alpha=params["alpha"]))


def _memvr_rule(L: dict, t: int, params: dict) -> Combination:
    """The retraced row's own logits; its forward's retrace layer and uncertainty as the step's scalars."""
    scalars = {"retrace_layer": float(L["retrace layer"].reshape(-1)[0]),
               "layer_uncertainty": float(L["layer uncertainty"].reshape(-1)[0])}
    return Combination(L["original"].float().clone(), scalars)  # a new tensor, as every rule's result


def _opera_rule(L: dict, t: int, params: dict) -> Combination:
    """OPERA's beam scores: the raw logits' top candidates, each lowered by its over-trust penalty (``"over_trust"``:
    (rows, C), from the beam search's look-ahead; absent, no penalty), all else −999. The scalar: the penalty taken
    off the token this distribution ranks first (row 0); the beam search reports each chosen token's own."""
    original, penalty = L["original"], L.get("over_trust")
    c = min(params["num_attn_candidates"], original.shape[-1])
    logits = rules.opera_candidates.__wrapped__(
        original, penalty, num_candidates=c, penalty_weight=params["penalty_weights"]
    )
    taken = 0.0
    if penalty is not None:
        first = original.float().topk(c, dim=-1).indices[0] == logits[0].argmax()
        # Every candidate lowered below the -999 fill (a large sigma): the top token is none of them, and no penalty
        # was taken off it; the release decodes on from the fill (utils.py L3556-3557).
        if bool(first.any()):
            taken = float(params["penalty_weights"] * penalty[0][first][0])
    return Combination(logits, {"over_trust_penalty": taken})


def deco_candidate_layers(num_layers: int, from_depth: float, to_depth: float) -> tuple[int, ...]:
    """DeCo's candidate early-exit layers on a model of ``num_layers`` decoder layers: hidden-state indices
    ``ceil(from_depth·N) .. floor(to_depth·N)``, below N (index N is the final layer itself; transformers 5's
    ``hidden_states[N]`` is already normed); a start past the end takes the end alone. The release's
    ``range(20, 29)`` on LLaVA-1.5-7B's 32 layers is 0.625 .. 0.875 of the depth.

    >>> deco_candidate_layers(32, 0.625, 0.875), deco_candidate_layers(4, 0.625, 0.875)
    ((20, 21, 22, 23, 24, 25, 26, 27, 28), (3,))
    >>> deco_candidate_layers(2, 0.625, 0.875), deco_candidate_layers(4, 1.0, 1.0), deco_candidate_layers(4, 0.0, 0.0)
    ((1,), (3,), (0,))
    """
    # Rounded first, so that a share such as 0.7 of 10 layers is 7, not 7.000000000000001.
    last = min(math.floor(round(to_depth * num_layers, 6)), num_layers - 1)
    first = min(math.ceil(round(from_depth * num_layers, 6)), last)
    return tuple(range(first, last + 1))


def _one_layer_enhancement(request: BranchRequest, params: dict) -> Branches:
    """ONLY: no rows; the original row's own forward also yields its "textually enhanced" logits
    (``decoding.attention.OneLayerEnhancement``), on a family whose layers can carry them (else refused)."""
    edit = OneLayerEnhancement()
    request.adapter.check_one_layer_enhancement(edit.layer)
    info = {"layer": edit.layer, "decoder_layers": _decoder_layers(request.adapter)}
    return Branches({}, info, attention_edits={"original": edit})


def _normed_candidate_layers(request: BranchRequest, params: dict) -> Branches:
    """DeCo: no rows; the early exits (through the final norm) that may lend the final layer their logits."""
    model = request.adapter.model
    if not isinstance(getattr(model.get_decoder(), "norm", None), torch.nn.Module):
        raise ValueError("DeCo needs the language model's final norm (its decoder's 'norm'), which this model does "
                         "not name; it cannot run DeCo")
    depth = int(model.config.get_text_config().num_hidden_layers)
    layers = deco_candidate_layers(depth, params["from_depth"], params["to_depth"])
    return Branches({}, {"candidate_layers": list(layers)}, rule_args={"layers": layers}, normed_layers=layers)


def _visual_steering(request: BranchRequest, params: dict) -> Branches:
    """VISTA: no contrast row. Its visual steering vector (``lam`` > 0): each decoder layer's output at the last
    prompt position, from two unsteered prefills of the prompt with and without the image, the first minus the
    second (``steering_vector.py`` L91–129, one pair: the rank-1 PCA's added unit vector, a quirk of one sample, is
    dropped); it steers every layer's MLP output of the original row (and of its noised twin, so that the two differ
    by the noise only), prompt and answer. SLA (``alpha`` > 0): the early exits its rule blends in."""
    adapter = request.adapter
    depth = check_mlp_edits(adapter, "VISTA")
    layers = deco_candidate_layers(depth, params["from_depth"], params["to_depth"]) if params["alpha"] else ()
    info = {"decoder_layers": depth, "sla_layers": list(layers), "lam": params["lam"], "alpha": params["alpha"]}
    edits = {}
    if params["lam"]:
        with_image = last_position_layer_outputs(adapter, request.original)
        without_image = last_position_layer_outputs(adapter, adapter.build_row(request.question, None))
        edit = MlpSteering(with_image - without_image, params["lam"], cosine_boost=True)
        edits = {"original": edit, **({"distorted": edit} if request.distorted is not None else {})}
        info["vector_norms"] = [float(n) for n in edit.directions.norm(dim=-1)]
    return Branches({}, info, rule_args={"layers": layers}, layers=layers, attention_edits=edits)


def memvr_trigger_layers(num_layers: int, from_depth: float, to_depth: float) -> tuple[int, ...]:
    """The decoder layers (0-based) after which MemVR may fire, on a model of ``num_layers`` layers:
    ``ceil(from_depth·N) .. floor(to_depth·N)``, at most N−2 (the next layer must exist); a start past the end takes
    the end alone. The release's ``5 < ℓ < 16`` of LLaVA-1.5's 32 is 6 .. 15, shares 0.1875 .. 0.46875.

    >>> memvr_trigger_layers(32, 0.1875, 0.46875), memvr_trigger_layers(4, 0.1875, 0.46875)
    ((6, 7, 8, 9, 10, 11, 12, 13, 14, 15), (1,))
    >>> memvr_trigger_layers(2, 0.1875, 0.46875), memvr_trigger_layers(4, 1.0, 1.0)
    ((0,), (2,))
    """
    last = max(min(math.floor(round(to_depth * num_layers, 6)), num_layers - 2), 0)
    first = min(math.ceil(round(from_depth * num_layers, 6)), last)
    return tuple(range(first, last + 1))


def _visual_retracing(request: BranchRequest, params: dict) -> Branches:
    """MemVR: no contrast row; the original row's forward re-reads its visual tokens in one FFN when a layer is
    uncertain (``decoding.steering.VisualRetracing``; its noised twin its own, so that the two differ by the noise
    only). A model without decoder-layer MLPs or a final norm is refused."""
    adapter = request.adapter
    depth = check_mlp_edits(adapter, "MemVR", lens=True)
    layers = memvr_trigger_layers(depth, params["from_depth"], params["to_depth"]) if depth > 1 else ()
    info = {"decoder_layers": depth, "trigger_layers": list(layers), "ratio": params["ratio"],
            "threshold": params["threshold"], "image_tokens": int(request.original.image_token_positions.numel())}
    if not layers:
        raise ValueError("MemVR cannot run on a model of one decoder layer: it retraces in the layer after an "
                         "uncertain one")

    def edit() -> VisualRetracing:
        return VisualRetracing(params["ratio"], params["threshold"], layers)

    edits = {"original": edit(), **({"distorted": edit()} if request.distorted is not None else {})}
    return Branches({}, info, attention_edits=edits)


def _beam_only(request: BranchRequest, params: dict) -> Branches:
    """OPERA: no contrast rows; its beams are rows of the beam search (``decoding.beam``)."""
    return Branches({}, {"num_beams": params["num_beams"]})


def _trained_detector(request: BranchRequest, params: dict) -> Branches:
    """ECD-like: no rows; the detector trained for this model (``decoding.detector``; refused when there is none)
    and the features it reads from the original row's own forward."""
    adapter = request.adapter
    bound = detector_for(adapter.model, model_source(adapter))
    info = {"detector": shown_folder(model_source(adapter), "ecd"), "hidden_layer": bound.hidden_layer}
    return Branches({}, info, rule_args={"detector": bound}, features=(bound.hidden_layer,))


def _decoupled_projections(request: BranchRequest, params: dict) -> Branches:
    """DCD: the same prompt and image as a contrast row whose image-token embeddings come through the negative
    projector copy; in the "pos+neg" variant (0) the original row's through the positive one, in "neg-only" (1) the
    model's own projector is the positive side. The copies' embeddings are computed once per request
    (``decoding.dcd``; a model without copies, or a family without a projector, is refused)."""
    adapter, row = request.adapter, request.original
    copies = projector_copies(adapter)
    edits = {"negative": projected_image_embeddings(adapter, row, copies["negative"])}
    if not params["variant"]:
        edits["original"] = projected_image_embeddings(adapter, row, copies["positive"])
        if request.distorted is not None:  # visual dependence: the noised image through the same positive copy
            edits["distorted"] = projected_image_embeddings(adapter, request.distorted, copies["positive"])
    info = {"projectors": shown_folder(model_source(adapter), "dcd"),
            "variant": "neg-only" if params["variant"] else "pos+neg",
            "replaced_image_tokens": int(edits["negative"].offsets.numel())}
    return Branches({"negative": row}, info, attention_edits=edits)


def _vti_steering(request: BranchRequest, params: dict) -> Branches:
    """VTI: no contrast row. The directions computed for this model (``decoding.vti``; refused when there are none)
    steer the original row (and its noised twin, so that the two differ by the noise only): the textual one every
    decoder layer's MLP output (``alpha_text`` > 0), the visual one every vision-encoder layer's MLP output for the
    row's own image, run alone, whose image-token embeddings then replace the row's (``alpha_image`` > 0)."""
    adapter = request.adapter
    vti.check_family(adapter, params["alpha_image"])
    directions = vti.directions_for(adapter)
    vti.check_demos(adapter, directions, params["demos"])
    info = {"directions": shown_folder(model_source(adapter), "vti"), "demos": params["demos"],
            "alpha_text": params["alpha_text"], "alpha_image": params["alpha_image"],
            "decoder_layers": int(directions.text[params["demos"]].shape[0]), "visual": ""}
    edits = {}
    for role, row in (("original", request.original), ("distorted", request.distorted)):
        if row is None:
            continue
        edit, kind = vti.row_edit(adapter, row, directions, params["demos"], params["alpha_text"],
                                  params["alpha_image"])
        if edit is not None:
            edits[role] = edit
        info["visual"] = info["visual"] or kind
    return Branches({}, info, attention_edits=edits)


def _ecd_rule(L: dict, t: int, params: dict) -> Combination:
    z = params["detector"].logits(L)
    top = L["original"].argmax(dim=-1, keepdim=True)
    flag = float(torch.sigmoid(z.gather(-1, top))[0, 0])
    logits = rules.ecd.__wrapped__(L["original"], z, lam=params["lam"], beta=params["beta"])
    return Combination(logits, {"hallucination_flag": flag})


# ---- what each method's construction did, in words (its record's ``notes``) ----------------------------------------
def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _noise_notes(info: dict) -> list[Note]:
    return [Note(f"Diffusion noise at step **{info['noise_step']}** of 1000 on the contrast image "
                 f"(seed {info['noise_seed']}).")]


def _transform_notes(info: dict) -> list[Note]:
    transform = dict(info["transform"])
    name = transform.pop("name")
    details = ", ".join(f"{key} = {_short(value)}" for key, value in transform.items())
    return [Note(f"RITUAL's random transform: **{name}**" + (f" ({details})." if details else "."))]


def _transform_and_noise_notes(info: dict) -> list[Note]:
    return _transform_notes(info) + _noise_notes(info)


def _self_augmentation_notes(info: dict) -> list[Note]:
    fallback = "" if info["choice_parsed"] else " (its answer named no augmentation, so noise is used)"
    return [Note(f"The model, asked without the image, chose the augmentation **{info['augmentation']}**{fallback}. "
                 "Its answer:", info["augmentation_reason"])]


def _farthest_augmentation_notes(info: dict) -> list[Note]:
    distances = ", ".join(f"{name} {value:.3g}" for name, value in info["distances"].items())
    return [Note(f"The augmentation whose first-step next-token distribution is farthest (L2) from the original "
                 f"image's: **{info['augmentation']}** (distances: {distances}). The model is not asked.")]


def _description_notes(info: dict) -> list[Note]:
    return [Note("The model's own description of the image, the contrast row's context:", info["description"])]


def _text_only_notes(info: dict) -> list[Note]:
    return [Note("The contrast row is the same prompt without the image; its weight grows with each token.")]


def _context_notes(info: dict) -> list[Note]:
    return [Note("The contrast row is the same prompt without the image: what the image adds is amplified.")]


def _adaptive_context_notes(info: dict) -> list[Note]:
    return [Note("The contrast row is the same prompt without the image; each token's weight is how much the image "
                 "changes the next-token distribution (Jensen–Shannon divergence, 0 to ln 2).")]


def _instruction_notes(info: dict) -> list[Note]:
    return [Note("Disturbing system instruction of the contrast row:", info["instruction"])]


def _noisy_instruction_notes(info: dict) -> list[Note]:
    if not info["noisy_instruction"]:
        return [Note(f"Noisy instruction (**{info['variant']}**): the contrast row is the image with no question.")]
    unknown = info["unknown_tokens"]
    unread = f" This model's tokenizer reads {unknown} of its tokens as unknown." if unknown else ""
    return [Note(f"Noisy instruction (**{info['variant']}**) of the contrast row, with the image.{unread}",
                 info["noisy_instruction"])]


def _dropout_notes(info: dict) -> list[Note]:
    if not info["dropout"]:
        why = ("as released: the release sets its rate where no attention module reads it" if info["as_released"]
               else "dropout 0")
        return [Note(f"**No dropout** ({why}): the amateur row is the original row itself, so Distillation CD "
                     "decodes as its alpha cut alone (greedy: as plain decoding).")]
    return [Note(f"The amateur row: the same prompt and image with dropout **{_short(info['dropout'])}** on its "
                 f"attention probabilities in each of the {info['decoder_layers']} decoder layers, a fresh mask at "
                 f"every token (seed {info['seed']}).")]


def _local_view_notes(info: dict) -> list[Note]:
    source = ("the scene's ground truth (an oracle: the shapes the question names, then what is nearest them)"
              if info["mask"] == "oracle" else
              "the model's own attention to the image at the prompt's last token (mean over layers and heads)")
    return [Note(f"The local view keeps **{info['kept_ratio']:.0%}** of the pixels the model sees, the most relevant "
                 f"to the question by {source}; the rest is black. AGLA-like: the release ranks them with BLIP's "
                 "image-text matching, which is not available offline.")]


def _amplification_notes(info: dict) -> list[Note]:
    layer, layers = info.get("first_layer"), info.get("decoder_layers")
    if layers is not None and layer >= layers:
        return [Note(f"**No amplification**: first_layer {layer} is past this model's {layers} decoder layers (0 to "
                     f"{layers - 1}); only the CFG term against the prompt without the image acts.")]
    return [Note(f"Image attention amplified from decoder layer **{info.get('first_layer')}** on, from answer token "
                 f"{info.get('amplified_from_token')}; the CFG term contrasts with the prompt without the image.")]


def _introspection_notes(info: dict) -> list[Note]:
    cut = " Greedy, as released: no plausibility cut." if info.get("greedy_skips_cut") else ""
    kept, image_tokens = info.get("kept_image_tokens"), info.get("image_tokens")
    layer, layers = info.get("from_layer"), info.get("decoder_layers")
    if image_tokens is not None and kept >= image_tokens:
        return [Note(f"**Nothing to hide**: the contrast row keeps {kept} image tokens and this model has "
                     f"{image_tokens}, so it equals the original row and SID decodes as plain decoding here. Lower "
                     f"keep (0: the release's share) to see it act.")]
    if layers is not None and layer >= layers:
        return [Note(f"**Nothing to hide**: layer {layer} is past this model's {layers} decoder layers (0 to "
                     f"{layers - 1}), so the contrast row equals the original row and SID decodes as plain decoding "
                     f"here. Lower layer to see it act.")]
    of = f" of {image_tokens}" if image_tokens is not None else ""
    return [Note(f"The contrast row keeps, from decoder layer **{info.get('from_layer')}** on, only the "
                 f"{kept} image tokens{of} its own query attended least.{cut}")]


def _blind_token_notes(info: dict) -> list[Note]:
    return [Note(f"The contrast row keeps only the **{len(info['blind_tokens'])}** over-attended ('blind') image "
                 f"tokens of {info['image_tokens']}; every other image embedding is zeroed.")]


def _layer_notes(info: dict) -> list[Note]:
    layers = ", ".join(map(str, info["candidate_layers"]))
    return [Note(f"No contrast row: at each step the final layer is contrasted with the early exit, among layers "
                 f"{layers}, farthest from it (JSD).")]


def _normed_layer_notes(info: dict) -> list[Note]:
    layers = ", ".join(map(str, info["candidate_layers"]))
    return [Note(f"No contrast row: at each step the early exit through the final norm, among layers {layers}, most "
                 "sure of one of the final layer's candidates lends the final logits its own, weighted by that "
                 "probability.")]


def _one_layer_notes(info: dict) -> list[Note]:
    return [Note(f"No contrast row: at each step, layer {info['layer']}'s attention of the newest token, without the "
                 "heads whose text attention is less spread than their image attention (the heads' mean "
                 "text-to-image entropy ratio), goes straight through the last layer's MLP "
                 f"(of {info['decoder_layers']}) to give *textually enhanced* logits, fused with the model's own.")]


def _steering_notes(info: dict) -> list[Note]:
    notes = []
    if info["lam"]:
        norms = info["vector_norms"]
        notes.append(Note(f"Visual steering: every decoder layer's MLP output (of {info['decoder_layers']}) turned "
                          f"toward that layer's output with the image minus without it (at the prompt's last token; "
                          f"sizes {min(norms):.3g} to {max(norms):.3g}), its norm kept, at strength "
                          f"**{info['lam']:g}**, prompt and answer."))
    else:
        notes.append(Note("Visual steering off (lam 0): no pre-pass, the model as it is."))
    if info["alpha"]:
        layers = ", ".join(map(str, info["sla_layers"]))
        notes.append(Note(f"Logit augmentation: the mean early exit (no final norm) of hidden states {layers}, "
                          f"weight **{info['alpha']:g}**, blended into the final logits."))
    return notes


def _retracing_notes(info: dict) -> list[Note]:
    layers = ", ".join(map(str, info["trigger_layers"]))
    off = " Ratio 0: the memory adds nothing, MemVR decodes plainly (the release's `.py` default)." if not info[
        "ratio"] else ""
    return [Note(f"No contrast row: after each of layers {layers} (of {info['decoder_layers']}), the uncertainty of "
                 f"the logit lens at the newest token; the first above **{info['threshold']:g}** makes the next "
                 f"layer's FFN read the {info['image_tokens']} visual tokens as memory, mixed in at "
                 f"**{info['ratio']:g}** (once per token).{off}")]


def _beam_notes(info: dict) -> list[Note]:
    rollbacks = info.get("rollbacks")
    done = "" if rollbacks is None else f" It rolled back {len(rollbacks)} time(s)."
    return [Note(f"Beam search over **{info['num_beams']}** beams with the over-trust penalty.{done}")]


def _detector_notes(info: dict) -> list[Note]:
    return [Note(f"No contrast row: the detector in {info['detector']} reads decoder layer {info['hidden_layer']} "
                 "and lowers the tokens it flags.")]


def _projection_notes(info: dict) -> list[Note]:
    return [Note(f"Variant **{info['variant']}**: the image's {info['replaced_image_tokens']} tokens through the "
                 f"trained projector copies in {info['projectors']}.")]


def _masked_head_notes(info: dict) -> list[Note]:
    heads = info["masked_heads"]
    how = ("each attends **uniformly** to every key it may see (DeCoRe's masking: its queries zeroed)"
           if info["masking"] == "uniform" else "their attention weights are **zeroed** (MaskCD as described)")
    start = ("from the last prompt token on, as released" if info["last_query_only"]
             else "at every position of the prompt")
    return [Note(f"The contrast row is the same prompt and image with {len(heads)} of the model's "
                 f"{info['total_heads']} attention heads masked ({info['head_list']}): {how}, {start}. Heads "
                 f"(layer-head): {', '.join(heads)}.")]


def _amateur_notes(info: dict) -> list[Note]:
    prompt = ("the model's prompt without its image" if info.get("whole_prompt", True)
              else "only the prompt's last token (as the release's outputs were made)")
    cut = info.get("head_cut")
    tail = "" if cut is None else (f" Plausible set: p ≥ {_short(cut)}·max(p)." if cut else
                                   " No plausible-set cut (greedy CD as released).")
    return [Note(f"The contrast row is the amateur language model **{info['amateur']}** reading {prompt} "
                 f"({info['amateur_prompt_tokens']} tokens), fed the same tokens as the answer.{tail}")]


def _language_model_notes(info: dict) -> list[Note]:
    if info["amateur"] == "self":
        return [Note("The contrast row is the model's own text-only row (its language model without the image); "
                     "each token's weight is alpha / H, H the entropy of that row's distribution.")]
    return [Note(f"The contrast row is the language model **{info['amateur']}** reading the model's prompt without "
                 f"its image ({info['amateur_prompt_tokens']} tokens); each token's weight is alpha / H, H the "
                 "entropy of its distribution.")]


# VTI's strengths and demo counts are unbounded as released; past 1000 a strength changes nothing more (the output is
# turned onto its direction) and overflows float32 further on (1e300: an error, not an answer), and no calibration
# set is that large.
_VTI_MOST = 1000.0
# VISTA's λ and DeCoRe's and MaskCD's α and cap are unbounded as released too, and 1e300 overflows float32 there as
# well (an error, not an answer; VISTA's 3e38 a NaN distribution). By 1000 VISTA's steered outputs point along their
# directions, DeCoRe's contrast is 1000·(s − s_masked) + s, and a cap is past any entropy (ln |V| < 20).
_WEIGHT_MOST = 1000.0


def _vti_notes(info: dict) -> list[Note]:
    if not info["alpha_text"] and not info["alpha_image"]:
        return [Note("Both strengths are 0: VTI steers nothing, the model as it is.")]
    notes = []
    if info["alpha_text"]:
        notes.append(Note(f"Textual steering: each of the {info['decoder_layers']} decoder layers' MLP output turned "
                          f"toward its hallucinated-to-clean caption direction ({info['demos']} demos, "
                          f"{info['directions']}), its norm kept, at strength **{info['alpha_text']:g}** (0.1·α "
                          "on a unit vector), prompt and answer."))
    if info["alpha_image"]:
        kind = {"per-token": "its per-token direction, as released",
                "token-mean": "its token-mean direction (ours: the encoder's output is not one view of the "
                              "calibrated tokens)"}.get(info["visual"], info["visual"] or "no image")
        notes.append(Note(f"Visual steering: every vision-encoder layer's MLP output for the image, along {kind}, at "
                          f"strength **{info['alpha_image']:g}**; the image's embeddings then replace the row's."))
    else:
        notes.append(Note("Visual steering off (alpha_image 0, as released)."))
    return notes


def _cut_only_notes(info: dict) -> list[Note]:
    return [Note("No contrast row: the plausibility cut alone, on the original row.")]


def _yes_prompt_notes(info: dict) -> list[Note]:
    return [Note("Its question, as the model read it:", info["prompt"])]


def _yes_no_notes(info: dict) -> list[Note]:
    return [Note(f"Its yes and no tokens: “{info['yes_piece']}” and “{info['no_piece']}”.")]


# ---- the registry ----------------------------------------------------------------------------------------------------
_ALPHA_HELP = "Contrast strength: out = (1+alpha)·l − alpha·l′; 0 = no contrast, larger pushes harder away from l′."
_BETA_HELP = "Plausibility cut: keep only tokens with p ≥ beta·max(p) under the original branch; 1 keeps only the top."


def _alpha(branch: str, source: str) -> Param:
    return Param("alpha", 1.0, 0.0, 5.0, f"{_ALPHA_HELP} Contrast branch: {branch}.", source)


def _beta(source: str) -> Param:
    return Param("beta", 0.1, 0.001, 1.0, _BETA_HELP, source, 0.001, minimum=0.0, min_inclusive=False, maximum=1.0)


# CAD's and AdaCAD's plausibility cut: none as released (0), VCD's when a user wants it.
_OPTIONAL_CUT = Param(
    "beta", 0.0, 0.0, 1.0,
    "Plausibility cut: keep only tokens with p ≥ beta·max(p) under the original branch; 0 = none, as released.",
    "CAD and AdaCAD release none (the top-p filters at 1.0 of L219 are omitted here; in float32 they mask only "
    "p below ~3e-9); a cut is ours", 0.001, maximum=1.0,
)
_CAD = "Shi et al., Trusting Your Evidence: Hallucinate Less with Context-aware Decoding, NAACL 2024 (arXiv 2305.14739)"


def _switch(name: str, default: int, help: str, source: str) -> Param:
    """A 0/1 choice (as released / as described, which layers, which variant): an integer slider of two stops."""
    return Param(name, default, 0, 1, help, source, 1, integer=True, maximum=1)


_NOISE_STEP = Param(
    "noise_step", 500, 0, 999,
    "Diffusion step T (0–999) of the noise added to the image for the contrast branch; 500 ≈ 0.86·x + 0.51·noise.",
    "VCD: noise_step 500 (experiments/eval/object_hallucination_vqa_llava.py L115)", 1, integer=True, maximum=999,
)
_ALPHA_POS_HELP = (
    "Weight of the transformed-image branch added to the original: l + alpha_pos·l_T; the weights sum to "
    "1+alpha_pos, so it also sharpens."
)

_VCD = "Leng et al., Visual Contrastive Decoding, CVPR 2024 (arXiv 2311.16922)"
_RITUAL = "Woo et al., RITUAL: Random Image Transformations as a Universal Anti-hallucination Lever, arXiv 2405.17821"
_ALPHA_POS = Param(
    "alpha_pos", 3.0, 0.0, 10.0, _ALPHA_POS_HELP, "RITUAL: ritual_alpha_pos 3 (ritual_sample.py L166)"
)

_RECORDS = (
    Method(
        name="vcd", title="VCD: contrast with a noised image", short_name="VCD", source=_VCD,
        params=(
            _alpha("the image with diffusion noise", "VCD: cd_alpha 1 (object_hallucination_vqa_llava.py L117)"),
            _beta("VCD: cd_beta 0.1 (same file L118; its POPE script uses 0.2)"),
            _NOISE_STEP,
        ),
        contrast_roles=("noised",), build=_noised, rule=contrast(rules.vcd, "noised"),
        labels={"noised": "noised image"}, notes=_noise_notes,
    ),
    Method(
        name="ritual", title="RITUAL: add a randomly transformed image", short_name="RITUAL", source=_RITUAL,
        params=(_ALPHA_POS, _beta("RITUAL: ritual_beta 0.1 (ritual_sample.py L168)")),
        contrast_roles=("transformed",), build=_transformed, rule=_ritual_rule,
        labels={"transformed": "transformed image"}, notes=_transform_notes,
    ),
    Method(
        name="ritual_vcd", title="RITUAL + VCD: transformed image added, noised image subtracted",
        short_name="RITUAL + VCD",
        source=f"{_RITUAL}, stacked with VCD as its paper reports (the stacking rule is ours: rules.ritual_vcd)",
        params=(
            dataclasses.replace(
                _ALPHA_POS,
                help="Weight of the transformed-image branch in the expert l + alpha_pos·l_T (RITUAL's part).",
            ),
            Param(
                "alpha", 1.0, 0.0, 5.0,
                "Contrast strength against the noised-image branch: (1+alpha)·expert − alpha·l_noised (VCD's part).",
                "VCD: cd_alpha 1",
            ),
            _beta("RITUAL and VCD: 0.1"),
            _NOISE_STEP,
        ),
        contrast_roles=("transformed", "noised"), build=_transformed_and_noised, rule=_ritual_vcd_rule,
        labels={"transformed": "transformed image", "noised": "noised image"}, notes=_transform_and_noise_notes,
    ),
    Method(
        name="savcd", title="Self-augmented VCD: the model picks its augmentation; entropy-adaptive threshold",
        short_name="Self-augmented VCD",
        source="Im et al., self-augmented visual contrastive decoding, ICLR 2026 (code: eunwooim/selfaug)",
        params=(
            _alpha("the augmentation the model picked itself", "Self-Aug: cd_alpha 1 (src/eval/pope.py L91)"),
            Param(
                "gamma", 0.5, 0.0, 5.0,
                "Entropy sensitivity of the adaptive cut beta_t = sigmoid(−gamma·H), H in bits: confident steps "
                "keep few tokens (beta_t→0.5), flat steps many; 0 fixes beta_t = 0.5.",
                "Self-Aug: cd_tau 0.5 in src/script/*.bash (the .py default None turns the adaptive cut off)",
            ),
        ),
        contrast_roles=("augmented",), build=_self_augmented, rule=_savcd_rule, scalars=("plausibility_cut",),
        labels={"augmented": "augmented image (the model's choice)"}, notes=_self_augmentation_notes,
    ),
    Method(
        name="code", title="CODE: contrast with the model's own description", short_name="CODE",
        source="Kim et al., CODE: Contrasting Self-generated Description, NeurIPS 2024 (arXiv 2406.01920)",
        params=(
            Param(
                "exponent", 0.7, 0.1, 2.0,
                "Exponent a of the bounded divergence BD = ½·Σ log2(|p_v−p_d|^a + 1)(p_v+p_d); sets how fast the "
                "weight alpha_t = 1 − BD and the cut p ≥ BD·max(p) react to disagreement with the description "
                "branch.",
                "CODE: cd_alpha 0.7 in evaluate.py L126–128 (cd_utils.py's own fallback is 0.2)",
                min_inclusive=False,
            ),
        ),
        contrast_roles=("description",), build=_described, rule=_code_rule,
        labels={"description": "description instead of the image"}, notes=_description_notes,
        scalars=("contrast_weight", "plausibility_cut"),
    ),
    Method(
        name="m3id", title="M3ID: contrast with the prompt without the image, growing with each token",
        short_name="M3ID",
        source="Favero et al., Multi-Modal Hallucination Control by Visual Information Grounding, CVPR 2024 "
        "(arXiv 2403.14003)",
        params=(
            Param(
                "lam", 0.02, 0.0, 0.2,
                "Decay rate of gamma_t = exp(−lam·t): the text-only contrast weight (1−gamma_t)/gamma_t grows with "
                "the number t of generated tokens; 0 = no contrast.",
                "M3ID: 0.02, hard-coded in RITUAL's re-implementation (ritual_sample.py L178)",
                0.001,
            ),
            _beta("0.1, as in RITUAL's M3ID re-implementation"),
        ),
        contrast_roles=("text_only",), build=_text_only, rule=_m3id_rule, scalars=("contrast_weight",),
        labels={"text_only": "no image"}, notes=_text_only_notes,
    ),
    Method(
        name="cad", title="CAD: amplify what the image adds over the prompt without it", short_name="CAD",
        source=f"{_CAD}, the image as the context (xhan77/context-aware-decoding@1281d7f group_decode_fileio.py "
        "L105–113)",
        params=(
            Param("alpha", 1.0, 0.0, 5.0,
                  f"{_ALPHA_HELP} Contrast branch: the same prompt without the image. 1 is the release's weight "
                  "for short answers against the model's prior (NQ-SWAP, greedy); its summaries use 0.5.",
                  "CAD: 2_-1 (alpha 1) in exp_nqswap.sh, chosen here for questions about the image, where the "
                  "image contradicts the language prior as NQ-SWAP's context does the model's memory; exp_cnndm.sh "
                  "runs 1.5_-0.5 (alpha 0.5) for long summaries"),
            _OPTIONAL_CUT,
        ),
        contrast_roles=("text_only",), build=_text_only, rule=contrast(rules.cad, "text_only"),
        labels={"text_only": "no image"}, notes=_context_notes,
    ),
    Method(
        name="adacad", title="AdaCAD: CAD weighted by how much the image changes each token", short_name="AdaCAD",
        source="Wang et al., AdaCAD: Adaptively Decoding to Balance Conflicts between Contextual and Parametric "
        "Knowledge, arXiv 2409.07394 (HanNight/AdaCAD@d4519ec group_decode_fileio_adacad.py L38–50, L136–145), "
        "the image as the context",
        params=(
            Param("threshold", 0.0, 0.0, 1.0,
                  "Floor of the per-token weight alpha_t = max(JSD, threshold), the JSD of the distributions with "
                  "and without the image (0 to ln 2 = 0.69); 0 = the JSD alone. The release's QA runs use 0, its "
                  "summaries 0.3.",
                  "AdaCAD: --threshold 0.0 (group_decode_fileio_adacad.py L262, run_qa.sh; run_summ.sh uses 0.3)"),
            _OPTIONAL_CUT,
        ),
        contrast_roles=("text_only",), build=_text_only, rule=_adacad_rule, scalars=("contrast_weight",),
        labels={"text_only": "no image"}, notes=_adaptive_context_notes,
    ),
    Method(
        name="icd", title="ICD: contrast with a disturbing system instruction", short_name="ICD",
        source="Wang et al., Instruction Contrastive Decoding, Findings of ACL 2024 (arXiv 2403.18715)",
        params=(
            _alpha("a 'disturbance' system instruction", "ICD: cd_alpha 1 (icd_llava_pope.py L27)"),
            _beta("ICD: cd_beta 0.1 (icd_llava_pope.py L28)"),
            TextParam(
                "instruction", branches.ICD_DISTURBANCE_INSTRUCTION, 1, MAX_TEXT_CHARS,
                "The disturbance system instruction of the contrast row. The default is our own wording; the "
                "release's LLaVA script runs five instructions of the authors', one result folder each: pass one of "
                "them to reproduce it.",
                "ICD: the list at p1k0pan/ICD@2fa44c5 experiments/gen_scripts/icd_llava_pope.py L117–122 (the "
                "InstructBLIP scripts': icd_ib_pope.py L68–72), each LLaVA's system prompt in place of its own "
                "(conv_llava_custom, experiments/llava/conversation.py L347)",
                minimum=None,
            ),
        ),
        contrast_roles=("disturbed",), build=_disturbed, rule=contrast(rules.icd, "disturbed"),
        labels={"disturbed": "disturbing instruction"}, notes=_instruction_notes,
    ),
    Method(
        name="instructive", title="ID: subtract the answer to a noisy instruction (Instructive Decoding)",
        short_name="ID",
        source="Kim, Kim, Lee, Yun, Distort, Distract, Decode: Instruction-Tuned Model Can Refine its Response from "
        "Noisy Instructions, ICLR 2024 (joonkeekim/Instructive-Decoding@56c0348 src/base_generator.py L211–216, "
        "src/sni_generator.py L43–57); the question as the instruction, the image as the input",
        params=(
            Param("eps", -0.3, -1.0, 1.0,
                  "out = l + eps·l_noisy on raw logits, no cut; negative subtracts the noisy branch, 0 = plain "
                  "decoding. The weights sum to 1 + eps: sampling runs at temperature 1/(1 + eps), 1.43 at −0.3.",
                  "ID: --eps -0.3 in scripts/run_sni.sh and the README (run_eval.py L91's default 0 turns it off)",
                  minimum=None),
            Param("variant", 0, 0, len(branches.ID_VARIANTS) - 1,
                  "The noisy instruction, with the same image: 0 opposite_full = the instruction below, then the "
                  "question; 1 opposite = the instruction in place of the question; 2 none = no question; "
                  "3 trunc_shuf = 60 % of the question's words, shuffled; 4 random_words = one random word of the "
                  "model's vocabulary (the release's: of NLTK's English words).",
                  "ID: --neg_type; opposite (SNI, run_sni.sh), none, trunc_shuf, random_words (sni_generator.py "
                  "L43–57) and opposite_full (mmlu_generator.py L36–37), the default here: for questions about an "
                  "image, the question kept (ours)", 1, integer=True, maximum=len(branches.ID_VARIANTS) - 1),
            TextParam(
                "instruction", branches.ID_OPPOSITE_INSTRUCTION, 1, MAX_TEXT_CHARS,
                "The meta-instruction of variants 0 and 1, asking for the opposite answer. The default is our own "
                "wording; pass the authors' (src/sni_generator.py L55–56 of their release) to reproduce it.",
                "ID: the authors' sentence at joonkeekim/Instructive-Decoding@56c0348 src/sni_generator.py L55–56 "
                "(src/mmlu_generator.py L33–37)",
                minimum=None,
            ),
        ),
        contrast_roles=("noisy",), build=_noisy_instruction, rule=_instructive_rule,
        labels={"noisy": "noisy instruction"}, notes=_noisy_instruction_notes,
    ),
    Method(
        name="decore", title="DeCoRe: contrast with the model whose image heads attend uniformly",
        short_name="DeCoRe",
        source="Gema et al., DeCoRe: Decoding by Contrasting Retrieval Heads, arXiv 2410.18860 (aryopg/DeCoRe@d1fa5a9 "
        "src/models/decore_entropy.py L103–151, src/utils/modelling_llama.py L671–675); the masked heads are this "
        "model's image heads (python -m eval.image_heads), not the release's retrieval heads of a text LLM",
        params=(
            _switch("entropy", 1,
                    "1 = DeCoRe-entropy, as released: each step's weight alpha_t is the model's own entropy (nats), "
                    "out = (1+H)·s − H·s_masked on log-probabilities, no cut; 0 = DeCoRe-vanilla, the fixed alpha.",
                    "DeCoRe: configs/decoder/decore_entropy.yaml (decore_vanilla.yaml for 0)"),
            Param("alpha", 0.5, 0.0, 5.0,
                  "DeCoRe-vanilla's fixed weight (entropy 0): out = (1+alpha)·s − alpha·s_masked.",
                  "DeCoRe: alpha 0.5 (configs/decoder/decore_vanilla.yaml)", maximum=_WEIGHT_MOST),
            Param("alpha_cap", 0.0, 0.0, 5.0,
                  "Cap of the entropy weight: alpha_t = min(H, alpha_cap); 0 = none, as released.",
                  "DeCoRe: alpha_cap null (decore_entropy.yaml; decore_entropy.py L136 skips a cap of 0 too)",
                  maximum=_WEIGHT_MOST),
            Param("heads", 0, 0, 200,
                  "Heads masked: the top of this model's image-head list (python -m eval.image_heads ranks them by "
                  "their attention to the image). 0 = the list's own count, by default DeCoRe's 50 of Llama's 1024 "
                  "heads (4.9 %) scaled to this model: 50 on LLaVA-1.5-7B, 1 of the embedded model's 16. Masking, "
                  "DeCoRe's: the head's query zeroed, so it attends uniformly to every key it may see (not a "
                  "zeroed output, MaskCD's).",
                  "DeCoRe: num_retrieval_heads 50 (decore_entropy.yaml) of 1024; its share scaled here (ours)", 1,
                  integer=True),
            _switch("as_released", 1,
                    "1 = as released: the prompt is prefilled unmasked and the masking starts at the last prompt "
                    "token; 0 = every prompt position masked too (the masked model throughout, as the release's "
                    "scoring path runs it).",
                    "DeCoRe: decore_entropy.py L103–127 (generation); decore_vanilla.py L140–145 (scoring)"),
        ),
        contrast_roles=("masked",), build=_decore_heads, rule=_masked_head_rule, scalars=("contrast_weight",),
        labels={"masked": "image heads attending uniformly"}, notes=_masked_head_notes,
    ),
    Method(
        name="maskcd", title="MaskCD: contrast with the model whose image heads are zeroed", short_name="MaskCD",
        source="Deng & Yang, MaskCD, Findings of EMNLP 2025 (arXiv 2510.02790); no code public: the masking "
        "(weights zeroed after the softmax), the head ranking (python -m eval.image_heads) and the defaults are "
        "our reading of the paper, unverified",
        params=(
            Param("alpha", 1.0, 0.0, 5.0,
                  "Contrast strength: out = softmax((1+alpha)·l − alpha·l_masked), the paper's formula (entropy 0). "
                  "Unverified: the paper's value is not public.",
                  "ours: VCD's alpha 1 (MaskCD's value is not public)", maximum=_WEIGHT_MOST),
            _switch("entropy", 0,
                    "0 = a fixed alpha, the only form the paper is known to write (the default); 1 = DeCoRe's "
                    "entropy weight alpha_t = H of the model's own distribution, on which MaskCD builds.",
                    "MaskCD's paper as summarised (methods-3 §3: no entropy weight was found); DeCoRe for 1"),
            Param("heads", 0, 0, 200,
                  "Image heads masked: the top of this model's head list (python -m eval.image_heads). 0 = the "
                  "list's own count, by default DeCoRe's share (4.9 %) of this model's heads; the paper keeps the "
                  "heads above a threshold it does not publish. Masking, MaskCD's as described: the heads' "
                  "attention weights zeroed after the softmax, so they add nothing (not DeCoRe's uniform "
                  "attention). Unverified: no code is public.",
                  "ours: DeCoRe's share of the heads (MaskCD's threshold is not public)", 1, integer=True),
        ),
        contrast_roles=("masked",), build=_maskcd_heads, rule=_masked_head_rule, scalars=("contrast_weight",),
        labels={"masked": "image heads' attention zeroed"}, notes=_masked_head_notes,
    ),
    Method(
        name="distillation_cd", title="Distillation CD: contrast with the model's own attention-dropout amateur",
        short_name="Distillation CD",
        source="Phan, Tran, Phan, Distillation Contrastive Decoding, arXiv 2402.14874 (pphuc25/distil-cd@5aad6c2 "
        "src/dcd/generate.py L264–327); the amateur is the original prompt (the release's contrastive "
        "chain-of-thought demonstrations have no form for questions about images)",
        params=(
            Param("beta", 0.4, 0.0, 5.0,
                  "Contrast strength (the release's beta; VCD calls it alpha): out = (1+beta)·l − beta·l_amateur; "
                  "0 = the cut alone.",
                  "Distillation CD: --beta_coef 0.4 with --dropout_num 0.3 in dcd_eval/configs/combined/data_full/"
                  "gsm8k/dcd_drop/gsm8k_7b_full_csv4_beta04-drop03.sh, the release's Llama-2-7B pair (LLaVA-1.5's "
                  "Vicuna-7B is a Llama-2-7B); run_generation.py L32's 0.5 runs without dropout"),
            Param("alpha", 0.1, 0.001, 1.0,
                  "Plausibility cut (the release's alpha; VCD calls it beta): keep only tokens with "
                  "p ≥ alpha·max(p) under the original branch; 1 keeps only the top.",
                  "Distillation CD: --alpha_coef 0.1 (dcd_eval/src/run_generation.py L31)", 0.001, minimum=0.0,
                  min_inclusive=False, maximum=1.0),
            Param("dropout", 0.3, 0.0, 1.0,
                  "Dropout rate on the amateur row's attention probabilities in every decoder layer (each weight "
                  "kept with probability 1 − rate, scaled by 1/(1 − rate); a fresh seeded mask at every token). "
                  "0 = no dropout: the amateur is then the original row and the method does nothing.",
                  "Distillation CD: --dropout_num 0.3 (gsm8k_7b_full_csv4_beta04-drop03.sh); where it is applied is "
                  "the paper's description, not the release's (see as_released)", maximum=1.0),
            _switch("as_released", 0,
                    "0 = as described (the default here): dropout on the amateur's attention. 1 = as released: the "
                    "release sets the rate on the top-level model, which no attention module reads, so nothing is "
                    "dropped; without its contrastive demonstrations (none exist for image questions) the amateur "
                    "is then the original row and the method decodes as its cut alone, i.e. plain greedy. Offered "
                    "to show that; not the default, as it does nothing here.",
                    "pphuc25/distil-cd src/dcd/generate.py L272–275 (current_model.attention_dropout, train()); "
                    "Llama/Mistral attention reads its own attention_dropout, 0 from the config"),
        ),
        contrast_roles=("amateur",), build=_dropout_amateur, rule=_distillation_cd_rule,
        labels={"amateur": "dropout amateur (same prompt and image)"}, notes=_dropout_notes,
    ),
)

_MIRAGE = "Yin, Si, Wang, The Mirage of Performance Gains, arXiv 2504.10020 (code: ustc-hyin/cd_rethink)"

# Later baselines of the field, and the controls of the "Mirage" critique.
_LATER_RECORDS = (
    Method(
        name="vacode", title="VACoDe: contrast with the augmentation that moves the first token most",
        short_name="VACoDe",
        source="Kim et al., VACoDe, arXiv 2408.05337 (no authors' code; as re-implemented in eunwooim/selfaug "
        "src/models/llava_model.py L119–152)",
        params=(
            _alpha("the augmentation (of Self-Aug's six) farthest from the original at the first step",
                   "VCD's cd_alpha 1, as the re-implementation runs"),
            _beta("VCD's fixed 0.1, as the paper describes (the re-implementation's scripts use Self-Aug's adaptive "
                  "cut)"),
        ),
        contrast_roles=("augmented",), build=_farthest_augmentation, rule=contrast(rules.vcd, "augmented"),
        labels={"augmented": "augmented image (farthest at the first step)"}, notes=_farthest_augmentation_notes,
    ),
    Method(
        name="pai", title="PAI: pay more attention to the image, then contrast with the prompt without it",
        short_name="PAI",
        source="Liu, Zheng, Chen, Paying More Attention to Image, ECCV 2024 (LALBJ/PAI@9bbd8bd attention.py L90–94, "
        "CFG.py L28–58)",
        params=(
            Param("alpha", 0.2, 0.0, 2.0,
                  "Attention amplification: the last query's pre-softmax scores on image keys rise by alpha·|score| "
                  "in decoder layers from first_layer on.", "PAI: alpha 0.2 (pope_eval.py L50, README commands)"),
            Param("gamma", 1.1, 1.0, 3.0,
                  "CFG weight against the prompt without the image: γ·(s − u) + u on log-probabilities; 1 turns the "
                  "term (and its cut) off, as the release without --use-cfg.",
                  "PAI: gamma 1.1 in the README commands (the .py default is 2)"),
            _beta("PAI: 0.1, hard-coded (CFG.py L53)"),
            Param("first_layer", 2, 0, 80,
                  "First decoder layer whose attention is amplified, to the last (at or past the model's layer "
                  "count, none: the page says so).",
                  "PAI: start-layer 2, end-layer 32 of LLaVA-1.5's 32", 1, integer=True),
            _switch("as_released", 1,
                    "1 = as released: with the CFG term on (γ > 1) the first answer token is not amplified (the "
                    "release clears its use_cfg flag only after the prefill); with γ = 1 (the release without "
                    "--use-cfg) it is. The release's --use-cfg at γ = 1 never amplifies (its processor returns "
                    "before clearing the flag): that is alpha 0 here. 0 = as described: amplified from the first "
                    "token whatever γ.", "LALBJ/PAI attention.py L90, CFG.py L30–49 (asked in LALBJ/PAI#22)"),
        ),
        contrast_roles=("text_only",), build=_amplified_with_text_only, rule=_pai_rule,
        labels={"original": "original, image attention amplified", "text_only": "no image (CFG term)"},
        notes=_amplification_notes,
    ),
    Method(
        name="sid", title="SID: contrast with the model's own least-attended image tokens", short_name="SID",
        source="Huo et al., Self-Introspective Decoding, ICLR 2025 (huofushuo/SID@127dd41 vcd_sample.py L168–194, "
        "transformers/src/transformers/models/llama/modeling_llama.py L770–815)",
        params=(
            Param("alpha", 0.5, 0.0, 5.0,
                  "Contrast strength against the introspective row: (1+alpha)·l − alpha·l_sid. 0.5 is what the "
                  "release runs (its --cd-alpha 1 is parsed but never passed).", "SID: vcd_sample.py L168"),
            _beta("SID: cd_beta 0.1 (vcd_sample.py L169)"),
            Param("keep", 0, 0, 1000,
                  "Image tokens the introspective row keeps from layer `layer` on: the ones its own query attended "
                  "least at the layer before. 0 = the release's share for the served model: 100 of LLaVA-1.5's 576 "
                  "(17 %), rounded (6 of the embedded model's 36). A count at or above the model's image tokens "
                  "hides nothing: SID is then plain decoding.",
                  "SID: fast-v-attention-rank 100 of 576 for POPE (50 for CHAIR); 0 scales it (ours)", 1,
                  integer=True, minimum=0),
            Param("layer", 2, 1, 80,
                  "The first decoder layer that sees only the kept image tokens (at or past the model's layer count, "
                  "none: the page says so).",
                  "SID: fast-v-agg-layer 2", 1, integer=True, minimum=1),
            _switch("as_released", 1,
                    "1 = as released: greedy decoding takes the argmax of the unmasked difference (the plausibility "
                    "cut applies when sampling only); 0 = the cut always.", "SID: vcd_sample.py L190–194"),
        ),
        contrast_roles=("introspective",), build=_self_introspective, rule=_sid_rule,
        labels={"introspective": "least-attended image tokens only"}, notes=_introspection_notes,
    ),
    Method(
        name="avisc", title="AvisC: contrast with only the image tokens the model over-attends", short_name="AvisC",
        source="Woo et al., Don't Miss the Forest for the Trees: Attentional Vision Calibration, 2024 "
        "(sangminwoo/AvisC@772eba4 avisc_utils/avisc_sample.py L138–214)",
        params=(
            _alpha("the same prompt with every image embedding but the over-attended ('blind') ones zeroed",
                   "AvisC: cd_alpha 1.0 (pope_eval_llavab.py; amber_eval.sh uses 2.5)"),
            _beta("AvisC: cd_beta 0.1"),
            Param("layer_gamma", 0.5, 0.0, 1.0,
                  "Share of the image attention the selected layers must hold: the top layers by image attention "
                  "until their cumulative share reaches this.", "AvisC: layer_gamma 0.5", maximum=1.0),
            Param("lam", 0.99, 0.0, 3.0,
                  "Blind tokens: those whose attention (mean over the selected layers) is at least mean + lam·std.",
                  "AvisC: lamb 0.99 (pope_eval_llavab.py; its scripts use 1.0)"),
        ),
        contrast_roles=("blind",), build=_blind_tokens, rule=contrast(rules.avisc, "blind"),
        labels={"blind": "only the over-attended image tokens"}, notes=_blind_token_notes,
    ),
    Method(
        name="dola", title="DoLa: contrast the final layer with an early exit of the same forward", short_name="DoLa",
        source="Chuang et al., DoLa: Decoding by Contrasting Layers, ICLR 2024 (voidism/DoLa@805230e "
        "transformers-4.28.1/src/transformers/generation/utils.py L2456–2465, L2674–2705)",
        params=(
            _switch("high_layers", 0,
                    "Candidate premature layers: 0 = the lower half's even layers (transformers' dola_layers='low', "
                    "DoLa's choice for open-ended answers), 1 = the upper half's. No repetition penalty is applied "
                    "(DoLa's scripts add 1.2).",
                    "DoLa: early-exit layers 0, 2, …, 14 for LLaMA-7B open-ended (README)"),
            _beta("DoLa: relative_top 0.1 (utils.py L2456–2465)"),
        ),
        contrast_roles=(), build=_candidate_layers, rule=_dola_rule, scalars=("premature_layer",),
        notes=_layer_notes,
    ),
    Method(
        name="deco", title="DeCo: add the early layer most sure of a final candidate to the final logits",
        short_name="DeCo",
        source="Wang et al., MLLM Can See? Dynamic Correction Decoding for Hallucination Mitigation, ICLR 2025 "
        "(zjunlp/Deco@fee8d75 transformers/generation/utils.py L2660–2681, L3150–3173)",
        params=(
            Param("alpha", 0.6, 0.0, 2.0,
                  "Borrowing strength: out = l_N + alpha·m·l_j* on the candidates, m the anchor layer's highest "
                  "probability on a candidate; 0 = the candidate cut alone. The weights sum to 1 + alpha·m, so under "
                  "sampling it also sharpens.",
                  "DeCo: --alpha 0.6 (chair_llava.py L171, also amber_llava.py; its README's table says 0.5)"),
            Param("threshold_top_p", 0.9, 0.01, 1.0,
                  "Candidates: the final layer's most probable tokens until their cumulative probability reaches "
                  "this (the token that reaches it kept); every other token is dropped, so DeCo also truncates "
                  "like top-p.",
                  "DeCo: --threshold_top_p 0.9 (chair_llava.py L172)", minimum=0.0, min_inclusive=False, maximum=1.0),
            Param("threshold_top_k", 20, 1, 100, "…and at most this many candidates (the sampling top-k is another).",
                  "DeCo: --threshold_top_k 20 (chair_llava.py L173)", 1, integer=True, minimum=1),
            Param("from_depth", 0.625, 0.0, 1.0,
                  "First candidate early exit, as a share of the decoder's depth: hidden-state index "
                  "ceil(from_depth·N). Each exit goes through the final norm, lm_head(norm(h_j)), unlike DoLa's.",
                  "DeCo: --start_layer 20 of LLaVA-1.5-7B's 32 (chair_llava.py L174)", 0.005, maximum=1.0),
            Param("to_depth", 0.875, 0.0, 1.0,
                  "Last candidate early exit, as a share of the depth: index floor(to_depth·N), at most N−1 (a start "
                  "past it takes this one alone).",
                  "DeCo: --end_layer 29, exclusive: layer 28 of 32 (chair_llava.py L175)", 0.005, maximum=1.0),
        ),
        contrast_roles=(), build=_normed_candidate_layers, rule=_deco_rule, scalars=("anchor_layer", "anchor_weight"),
        notes=_normed_layer_notes,
    ),
    Method(
        name="only", title="ONLY: fuse with the logits of one layer's text-leaning heads carried to the output",
        short_name="ONLY",
        source="Wan et al., ONLY: One-Layer Intervention Sufficiently Mitigates Hallucinations in Large "
        "Vision-Language Models, ICCV 2025 (zifuwan/ONLY@109bffe transformers/src/transformers/models/llama/"
        "modeling_llama.py L482–522, L656–662; only_utils/only_sample.py L176–232)",
        params=(
            Param("alpha_collaborative", 3.0, 0.0, 5.0,
                  "α₁: where the two distributions agree (d < gamma), out = l + α₁·l̃. The weights sum to 1 + α₁ "
                  "(4 as released), so under sampling it also sharpens.",
                  "ONLY: eval_bench/scripts/pope_eval.sh L31 ritual_alpha_pos 3 (only_sample.py L176 fallback 3)"),
            Param("alpha_contrastive", 1.0, 0.0, 5.0,
                  "α₂: where they differ (d ≥ gamma), out = (1+α₂)·l − α₂·l̃, a contrast against the enhanced "
                  "logits.",
                  "ONLY: eval_bench/scripts/pope_eval.sh L32 ritual_alpha_neg 1 (only_sample.py L177 fallback 1)"),
            _beta("ONLY: eval_bench/scripts/pope_eval.sh L33 ritual_beta 0.1 (only_sample.py L178); on the model's "
                  "own logits, L183"),
            Param("gamma", 0.2, 0.0, 2.0,
                  "γ: the L1 distance Σ|p − p̃| (0 to 2) below which the fusion is collaborative. 0.2 as released for "
                  "POPE (eval_bench/scripts/pope_eval.sh); its CHAIR script runs 0.25, pope_eval_llava.py's own "
                  "default is 0.6 and the sampler's fallback 0.1. 0 = always contrastive, 2 = always collaborative "
                  "(d < 2 unless the two are disjoint).",
                  "ONLY: eval_bench/scripts/pope_eval.sh L34 js_gamma 0.2 (chair_eval.sh L33 0.25; pope_eval_llava.py "
                  "L77–86 0.6; only_sample.py L179 0.1)", maximum=2.0),
        ),
        contrast_roles=(), build=_one_layer_enhancement, rule=_only_rule,
        scalars=("enhancement_distance", "collaborative", "removed_heads"), notes=_one_layer_notes,
    ),
    Method(
        name="agla", title="AGLA-like: add the view of the picture with its prompt-irrelevant pixels blacked out",
        short_name="AGLA-like",
        source="after An et al., AGLA: Mitigating Object Hallucinations in Large Vision-Language Models with Assembly "
        "of Global and Local Attention, CVPR 2025 (Lackel/AGLA@efa1263 eval/augmentation.py L9–37, eval/sample.py "
        "L141–148); the pixels' relevance is the model's own attention or the shapes world's ground truth, not the "
        "release's BLIP image-text-matching GradCAM (not available offline)",
        params=(
            Param("alpha", 2.0, 0.0, 5.0,
                  "Weight of the local view added: out = l + alpha·l_local; the weights sum to 1 + alpha (3), so "
                  "under sampling (the release samples at T 1) it also sharpens.",
                  "AGLA: --alpha 2 (eval/run_llava.py L127, llava1.5_pope.bash); sample.py L141 falls back to 1"),
            dataclasses.replace(
                _beta("AGLA: --beta 0.5 (eval/run_llava.py L128, llava1.5_pope.bash; sample.py L142)"), default=0.5),
            Param("ratio", 0.75, 0.05, 1.0,
                  "Share of the picture's pixels the local view keeps, the most relevant to the question; the rest "
                  "is black, the geometry kept. 1 keeps all (the local view is then the picture itself). The "
                  "release's share is 1 − ITC/2 per question (0.5 to 1), from BLIP's image-text score, which is not "
                  "available offline: fixed here.",
                  "ours: 0.75, the release's share at an ITC score of 0.5 (eval/augmentation.py L18–19)",
                  minimum=0.0, min_inclusive=False, maximum=1.0),
            _switch("mask", 0,
                    "Where the relevance comes from. 0 = the model's own attention: the prompt's last token over the "
                    "image tokens, mean over layers and heads, upsampled and blurred as the release's GradCAM map "
                    "(not on InstructBLIP, whose image tokens have no place in the picture). 1 = the shapes world's "
                    "ground truth, an oracle upper bound (the scenes the shapes-world lab and the app know): the "
                    "shapes the question names, then what is nearest them. Neither is the release's BLIP GradCAM: "
                    "AGLA-like.",
                    "ours: methods-3 §11's offline stand-ins for BLIP-ITM"),
        ),
        contrast_roles=("local",), build=_local_view, rule=_agla_rule,
        labels={"local": "local view: irrelevant pixels blacked out"}, notes=_local_view_notes,
    ),
    Method(
        name="vista", title="VISTA: steer every layer's MLP output toward the image, blend in early-layer logits",
        short_name="VISTA",
        source="Li et al., The Hidden Life of Tokens: Reducing Hallucination of Large Vision-Language Models via "
        "Visual Information Steering, ICML 2025 (LzVv123456/VISTA@dc62252 steering_vector.py L91–129, llm_layers.py "
        "L15–34 and L132–150, llava/model/language_model/llava_llama.py L93–103)",
        params=(
            Param("lam", 0.1, 0.0, 0.5,
                  "Visual steering strength λ (relative to a unit vector): each layer's MLP output x becomes "
                  "normalize(normalize(x) + λ·λ_sim·v̂)·‖x‖, λ_sim = 1 + max(0, cos(x, −v)), v that layer's output "
                  "with the image minus without it. 0 = off (no pre-pass). 0.1 is chair_eval.py's default and "
                  "run_mmhal.sh's (open-ended answers, as the app's); run_chair.sh runs 0.17, the POPE script 0.01.",
                  "VISTA: --vsv-lambda 0.1 (chair_eval.py L30, run_mmhal.sh; run_chair.sh 0.17; pope_eval.py L31 "
                  "and run_pope.sh 0.01)", maximum=_WEIGHT_MOST),
            Param("alpha", 0.3, 0.0, 1.0,
                  "Logit augmentation (SLA) weight: out = alpha·mean of the window's early exits (no final norm) + "
                  "(1 − alpha)·l. 0 = off.",
                  "VISTA: --logits-alpha 0.3 (chair_eval.py L36, run_chair.sh, run_pope.sh)", maximum=1.0),
            Param("from_depth", 0.8125, 0.0, 1.0,
                  "First early exit of the SLA window, as a share of the decoder's depth: hidden-state index "
                  "ceil(from_depth·N). The release's layers 25..30 of LLaVA-1.5's 32 are indices 26..31; on a "
                  "smaller model the same shares (ours; the embedded model's 4 layers: index 3).",
                  "VISTA: --logits-layers 25,30 (chair_eval.py L35): index 26 of 32", 0.005, maximum=1.0),
            Param("to_depth", 0.96875, 0.0, 1.0,
                  "Last early exit of the window: index floor(to_depth·N), at most N−1 (a start past it takes this "
                  "one alone).",
                  "VISTA: --logits-layers 25,30 (chair_eval.py L35): index 31 of 32", 0.005, maximum=1.0),
        ),
        contrast_roles=(), build=_visual_steering, rule=_vista_rule, notes=_steering_notes,
    ),
    Method(
        name="memvr", title="MemVR: when a layer is unsure, the next layer's FFN re-reads the image as memory",
        short_name="MemVR",
        source="Zou et al., Look Twice Before You Answer: Memory-Space Visual Retracing for Hallucination Mitigation "
        "in Multimodal Large Language Models, ICML 2025 (1zhou-Wang/MemVR@de2e3cf memvr.py L86–90, L156–257)",
        params=(
            Param("ratio", 0.12, 0.0, 1.0,
                  "Retracing ratio r: the armed FFN's output becomes (1 − r)·ffn + r·m, m = (x·Vᵀ)·V scaled to the "
                  "FFN output's mean size, V the row's visual tokens. 0 = off: the release's .py default "
                  "(--retracing-ratio 0.0), with which MemVR decodes plainly. 0.12 is its README's command and its "
                  "MME and MM-Vet scripts' (short answers, as POPE's and the app's); its CHAIR script runs 0.31, "
                  "LLaVA-Bench 0.32, VizWiz 0.28.",
                  "MemVR: --retracing-ratio 0.12 (README; eval_scripts/llava/mme.sh, mmvet.sh; chair.sh 0.31; "
                  "eval/llava_model_vqa_loader_chair.py L83 default 0.0)", maximum=1.0),
            Param("threshold", 0.75, 0.0, 1.0,
                  "τ: a layer fires when its logit-lens uncertainty (entropy of the top 10 logits over ln 10, 0 to "
                  "1) is above this; 1 = never.",
                  "MemVR: --entropy-threshold 0.75 (README, every eval_scripts/llava script)", maximum=1.0),
            Param("from_depth", 0.1875, 0.0, 1.0,
                  "First layer that may fire, as a share of the depth: ceil(from_depth·N). The release's 5 < ℓ < 16 "
                  "of LLaVA-1.5's 32 (layers 6 … 15); on a smaller model the same shares (ours; the embedded "
                  "model's 4 layers: layer 1 fires, 2 retraces).",
                  "MemVR: --starting-layer 5, strict (README, eval_scripts/llava/*.sh): layer 6 of 32", 0.005,
                  maximum=1.0),
            Param("to_depth", 0.46875, 0.0, 1.0,
                  "Last layer that may fire: floor(to_depth·N), at most N−2 (a start past it takes this one alone).",
                  "MemVR: --ending-layer 16, strict (README, eval_scripts/llava/*.sh): layer 15 of 32", 0.005,
                  maximum=1.0),
        ),
        contrast_roles=(), build=_visual_retracing, rule=_memvr_rule,
        scalars=("retrace_layer", "layer_uncertainty"), notes=_retracing_notes,
    ),
    Method(
        name="opera", title="OPERA: beam search with an over-trust penalty and retrospection", short_name="OPERA",
        source="Huang et al., OPERA: Alleviating Hallucination via Over-Trust Penalty and Retrospection-Allocation, "
        "CVPR 2024 (shikiw/OPERA@61426ef transformers-4.29.2/src/transformers/generation/utils.py L3116-3674)",
        params=(
            Param("num_beams", 5, 2, 10,
                  "Beams of the search. OPERA is beam search only: greedy or sampled decoding is refused (the release "
                  "refuses num_beams=1, shikiw/OPERA#15); its side-by-side is against the greedy baseline.",
                  "OPERA: num_beams 5 (chair_eval.py, pope_eval.py)", 1, integer=True, minimum=2),
            Param("scale_factor", 50.0, 1.0, 200.0,
                  "σ: the attention window is scaled by it before the column products 1e-7·∏ σ·A_ij that score "
                  "over-trust (a column most later tokens attend to above 1/σ wins).",
                  "OPERA: scale_factor 50 (chair_eval.py L85, README); the model wrappers' default is 1",
                  1.0, min_inclusive=False),
            Param("threshold", 15, 0, 50,
                  "Retrospection: roll back when the same column (at answer token 10 or later) has led more than this "
                  "many times in every beam.", "OPERA: threshold 15 (README; 25 in its 'efficient' variant)", 1,
                  integer=True),
            Param("num_attn_candidates", 5, 1, 10,
                  "Candidates per beam and step: each is fed ahead for its attention; the beam chooses among them "
                  "only. Also the most rollbacks to one position.",
                  "OPERA: num_attn_candidates 5 (README; 1 in its 'efficient' variant)", 1, integer=True, minimum=1),
            Param("penalty_weights", 1.0, 0.0, 10.0,
                  "Weight of the penalty on the candidates' logits: over the first 10 tokens a bonus of their image "
                  "attention, then minus the largest column score. 0 = beam search among the candidates.",
                  "OPERA: penalty_weights 1 (utils.py L3135, L3449)"),
            Param("window_size", 512, 1, 2048,
                  "Steps of history kept: how far back a rollback can reach.", "OPERA: window_size 512 (utils.py "
                  "L3134)", 1, integer=True, minimum=1),
            _switch("as_released", 1,
                    "Which tokens a rollback rejects. 1 = as released: they are kept under the rollback's position "
                    "and a later rollback clears only the position after its own, so a rejection made in a branch "
                    "of the search that was undone since still applies when the search returns there; a position "
                    "past window_size rolls nothing back (the release's list index fails in its bare except). "
                    "0 = fixed: kept under the step restored, forgotten with every step a rollback undoes.",
                    "shikiw/OPERA utils.py L3473-3481, L3538-3550 (the fix is ours)"),
        ),
        contrast_roles=(), build=_beam_only, rule=_opera_rule, scalars=("over_trust_penalty",), search="beam",
        notes=_beam_notes,
    ),
    Method(
        name="ecd", title="ECD-like: lower the tokens a trained hallucination detector flags", short_name="ECD-like",
        source="after Fieback et al., ECD, ECML-PKDD 2025 (arXiv 2504.12137; no code public): the detector's "
        "features, form and combination are ours (decoding/detector.py); weights trained by python -m eval.ecd_train",
        params=(
            Param("lam", ECD_DEFAULT_LAM, 0.0, 32.0,
                  "Strength: each plausible token's logit minus lam·softplus(z), z the detector's logit that the token "
                  "is a hallucination (lam = 1: p·P(right)); 0 = the plausibility cut alone. ECD-like: the paper's "
                  "form is not public.",
                  ECD_LAM_SOURCE),
            _beta("ECD's 'adaptive plausibility constraint', at VCD's 0.1 (the paper's value is not public)"),
        ),
        contrast_roles=(), build=_trained_detector, rule=_ecd_rule, scalars=("hallucination_flag",),
        notes=_detector_notes,
    ),
    Method(
        name="dcd", title="DCD: contrast the positive with the negative trained image projection", short_name="DCD",
        source="after Chen et al., Decoupling Contrastive Decoding, NeurIPS 2025 (arXiv 2504.08809; no code public): "
        "the projector copies are trained by python -m eval.dcd_train (ours: LLM and vision tower frozen, a plain "
        "NLL per side); the contrast row, VCD's combination and its defaults are ours",
        params=(
            Param("alpha", 1.0, 0.0, 5.0,
                  f"{_ALPHA_HELP} Contrast branch: the same prompt and image through the negative projector copy. "
                  "Not verified: the paper's code is not released.",
                  "ours: VCD's alpha 1 (the paper's value is not public), also the pick of a sweep on the embedded "
                  "model's validation world (400 questions; assets/shapes-llava/dcd/dcd.json)"),
            _beta("ours: VCD's cut at 0.1 (the paper's value is not public)"),
            _switch("variant", 0,
                    "0 = pos+neg: the original row's image through the positive projector copy; 1 = neg-only: the "
                    "model's own projector as the positive side, only the negative copy trained in.",
                    "ours: the paper decodes with both trained projections (pos+neg)"),
        ),
        contrast_roles=("negative",), build=_decoupled_projections, rule=contrast(rules.dcd, "negative"),
        labels={"original": "original, through the positive projector copy (neg-only: the model's own)",
                "negative": "image through the negative projector copy"},
        notes=_projection_notes,
    ),
    Method(
        name="cd", title="CD: the model minus a weaker amateur language model, on its plausible tokens",
        short_name="CD",
        source="Li et al., Contrastive Decoding: Open-ended Text Generation as Optimization, ACL 2023 "
        "(XiangLi1999/ContrastiveDecoding@170e914 transformers/src/transformers/generation_utils.py L1962–1963, "
        "L2244–2245); the amateur is a text-only model with the model's tokenizer (decoding/amateur.py)",
        params=(
            Param("alpha", 1.0, 0.0, 5.0,
                  "The amateur's weight (st_coef): out = log p − alpha·log p_amateur(τ); 0 = no contrast.",
                  "CD: st_coef 1.0 in the README command and submit_decoding.py L18–26 (run_generation.py L417's "
                  "default is 0.5)"),
            Param("amateur_temperature", 0.5, 0.05, 2.0,
                  "τ: the amateur's logits are divided by it before the contrast; below 1 sharpens its prior.",
                  "CD: student_temperature 0.5 in the README command and submit_decoding.py L18–26 "
                  "(run_generation.py L442's default is 1.0)", 0.05, min_inclusive=False),
            _beta("CD: relative_top 0.1 (generation_utils.py L1391, sampling; L1542, beam)"),
            _switch("cut", 0,
                    "Where the plausible-set cut (beta) applies. 0 = as released: when sampling only (greedy CD "
                    "sets relative_top None and has no cut); 1 = always, as the paper describes.",
                    "CD: generation_utils.py L1340–1345 (greedy), L1391 (sampling)"),
            _switch("amateur_prompt", 0,
                    "What the amateur reads before the answer. 0 = as the released outputs were made "
                    "(--ignore_prefix yes): the prompt's last token only; 1 = as the README's command: the whole "
                    "prompt, the image tokens removed.",
                    "CD: run_generation.py L277–300, L444; submit_decoding.py (outputs_ignorePrefix_*) against the "
                    "README's --ignore_prefix no"),
        ),
        contrast_roles=("amateur",), build=_amateur_model, rule=_cd_rule,
        labels={"amateur": "amateur language model, no image"}, notes=_amateur_notes,
    ),
    Method(
        name="lcd", title="LCD: subtract the model's own language model, harder where it is confident",
        short_name="LCD",
        source="Manevich & Tsarfaty, Mitigating Hallucinations in Large Vision-Language Models (LVLMs) via "
        "Language-Contrastive Decoding (LCD), Findings of ACL 2024 (avshalomman/lcd@30f8bbf lcd.py L46–93)",
        params=(
            Param("alpha", 2.0, 0.0, 10.0,
                  "Contrast strength: the weight is alpha_t = alpha / H, H the language model's entropy at the "
                  "step (unbounded as released: see alpha_cap); out = log_softmax((1+alpha_t)·s − alpha_t·u).",
                  "LCD: alpha 2.0 (lcd.py L19–22, create_cd_llava_model L164–175)"),
            _beta("LCD: beta 0.1 (lcd.py L19–22)"),
            Param("alpha_cap", 0.0, 0.0, 50.0,
                  "Cap on alpha_t (ours: the release has none, and a near-certain language model makes alpha_t "
                  "huge); 0 = no cap, as released.",
                  "ours; LCD's alpha / H is unbounded (lcd.py L74–76)"),
            Param("amateur", 0, 0, 2,
                  "Which language model: 0 = the model's amateur (attached, or shipped beside it), or its own "
                  "text-only row where the LVLM is its LLM (InstructBLIP, Gemma 3); 1 = always the model's own "
                  "text-only row; 2 = always the separate amateur (refused where there is none).",
                  "LCD: lmsys/vicuna-7b-v1.5 for LLaVA-1.5 (lcd.py L165–166); the text-only row for InstructBLIP "
                  "and Gemma 3 is ours (the spec's reading)", 1, integer=True, maximum=2),
        ),
        contrast_roles=("amateur",), build=_language_model, rule=_lcd_rule,
        scalars=("contrast_weight", "amateur_entropy"),
        labels={"amateur": "language model, no image"}, notes=_language_model_notes,
    ),
    Method(
        name="vti", title="VTI: steer the vision encoder and the language model along calibrated directions",
        short_name="VTI",
        source="Liu, Ye, Zou, Reducing Hallucinations in Large Vision-Language Models via Latent Space Steering, "
        "ICLR 2025 (shengliu66/VTI@bb5dfee vti_utils/utils.py L46-325, vti_utils/llm_layers.py L16-32 and L115-121, "
        "experiments/eval/run_mmhal_vti.py L60-78 and L156-164); directions computed by python -m "
        "eval.vti_calibrate on our own demos",
        params=(
            Param("alpha_text", 0.8, 0.0, 3.0,
                  "Textual steering strength α: each decoder layer's MLP output x becomes normalize(normalize(x) + "
                  "0.1·α·d̂)·‖x‖, d that layer's hallucinated-to-clean caption direction. 0 = off. 0.8 as released "
                  "(run_mmhal_vti.py); the paper's README command runs 0.9. At most 1000 (by then every output points "
                  "along its direction).",
                  "VTI: --alpha_text 0.8 (run_mmhal_vti.py L158); README command 0.9", maximum=_VTI_MOST),
            Param("alpha_image", 0.0, 0.0, 3.0,
                  "Visual steering strength: the same edit on every vision-encoder layer's MLP output, along its "
                  "direction toward the features of heavily masked copies. 0 = off, as released (its script's "
                  "default turns visual steering off); the paper's README command runs 0.9. At most 1000.",
                  "VTI: --alpha_image 0 (run_mmhal_vti.py L157); README command 0.9", maximum=_VTI_MOST),
            Param("demos", 50, 50, 70,
                  "The directions computed from this many calibration demos: 50 as released, 70 as the paper's "
                  "README command (python -m eval.vti_calibrate saves both; another count needs its --demos).",
                  "VTI: --num_demos 50 (run_mmhal_vti.py L156); README command 70", 20, integer=True, minimum=2,
                  maximum=_VTI_MOST),
        ),
        contrast_roles=(), build=_vti_steering, rule=_original_rule, notes=_vti_notes,
    ),
    Method(
        name="apc_only", title="APC-only (control): the plausibility cut alone, no contrast", short_name="APC-only",
        source=f"{_MIRAGE}, inference/spurious_utils/apc_utils.py L155–158",
        params=(
            dataclasses.replace(
                _beta("cd_rethink: cd_beta 0.2 (apc_utils.py L148); set a method's own β to isolate its truncation"),
                default=0.2,
            ),
        ),
        contrast_roles=(), build=_no_branches, rule=_apc_rule, kind="control",
        notes=_cut_only_notes,
    ),
    Method(
        name="pba", title="PBA (control): the question asks for \"yes\" whenever possible", short_name="PBA",
        source=f"{_MIRAGE}, inference/pope_infer_pba.py L51",
        params=(), contrast_roles=(), build=_yes_prompt, rule=_original_rule, kind="control",
        labels={"original": "original, its question asking for yes"}, notes=_yes_prompt_notes,
    ),
    Method(
        name="olm", title="OLM (control): answer \"yes\" whenever yes and no are close", short_name="OLM",
        source=f"{_MIRAGE}, inference/spurious_utils/olm_utils.py L113–141",
        params=(
            Param("mass", 0.2, 0.0, 1.0, "Nudge only when p(yes) + p(no) is above this.",
                  "cd_rethink: 0.2 (olm_utils.py L113–141)", maximum=1.0),
            Param("margin", 0.5, 0.0, 1.0, "…and |p(yes) − p(no)| is below this; then the answer is yes.",
                  "cd_rethink: 0.5 (olm_utils.py L113–141)", maximum=1.0),
        ),
        contrast_roles=(), build=_yes_no_tokens, rule=_olm_rule, kind="control",
        notes=_yes_no_notes,
    ),
)

# Display order is the records' order.
REGISTRY: dict[str, Method] = {record.name: record for record in (*_RECORDS, *_LATER_RECORDS)}
METHODS: tuple[str, ...] = tuple(REGISTRY)


@dataclass
class MethodPlan:
    """A method ready to run on one request: its contrast rows, its rule bound to the parameters, and what was done
    to build the rows."""

    method: str
    params: dict[str, Any]
    contrast_rows: dict[str, RowInputs]
    combine: Callable[[dict[str, torch.Tensor], int], Combination]
    info: dict[str, Any]
    original: RowInputs | None = None
    layers: tuple[int, ...] = ()
    attention_edits: dict[str, Edit] = field(default_factory=dict)
    features: tuple[int, ...] | None = None
    normed_layers: tuple[int, ...] = ()


def plan_method(request: BranchRequest, name: str, params: dict[str, Any] | None = None) -> MethodPlan:
    """Build the method's contrast rows and bind its rule to ``params``, which the library's entry point has resolved
    (``Method.resolve``, the one check of a parameter: ``compare``, ``answer_many``); one left out takes its default."""
    method = get_method(name)
    resolved = {**method.defaults, **(params or {})}
    built = method.build(request, resolved)
    if tuple(built.rows) != method.contrast_roles:
        raise AssertionError(f"{name} built rows {tuple(built.rows)}, its record says {method.contrast_roles}")
    combine = method.combine(resolved, built.rule_args)
    return MethodPlan(
        name, resolved, built.rows, combine, dict(built.info), built.original, built.layers, built.attention_edits,
        built.features, built.normed_layers,
    )
