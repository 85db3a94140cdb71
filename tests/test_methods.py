"""The method registry: every record's parameters, its bound rule and the per-step scalars it reports — the very
objects the app, eval and the bench use."""

from __future__ import annotations

import math

import pytest
import torch
from logits import FlippedDetector

from decoding import branches, rules
from decoding.methods import METHODS, REGISTRY, STEP_SCALARS, Param, get_method

L = torch.tensor([[2.0, 1.0, -1.0, 0.0]])
C = torch.tensor([[1.0, 2.0, 0.0, 0.0]])

# Each method's rule called with the rule's own keyword defaults (the authors' values).
RULE_WITH_ITS_DEFAULTS = {
    "vcd": lambda L, t: rules.vcd(L["original"], L["noised"]),
    "ritual": lambda L, t: rules.ritual(L["original"], L["transformed"]),
    "ritual_vcd": lambda L, t: rules.ritual_vcd(L["original"], L["transformed"], L["noised"]),
    "savcd": lambda L, t: rules.savcd(L["original"], L["augmented"]),
    "code": lambda L, t: rules.code(L["original"], L["description"]),
    "m3id": lambda L, t: rules.m3id(L["original"], L["text_only"], step=t),
    "cad": lambda L, t: rules.cad(L["original"], L["text_only"]),
    "adacad": lambda L, t: rules.adacad(L["original"], L["text_only"]),
    "instructive": lambda L, t: rules.instructive(L["original"], L["noisy"]),
    "decore": lambda L, t: rules.decore(L["original"], L["masked"]),
    "maskcd": lambda L, t: rules.decore(L["original"], L["masked"], alpha=get_method("maskcd").defaults["alpha"]),
    "distillation_cd": lambda L, t: rules.distillation_cd(L["original"], L["amateur"]),
    "agla": lambda L, t: rules.agla(L["original"], L["local"]),
    "icd": lambda L, t: rules.icd(L["original"], L["disturbed"]),
    "vacode": lambda L, t: rules.vcd(L["original"], L["augmented"]),
    "pai": lambda L, t: rules.pai_cfg(L["original"], L["text_only"]),
    "sid": lambda L, t: rules.sid(L["original"], L["introspective"]),
    "avisc": lambda L, t: rules.avisc(L["original"], L["blind"]),
    "dola": lambda L, t: rules.dola(
        L["original"],
        torch.stack([L["layer 0"], L["layer 2"]])[
            int(rules.dola_select_layer(L["original"], torch.stack([L["layer 0"], L["layer 2"]]))[0])
        ],
    ),
    "deco": lambda L, t: rules.deco(L["original"], torch.stack([L["normed layer 1"], L["normed layer 3"]]))[0],
    "only": lambda L, t: rules.only(L["original"], L["enhanced"], gamma=get_method("only").defaults["gamma"])[0],
    "vista": lambda L, t: rules.vista_sla(L["original"], torch.stack([L["layer 3"]])),
    "memvr": lambda L, t: L["original"],  # its edit acts inside the forward; the rule reads its scalars
    "opera": lambda L, t: rules.opera_candidates(L["original"]),  # no look-ahead here: no penalty
    "ecd": lambda L, t: rules.ecd(L["original"], L["original"].flip(-1), lam=get_method("ecd").defaults["lam"]),
    "dcd": lambda L, t: rules.dcd(L["original"], L["negative"]),
    "cd": lambda L, t: rules.cd(L["original"], L["amateur"], beta=0.0),  # greedy as released: no V_head
    "lcd": lambda L, t: rules.lcd(L["original"], L["amateur"]),
    "vti": lambda L, t: L["original"],  # its edit is of the model (rules.steer), its rule the steered row's logits
    "apc_only": lambda L, t: rules.apc_only(L["original"]),
    "pba": lambda L, t: L["original"],
    "olm": lambda L, t: torch.where(  # vocab [Yes, No, x, y] as in test_rules_field: a one-hot on OLM's choice
        torch.arange(L["original"].shape[-1]) == rules.olm(L["original"], 0, 1)[:, None], 0.0, float("-inf")
    ),
}
# What construction hands a rule besides the parameters (OLM's token ids, here the first two of the vocabulary).
RULE_ARGS = {
    "cd": {"head_cut": 0.0},  # what CD's construction hands its rule for a greedy run as released
    "olm": {"yes_id": 0, "no_id": 1}, "dola": {"layers": (0, 2)}, "sid": {"skip_cut": False},
    "ecd": {"detector": FlippedDetector()},
    "deco": {"layers": (1, 3)},
    "vista": {"layers": (3,)},
}


def branch_logits(method: str, *contrasts: torch.Tensor) -> dict[str, torch.Tensor]:
    roles = REGISTRY[method].contrast_roles
    contrasts = contrasts or tuple(C * (i + 1) for i in range(len(roles)))
    layers = {f"layer {j}": C * (j - 1) for j in RULE_ARGS.get(method, {}).get("layers", ())}  # DoLa's early exits
    if method == "deco":  # DeCo's early exits go through the final norm: the engine names them apart
        layers = {f"normed {name}": value for name, value in layers.items()}
    if method == "only":  # what ONLY's edit of the original row's forward yields beside its logits
        layers = {"enhanced": C, "removed heads": torch.tensor([[2.0]])}
    if method == "memvr":  # what MemVR's hooks found in the original row's forward
        layers = {"retrace layer": torch.tensor([[2.0]]), "layer uncertainty": torch.tensor([[0.8]])}
    return {"original": L, **dict(zip(roles, contrasts, strict=True)), **layers}


def test_every_record_is_named_once_and_says_what_it_is():
    assert METHODS == tuple(REGISTRY) and all(REGISTRY[name].name == name for name in METHODS)
    short_names = [REGISTRY[m].short_name for m in METHODS]
    assert len(set(short_names)) == len(short_names) and all(short_names)
    assert set(RULE_WITH_ITS_DEFAULTS) == set(METHODS)  # every record has its reference rule in this file
    for record in REGISTRY.values():
        assert record.kind in ("method", "control") and record.search in ("token", "beam")
        assert (record.kind == "control") == ("(control)" in record.title), record.name
        assert (record.search == "beam") == ("num_beams" in record.defaults), record.name


def test_every_record_is_in_the_app_s_menus_in_eval_and_in_the_bench(capsys):
    """The app offers every record in its method menu and every control in its third panel's; ``python -m eval
    --method NAME`` takes every record at its defaults; the bench's --methods takes every record (it refuses only the
    unknown name given beside them)."""
    from decoding import bench
    from demo.allow_list import EMBEDDED_MODEL_DIR
    from demo.model_pool import ModelPool
    from demo.ui import build_ui
    from eval.cli import parse_method

    config = build_ui(ModelPool([str(EMBEDDED_MODEL_DIR)])).get_config_file()
    menus = {c["props"].get("elem_id"): c["props"].get("choices") for c in config["components"] if "props" in c}
    offered = {menu: {value for _, value in menus[menu]} for menu in ("cd-method", "cd-control")}
    assert offered["cd-method"] == set(METHODS)
    assert {m for m in METHODS if REGISTRY[m].kind == "control"} <= offered["cd-control"]
    for name, record in REGISTRY.items():
        assert parse_method(name) == (name, record.defaults)
    with pytest.raises(SystemExit):
        bench.main(["--methods", ",".join([*METHODS, "no_such_method"])])
    assert "unknown method(s) ['no_such_method']" in capsys.readouterr().err


def test_defaults_are_the_authors():
    defaults = {m: REGISTRY[m].defaults for m in METHODS}
    assert defaults["vcd"] == {"alpha": 1.0, "beta": 0.1, "noise_step": 500}
    assert defaults["icd"] == {"alpha": 1.0, "beta": 0.1, "instruction": branches.ICD_DISTURBANCE_INSTRUCTION}
    assert defaults["ritual"] == {"alpha_pos": 3.0, "beta": 0.1}
    assert defaults["ritual_vcd"] == {"alpha_pos": 3.0, "alpha": 1.0, "beta": 0.1, "noise_step": 500}
    assert defaults["savcd"] == {"alpha": 1.0, "gamma": 0.5}
    assert defaults["code"] == {"exponent": 0.7}
    assert defaults["cd"] == {"alpha": 1.0, "amateur_temperature": 0.5, "beta": 0.1, "cut": 0, "amateur_prompt": 0}
    assert defaults["lcd"] == {"alpha": 2.0, "beta": 0.1, "alpha_cap": 0.0, "amateur": 0}
    assert defaults["m3id"] == {"lam": 0.02, "beta": 0.1}
    assert defaults["vti"] == {"alpha_text": 0.8, "alpha_image": 0.0, "demos": 50}  # run_mmhal_vti.py L156-158


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("step", [0, 7])
def test_the_bound_rule_with_registry_defaults_is_the_rule_with_its_own(method, step):
    record = get_method(method)
    logits = branch_logits(method)
    rule_args = RULE_ARGS.get(method, {})
    bound = record.rule(logits, step, {**record.defaults, **rule_args})
    assert torch.equal(bound.logits, RULE_WITH_ITS_DEFAULTS[method](logits, step))
    assert torch.equal(record.combine(record.defaults, rule_args)(logits, step).logits, bound.logits)


@pytest.mark.parametrize("method", METHODS)
def test_every_parameter_has_a_range_help_and_source(method):
    for param in REGISTRY[method].params:
        assert isinstance(param, Param) and param.help and param.source, (method, param.name)
        assert param.validate(param.default) == param.default
        if param.kind == "text":  # low..high: its length in characters
            assert param.low <= len(param.default) <= param.high, (method, param.name)
            assert param.validate("x" * int(param.high)) and param.validate("x" * int(param.low))
            continue
        assert param.low <= param.default <= param.high, (method, param.name)
        assert param.validate(param.low) == param.low and param.validate(param.high) == param.high
    assert REGISTRY[method].source and REGISTRY[method].title.startswith(REGISTRY[method].short_name)
    assert REGISTRY[method].kind in ("method", "control")


@pytest.mark.parametrize("method", METHODS)
def test_each_method_reports_the_scalars_its_record_names(method):
    record = get_method(method)
    out = record.rule(branch_logits(method), 5, {**record.defaults, **RULE_ARGS.get(method, {})})
    assert tuple(out.scalars) == record.scalars
    assert set(record.scalars) <= set(STEP_SCALARS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.scalars.values())


def test_every_named_scalar_is_reported_by_some_method():
    assert set(STEP_SCALARS) == {name for m in METHODS for name in REGISTRY[m].scalars}


def test_scalar_values_by_hand():
    # H(0.5, 0.25, 0.125, 0.125) = 1.75 bits; beta_t = sigmoid(-0.5 * 1.75) = 0.294215
    l = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    savcd = get_method("savcd")
    out = savcd.rule({"original": l, "augmented": l}, 0, savcd.defaults)
    assert out.scalars["plausibility_cut"] == pytest.approx(0.294215, abs=1e-6)
    # BD = 0.5 * 2 * 0.8 * 0.764998 = 0.611999 (see test_rules), alpha_t = 1 - BD
    lv, ld = torch.log(torch.tensor([[0.7, 0.2, 0.1]])), torch.log(torch.tensor([[0.1, 0.2, 0.7]]))
    code = get_method("code")
    out = code.rule({"original": lv, "description": ld}, 0, code.defaults)
    assert out.scalars["plausibility_cut"] == pytest.approx(0.611999, abs=1e-6)
    assert out.scalars["contrast_weight"] == pytest.approx(0.388001, abs=1e-6)
    # M3ID at t = 10: (1 - gamma_t) / gamma_t = e^0.2 - 1
    m3id = get_method("m3id")
    out = m3id.rule({"original": L, "text_only": C}, 10, m3id.defaults)
    assert out.scalars["contrast_weight"] == pytest.approx(math.expm1(0.2), abs=1e-9)
    # ECD: sigma(z) at the original argmax; the flipped detector's z there is the smallest logit, log 0.125
    ecd = get_method("ecd")
    out = ecd.rule({"original": l}, 0, {**ecd.defaults, **RULE_ARGS["ecd"]})
    assert out.scalars["hallucination_flag"] == pytest.approx(1 / (1 + 8), abs=1e-6)


def test_parameters_resolve_renamed_and_checked():
    assert get_method("ritual").resolve({"alpha_pos": 2}) == {"alpha_pos": 2.0, "beta": 0.1}
    noise = get_method("vcd").resolve({"noise_step": 250.0})["noise_step"]
    assert noise == 250 and isinstance(noise, int)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: get_method("nope"), "unknown method 'nope'"),
        (lambda: get_method(None), "unknown method None"),
        (lambda: get_method("vcd").resolve({"gamma": 1.0}), r"vcd has no parameter\(s\) \['gamma'\]"),
        (lambda: get_method("vcd").resolve({"alpha": -1.0}), "alpha must be >= 0, got -1.0"),
        (lambda: get_method("vcd").resolve({"beta": 0.0}), "beta must be > 0"),
        (lambda: get_method("vcd").resolve({"noise_step": 1000}), "noise_step must be <= 999, got 1000"),
        (lambda: get_method("vcd").resolve({"noise_step": 2.5}), "noise_step must be an integer, got 2.5"),
        (lambda: get_method("vcd").resolve({"alpha": math.nan}), "alpha must not be NaN"),
        (lambda: get_method("vcd").resolve({"alpha": math.inf}), "alpha must be finite"),
        (lambda: get_method("vcd").resolve({"alpha": "1"}), "alpha must be a real number"),
        (lambda: get_method("code").resolve({"exponent": 0.0}), "exponent must be > 0"),
    ],
)
def test_bad_names_and_values_are_refused_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_olm_decodes_the_argmax_or_yes_and_nothing_else():
    record = get_method("olm")
    params = {**record.defaults, "yes_id": 0, "no_id": 1}
    for seed in range(40):
        l = torch.randn(3, 20, generator=torch.Generator().manual_seed(seed)) * 2
        out = record.rule({"original": l}, 0, params).logits
        kept = torch.isfinite(out)
        assert (kept.sum(-1) == 1).all()
        chosen = out.argmax(-1)
        assert ((chosen == l.argmax(-1)) | (chosen == 0)).all()


def test_dola_candidate_layers_follow_transformers_buckets():
    from decoding.methods import dola_candidate_layers

    assert dola_candidate_layers(32, high=False, tied_embeddings=False) == (0, 2, 4, 6, 8, 10, 12, 14)
    assert dola_candidate_layers(32, high=True, tied_embeddings=False) == (16, 18, 20, 22, 24, 26, 28, 30)
    assert dola_candidate_layers(32, high=False, tied_embeddings=True)[0] == 2
    assert dola_candidate_layers(48, high=True, tied_embeddings=False) == tuple(range(28, 48, 2))
    assert dola_candidate_layers(48, high=False, tied_embeddings=False) == tuple(range(0, 20, 2))
    assert dola_candidate_layers(2, high=False, tied_embeddings=False) == (0,)


def test_sid_as_released_greedy_takes_the_unmasked_difference():
    record = get_method("sid")
    logits = {"original": L, "introspective": C}
    released = record.rule(logits, 0, {**record.defaults, "skip_cut": True}).logits
    torch.testing.assert_close(released, 1.5 * L - 0.5 * C)  # alpha 0.5, nothing cut
    assert torch.isinf(record.rule(logits, 0, {**record.defaults, "skip_cut": False}).logits).any()
