"""The library entry point: a baseline answer and a contrasted answer, side by side, from one batched run.

    from models import load_model
    from decoding import compare

    model = load_model("llava-hf/llava-1.5-7b-hf")
    result = compare(model, image, "Is there a dog?", method="vcd", alpha=1.0, beta=0.1)
    print(result.baseline.text, "|", result.method_side.text)
    result.to_json()          # trace, parameters, model id, seed: enough to reproduce the run

`stream_compare` yields the same result object after every generated token. The JSON's fields are described in
README's "The exported run" table; ``SCHEMA_VERSION`` changes whenever they do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from models.adapters.base import FamilyAdapter

from .branch_rows import ProgressFn, branch_image, noised_row
from .beam import BeamSearch, Opera, teacher_forced
from .engine import Engine, Side, same_prompt
from .methods import (
    METHODS,
    REGISTRY,
    VISUAL_DEPENDENCE_NOISE_STEP,
    BranchRequest,
    MethodPlan,
    get_method,
    plan_method,
)
from .sampling import SamplingConfig, check_max_new_tokens
from .trace import BranchView, SideResult, top_candidates

# 2: per-step scalars under their STEP_SCALARS names in each token's "scalars" (1 had "alpha_t" / "beta_t").
# 3: "control", "control_params" and "control_side": a control decoded beside baseline and method.
# 4: "early_exit" in each token (DoLa's layer mode), the "over_trust_penalty" scalar and OPERA's "rollbacks".
# 5: the "hallucination_flag" scalar (ECD-like's detector on the original branch's top token).
# 6: DeCo's "anchor_layer" and "anchor_weight", ONLY's "enhancement_distance", "collaborative" and
#    "removed_heads" scalars.
# 7: MemVR's "retrace_layer" and "layer_uncertainty", LCD's "amateur_entropy" scalars ("contrast_weight" is
#    also AdaCAD's, DeCoRe's, MaskCD's and LCD's α_t).
SCHEMA_VERSION = 7


@dataclass
class Comparison:
    """A side-by-side run: what was asked, how, what each side answered and why each token was chosen."""

    model_id: str
    method: str
    question: str
    params: dict[str, Any]
    decoding: dict[str, Any]
    branches: dict[str, Any]
    baseline: SideResult | None
    method_side: SideResult
    images: dict[str, Image.Image] = field(default_factory=dict)  # what each image row fed the model (not serialised)
    steps: int = 0
    done: bool = False
    control: str | None = None
    control_params: dict[str, Any] | None = None
    control_side: SideResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model_id": self.model_id,
            "method": self.method,
            "question": self.question,
            "params": self.params,
            "decoding": self.decoding,
            "branches": self.branches,
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
            "method_side": self.method_side.to_dict(),
            "control": self.control,
            "control_params": self.control_params,
            "control_side": self.control_side.to_dict() if self.control_side is not None else None,
            "steps": self.steps,
            "done": self.done,
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)


@dataclass
class PreparedRun:
    """Everything a comparison feeds the engine: its rows, its sides, and the result the run will fill; ``beam``:
    the method's beam search (OPERA), run after the engine's sides, and the row its visual dependence is measured
    against (None: not measured)."""

    rows: list
    sides: list[Side]
    sampling: SamplingConfig
    result: Comparison
    beam: BeamSearch | None = None
    beam_distorted: Any = None


def prepare_comparison(
    model: FamilyAdapter,
    image: Image.Image,
    question: str,
    method: str = "vcd",
    *,
    max_new_tokens: int = 64,
    sampling: SamplingConfig | None = None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    baseline: bool = True,
    attention_layers: list[int] | str | None = "all",
    visual_dependence: bool = True,
    ignore_eos: bool = False,
    progress: ProgressFn | None = None,
    control: str | None = None,
    control_params: dict[str, Any] | None = None,
    **params: Any,
) -> PreparedRun:
    """Validate the request, run the method's pre-steps and build every row and side (see ``stream_compare``)."""
    params = get_method(method).resolve(params)  # a bad method or parameter is refused before any model work
    if control is not None:
        control_params = _control_method(control).resolve(control_params)
    options = {"do_sample": do_sample, "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed}
    sampling = _sampling(sampling, options)
    _check_search(method, sampling)
    request = _Request.start(model, image, question, max_new_tokens, sampling, visual_dependence)
    original, distorted = request.original, request.distorted
    plan = plan_method(request.branch_request(model, progress), method, params)

    rows: list = []
    sides = []
    if baseline:
        # Beside DoLa the baseline records its tokens' early exits too, so both panels take the layer colour mode.
        sides.append(_baseline_side(original, distorted, rows, first_top=bool(plan.layers or plan.normed_layers)))
    beam = _beam_search(model, method, plan, original, max_new_tokens, attention_layers, ignore_eos)
    if beam is None:
        sides.append(_method_side("method", method, plan, request, rows))
    control_plan = None
    if control is not None:
        control_plan = plan_method(request.branch_request(model, progress), control, control_params)
        # Beside DoLa the control records its early exits too: every panel of a DoLa run takes the layer colour mode.
        sides.append(_method_side("control", control, control_plan, request, rows,
                                  first_top=bool(plan.layers or plan.normed_layers)))
    _check_length(model, [*rows, original], max_new_tokens)

    info = dict(plan.info)
    if control_plan is not None:
        info["control"] = dict(control_plan.info)
    if visual_dependence:
        info["visual_dependence_noise_step"] = VISUAL_DEPENDENCE_NOISE_STEP
    result = Comparison(
        model_id=model.model_id,
        method=method,
        question=request.question,
        params=plan.params,
        decoding={
            **sampling.to_dict(),
            "max_new_tokens": max_new_tokens,
            "ignore_eos": ignore_eos,
            "attention_layers": attention_layers,
        },
        branches=info,
        baseline=SideResult("baseline", "baseline") if baseline else None,
        method_side=SideResult("method", method),
        images=_branch_images(model, original, plan),
        control=control,
        control_params=control_params if control is not None else None,
        control_side=SideResult("control", control) if control is not None else None,
    )
    return PreparedRun(rows, sides, sampling, result, beam, distorted)


def _beam_search(model, method: str, plan: MethodPlan, original, max_new_tokens, attention_layers, ignore_eos,
                 batched: bool = True) -> BeamSearch | None:
    """The method's beam search (OPERA) on the original row, or None for a method the engine's sides decode."""
    if get_method(method).search != "beam":
        return None
    p = plan.params
    opera = Opera(p["scale_factor"], p["threshold"], p["num_attn_candidates"], p["penalty_weights"], p["window_size"],
                  bool(p["as_released"]))
    return BeamSearch(
        model, original, plan.combine, num_beams=p["num_beams"], opera=opera, max_new_tokens=max_new_tokens,
        attention_layers=attention_layers, ignore_eos=ignore_eos, batched=batched,
    )


def _check_search(method: str, sampling: SamplingConfig) -> None:
    """OPERA is beam search only: the release refuses greedy OPERA (num_beams=1, utils.py L1515-1519,
    shikiw/OPERA#15) and its scripts never sample (do_sample=False)."""
    if get_method(method).search == "beam" and sampling.do_sample:
        raise ValueError(
            f"{get_method(method).short_name} is beam search (do_sample=False, as its authors run it): turn sampling "
            "off; its side-by-side is against the greedy baseline"
        )


def _run_beam(model, prepared: PreparedRun, side: SideResult, batched: bool, should_stop) -> Iterator[int]:
    """Run the prepared beam search, the side showing its best hypothesis so far; yields the tokens it holds. At the
    end, visual dependence of the answer against the noised row (teacher-forced, one row)."""
    search = prepared.beam
    search.batched, search.should_stop = batched, should_stop
    for event in search.run():
        side.tokens, side.text = event.tokens, event.text
        if event.done:
            side.finished, side.stop_reason = True, event.stop_reason
        yield len(event.tokens)
    if prepared.result is not None:
        prepared.result.branches["rollbacks"] = [list(r) for r in search.rollback_log]
    if prepared.beam_distorted is not None and side.tokens:
        _add_visual_dependence(model, prepared.beam_distorted, side)


def _add_visual_dependence(model, distorted, side: SideResult) -> None:
    tokens = [t.token_id for t in side.tokens]
    for trace, lp in zip(side.tokens, teacher_forced(model, distorted, tokens), strict=True):
        probs = lp.exp()
        trace.branches["distorted"] = BranchView(float(probs[trace.token_id]), top_candidates(probs, model.token_piece))
        trace.visual_dependence = float(math.log(max(trace.branches["original"].prob, 1e-45)) - lp[trace.token_id])


def _control_method(name: str):
    """The registered control called ``name`` (a method that is not a control is refused)."""
    controls = [m for m, record in REGISTRY.items() if record.kind == "control"]
    if name not in controls:
        raise ValueError(f"unknown control {name!r}; choose one of {', '.join(controls)}")
    return get_method(name)


def _branch_images(model: FamilyAdapter, original, plan: MethodPlan) -> dict[str, Image.Image]:
    """The pictures each image-bearing row really fed the model (original, noised, transformed, augmented ...)."""

    def same_pixels(row) -> bool:
        return torch.equal(row.vision_kwargs["pixel_values"], original.vision_kwargs["pixel_values"])

    images = {"original": branch_image(model, original)}
    for role, row in plan.contrast_rows.items():
        if row.has_image and not same_pixels(row):
            images[role] = branch_image(model, row)
    return images


def _sampling(sampling: SamplingConfig | None, options: dict[str, Any]) -> SamplingConfig:
    """One SamplingConfig from either ``sampling=`` or the five keyword options (not both)."""
    given = {name: value for name, value in options.items() if value is not None}
    if sampling is None:
        return SamplingConfig(**given)
    if not isinstance(sampling, SamplingConfig):
        raise ValueError(f"sampling must be a SamplingConfig, got {type(sampling).__name__}")
    if given:
        raise ValueError(f"pass either sampling= or {', '.join(sorted(given))}, not both")
    return sampling


@dataclass
class _Request:
    """A validated request: the RGB image, the stripped question, the original row and, for visual dependence, its
    noised twin (shared by ``prepare_comparison`` and ``answer_all``)."""

    image: Image.Image
    question: str
    original: Any
    distorted: Any

    seed: int
    do_sample: bool = False

    @classmethod
    def start(cls, model, image, question, max_new_tokens, sampling, visual_dependence) -> _Request:
        if not isinstance(image, Image.Image):
            raise ValueError("image must be a PIL image")
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty")
        check_max_new_tokens(max_new_tokens)
        image, question = image.convert("RGB"), question.strip()
        original = model.build_row(question, image)
        _check_length(model, [original], max_new_tokens)
        seed = sampling.seed
        distorted = noised_row(original, VISUAL_DEPENDENCE_NOISE_STEP, seed) if visual_dependence else None
        return cls(image, question, original, distorted, seed, sampling.do_sample)

    def branch_request(self, model: FamilyAdapter, progress: ProgressFn | None = None) -> BranchRequest:
        """What a method's construction may use; its pre-steps (CODE's description, ...) run through the engine."""
        return BranchRequest(model, self.image, self.question, self.original, self.seed, progress, self.do_sample,
                             self.distorted, pre_steps=Engine(model))


def _check_length(model: FamilyAdapter, rows: list, max_new_tokens: int) -> None:
    """A prompt that cannot fit with its answer is refused up front, not discovered as garbage mid-answer. ``rows``
    ends with the original row."""
    limit = model.max_length
    longest = max(row.length for row in rows)
    if limit is not None and longest + max_new_tokens > limit:
        room = limit - longest
        longer = rows[-1].length < longest  # a contrast row's own text (ICD's, ID's instruction) made it the longest
        text = "the question or the method's instruction (its contrast prompt is the longest)" if longer else (
            "the question")
        advice = (
            f"lower max new tokens to {room} or less, or shorten {text}"
            if room >= 1
            else f"shorten {text}: the prompt alone fills the model's context"
        )
        raise ValueError(
            f"the prompt and the answer do not fit in the model's context of {limit} tokens: the prompt takes "
            f"{longest} tokens (image or description included) and {max_new_tokens} new tokens are asked for; {advice}"
        )


def _add(rows: list, row) -> int:
    rows.append(row)
    return len(rows) - 1


def _baseline_side(original, distorted, rows: list, name: str = "baseline", first_top: bool = False) -> Side:
    roles = {"original": _add(rows, original)}
    if distorted is not None:
        roles["distorted"] = _add(rows, distorted)
    distorted_role = "distorted" if distorted is not None else None
    return Side(name, "baseline", roles, distorted_role=distorted_role, first_top=first_top)


def _method_side(name: str, method: str, plan: MethodPlan, request: _Request, rows: list,
                 first_top: bool = False) -> Side:
    original, distorted = request.original, request.distorted
    if plan.original is not None:  # the method asks with a prompt of its own (PBA): its own noised twin too
        original = plan.original
        if distorted is not None:
            distorted = noised_row(original, VISUAL_DEPENDENCE_NOISE_STEP, request.seed)
    roles = {"original": _add(rows, original)}
    roles.update({role: _add(rows, row) for role, row in plan.contrast_rows.items()})
    distorted_role = None
    if distorted is not None:
        # VCD's own contrast row at the same noise step is that distortion: reuse it rather than add a row.
        same = [role for role, row in plan.contrast_rows.items() if same_prompt(row, distorted)]
        if same:
            distorted_role = same[0]
        else:
            roles["distorted"] = _add(rows, distorted)
            distorted_role = "distorted"
    # A side whose rule reads early exits (DoLa, DeCo) also records the layer each of its tokens first led at.
    return Side(
        name, method, roles, combine=plan.combine, distorted_role=distorted_role, layers=plan.layers,
        attention_edits=plan.attention_edits, first_top=first_top or bool(plan.layers or plan.normed_layers),
        features=plan.features, normed_layers=plan.normed_layers,
    )


def answer_all(
    model: FamilyAdapter,
    image: Image.Image,
    question: str,
    methods: list[str | tuple[str, dict[str, Any]]],
    *,
    sampling: SamplingConfig | None = None,
    baseline: bool = True,
    max_new_tokens: int = 64,
    attention_layers: list[int] | str | None = None,
    visual_dependence: bool = False,
    ignore_eos: bool = False,
    batched: bool = True,
) -> tuple[dict[str, SideResult], dict[str, dict[str, Any]]]:
    """The baseline and several methods answering one question, all in ONE batched run (evaluation's workhorse).

    methods: method names, or (method, params) pairs; each method at most once.
    Returns (side name -> SideResult, method -> what its branches did); the baseline side is named "baseline".
    Trace extras (attention, visual dependence) are off by default: benchmarks need the answers.
    """
    [answers] = answer_many(
        model, [(image, question)], methods, sampling=sampling, baseline=baseline, max_new_tokens=max_new_tokens,
        attention_layers=attention_layers, visual_dependence=visual_dependence, ignore_eos=ignore_eos, batched=batched,
    )
    return answers


def answer_many(
    model: FamilyAdapter,
    requests: list[tuple[Image.Image, str] | tuple[Image.Image, str, int]],
    methods: list[str | tuple[str, dict[str, Any]]],
    *,
    sampling: SamplingConfig | None = None,
    baseline: bool = True,
    max_new_tokens: int = 64,
    attention_layers: list[int] | str | None = None,
    visual_dependence: bool = False,
    ignore_eos: bool = False,
    batched: bool = True,
) -> list[tuple[dict[str, SideResult], dict[str, dict[str, Any]]]]:
    """``answer_all`` for several requests at once: every request's baseline and methods in ONE engine run, one
    forward per token for all their rows; a finished side's rows leave the batch.

    requests: (image, question) pairs, or (image, question, seed) triples: the seed replaces ``sampling.seed`` for
    everything of that request (its samples, noised rows, random transforms, pre-steps), so each request gets the
    answers ``answer_all`` gives it alone, whatever shares its batch.
    What cannot share the run is batched as far as it can be: a method's pre-steps (CODE's description,
    Self-augmented VCD's choice of augmentation, ...) run one request at a time before it, and OPERA's beam search
    one request at a time after it.
    Returns what ``answer_all`` returns, for each request in order.
    """
    specs = [(m, {}) if isinstance(m, str) else (m[0], dict(m[1])) for m in methods]
    names = [m for m, _ in specs]
    if len(set(names)) != len(names) or "baseline" in names:
        raise ValueError(f"each method may appear once (and none may be called 'baseline'), got {names}")
    specs = [(m, get_method(m).resolve(params)) for m, params in specs]  # the one check, before any model work
    if not specs and not baseline:
        raise ValueError("nothing to decode: no method and no baseline")
    sampling = _sampling(sampling, {})
    for method, _ in specs:
        _check_search(method, sampling)
    rows: list = []
    planned = []
    for image, question, seed in [_request_parts(request, sampling.seed) for request in requests]:
        planned.append(_plan_answers(
            model, image, question, specs, replace(sampling, seed=seed), rows, baseline=baseline,
            max_new_tokens=max_new_tokens, attention_layers=attention_layers, visual_dependence=visual_dependence,
            ignore_eos=ignore_eos, batched=batched,
        ))
    # Side names are unique in a run: each request's are prefixed with its index.
    sides = [replace(side, name=f"{i}/{side.name}") for i, answers in enumerate(planned) for side in answers.sides]
    by_name = {f"{i}/{name}": side for i, answers in enumerate(planned) for name, side in answers.results.items()}
    run = Engine(model).run(
        rows,
        sides,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        batched=batched,
        attention_layers=attention_layers,
        ignore_eos=ignore_eos,
    ) if sides else ()
    for event in run:
        _apply_event(by_name, event)
    out = []
    for answers in planned:
        for method, prepared in answers.beams.items():  # OPERA: its own beam search, after the batched sides
            answers.results[method] = SideResult(method, method)
            for _ in _run_beam(model, prepared, answers.results[method], batched, None):
                pass
            answers.infos[method]["rollbacks"] = [list(r) for r in prepared.beam.rollback_log]
        results = answers.results
        out.append(({name: results[name] for name in ["baseline", *names] if name in results}, answers.infos))
    return out


def _request_parts(request, default_seed: int) -> tuple[Image.Image, str, int]:
    """(image, question, seed) of one of ``answer_many``'s requests."""
    if not isinstance(request, (tuple, list)) or len(request) not in (2, 3):
        raise ValueError("each request must be (image, question) or (image, question, seed)")
    return request[0], request[1], request[2] if len(request) == 3 else default_seed


@dataclass
class _PlannedAnswers:
    """One request of ``answer_many``: its sides (their rows in the run's shared list, their sampling seeded with
    the request's seed), the results they will fill, OPERA's beam searches and what each method's branches did."""

    sides: list[Side]
    results: dict[str, SideResult]
    beams: dict[str, PreparedRun]
    infos: dict[str, dict[str, Any]]


def _plan_answers(model, image, question, specs, sampling: SamplingConfig, rows: list, *, baseline: bool,
                  max_new_tokens: int, attention_layers, visual_dependence: bool, ignore_eos: bool,
                  batched: bool) -> _PlannedAnswers:
    """Validate one request, run its methods' pre-steps and add its rows to ``rows``."""
    request = _Request.start(model, image, question, max_new_tokens, sampling, visual_dependence)
    original, distorted = request.original, request.distorted
    first = len(rows)
    sides = [_baseline_side(original, distorted, rows)] if baseline else []
    infos, beams = {}, {}
    for method, params in specs:
        plan = plan_method(request.branch_request(model), method, params)
        beam = _beam_search(model, method, plan, original, max_new_tokens, attention_layers, ignore_eos, batched)
        if beam is None:
            sides.append(_method_side(method, method, plan, request, rows))
        else:
            beams[method] = PreparedRun([], [], sampling, None, beam, distorted)
        infos[method] = dict(plan.info)
    _check_length(model, [*rows[first:], original], max_new_tokens)
    sides = [replace(side, seed=sampling.seed) for side in sides]
    results = {side.name: SideResult(side.name, side.method) for side in sides}
    return _PlannedAnswers(sides, results, beams, infos)


def _apply_event(results: dict[str, SideResult], event) -> None:
    for name, token in event.tokens.items():
        side = results[name]
        side.tokens.append(token)
        side.text += token.piece
    for name, reason in event.finished.items():
        results[name].finished, results[name].stop_reason = True, reason


def stream_compare(
    model: FamilyAdapter,
    image: Image.Image,
    question: str,
    method: str = "vcd",
    *,
    batched: bool = True,
    should_stop: Callable[[], bool] | None = None,
    **options: Any,
) -> Iterator[Comparison]:
    """Yield the comparison after every generated token (the same object, updated), ending with ``done=True``.

    method:     one of METHODS; its hyperparameters are keyword arguments (defaults: the papers', in
                ``decoding.methods.REGISTRY[method].params``).
    Options, with their defaults:
    max_new_tokens=64;
    sampling=SamplingConfig(): greedy; or the same as keywords do_sample=False, temperature=1.0, top_p=1.0,
                top_k=0 (off), seed=0 (one or the other, not both);
    baseline=True:  also decode the plain answer in the same batch (the left panel);
    attention_layers="all": record each token's image attention, head mean over these language-model layers
                (a list of indices, or None to skip; it needs eager attention for the run);
    visual_dependence=True: a teacher-forced noised-image row per side measures log p(t|image) - log p(t|noised);
    ignore_eos=False: keep decoding to max_new_tokens;
    progress:   called as progress(stage, fraction) during slow pre-steps (CODE's description, Self-Aug's choice).
    control=None: also decode a control (``apc_only``, ``pba``, ``olm``; ``control_params`` its parameters) in the
                same batch, as a third side (``control_side``), to tell the method's effect from its artifacts;
    batched:    False runs each row alone, the papers' way (a reference; same results, slower).
    should_stop: polled before each token; True stops the run (the result keeps what was written).
    """
    prepared = prepare_comparison(model, image, question, method, **options)
    result = prepared.result
    by_name = {"baseline": result.baseline, "method": result.method_side, "control": result.control_side}
    run = Engine(model).run(
        prepared.rows,
        prepared.sides,
        max_new_tokens=result.decoding["max_new_tokens"],
        sampling=prepared.sampling,
        batched=batched,
        attention_layers=result.decoding["attention_layers"],
        ignore_eos=result.decoding["ignore_eos"],
        should_stop=should_stop,
    ) if prepared.sides else ()
    for event in run:
        _apply_event(by_name, event)
        result.steps = event.step + 1
        yield result
    if prepared.beam is not None:  # OPERA's beams, after the greedy sides (each run switches attention for itself)
        stopped = should_stop is not None and should_stop()
        for held in () if stopped else _run_beam(model, prepared, result.method_side, batched, should_stop):
            result.steps = max(result.steps, held)
            yield result
    for side in by_name.values():
        if side is not None and not side.finished:
            side.finished, side.stop_reason = True, "stopped"
    result.done = True
    yield result


def compare(model: FamilyAdapter, image: Image.Image, question: str, method: str = "vcd", **kwargs) -> Comparison:
    """Run ``stream_compare`` to the end and return the finished comparison."""
    *_, result = stream_compare(model, image, question, method, **kwargs)  # its last update is the finished run
    return result


__all__ = [
    "Comparison", "METHODS", "PreparedRun", "SamplingConfig", "answer_all", "answer_many", "compare",
    "prepare_comparison", "stream_compare",
]
