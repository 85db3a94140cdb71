"""Path equivalence, an invariant: every method and control answers the same whichever path a user takes.

On the embedded shapes-world model and every tiny family, greedily, each registry record is decoded through
- the library's ``compare`` (its defaults: image attention recorded, visual dependence measured),
- ``stream_compare`` with both off (so recording on and off are both covered),
- the app's handler (``demo.run.Runner``: the page's path, recording and visual dependence on, the model loaded by
  the pool and named by its display name),
- ``eval``'s ``answer_all`` (no recording, as benchmarks run);
and every path must give the same tokens and the same final probabilities (1e-5). A method a model cannot run (DCD on
a family without a separate projector) must be refused by every path with the same message.

Not the full grid of 18 records x 11 models (about 90 s here): every record on the embedded model and on tiny LLaVA,
and each other tiny family with a rotating share of the records (family i of the nine takes records i, i+9, ...), so
that every record runs on three models and every family runs records. Each model is built and loaded once for the
module (tiny families with a random ECD detector and random DCD projector copies in their folders, as the engine
tests run them). Where a default does nothing on these models (PAI and SID start at layer 2, past the tiny models'
2 layers), ``ACTING`` sets values that act, in every path alike: a path-dependent bug in a method that does nothing
cannot show.
"""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from decoding.comparison import answer_all, compare, stream_compare
from decoding.methods import METHODS, REGISTRY
from demo.allow_list import EMBEDDED_MODEL_DIR
from demo.examples import EXAMPLES_DIR, shapes_examples
from demo.model_pool import ModelPool
from demo.run import SLIDERS, RunControl, RunError, Runner, RunRequest
from models import TINY_FAMILIES, build_tiny

EMBEDDED = "shapes-llava"
OTHER_FAMILIES = tuple(family for family in TINY_FAMILIES if family != "llava")
CASES = [
    *((model, method) for model in (EMBEDDED, "llava") for method in METHODS),
    *((family, method) for i, family in enumerate(OTHER_FAMILIES) for method in METHODS[i :: len(OTHER_FAMILIES)]),
]
ACTING = {"sid": {"layer": 1}, "pai": {"first_layer": 1}}
MAX_NEW_TOKENS = 3
TOLERANCE = 1e-5


class Served:
    """The models of the grid, each built (tiny families) and loaded once, behind the app's runner."""

    def __init__(self, folder, add_untrained_parts):
        self.folder = folder
        self.add_untrained_parts = add_untrained_parts
        self.uploads = folder / "uploads"
        self.uploads.mkdir()
        name, self.question = shapes_examples()[0]
        shutil.copy(EXAMPLES_DIR / name, self.uploads / "scene.png")
        self.image = Image.open(self.uploads / "scene.png")
        self.runners: dict[str, Runner] = {}

    def runner(self, model: str) -> Runner:
        if model not in self.runners:
            if model == EMBEDDED:
                source = str(EMBEDDED_MODEL_DIR)
            else:
                source = build_tiny(model, self.folder / model, seed=0)
            pool = ModelPool([source])
            adapter = pool.get(pool.default)
            if model != EMBEDDED:  # the embedded model ships its own, trained
                self.add_untrained_parts(adapter)
            self.runners[model] = Runner(pool, self.uploads, max_pixels=1_000_000)
        return self.runners[model]


@pytest.fixture(scope="module")
def served(tmp_path_factory, untrained_parts):
    return Served(tmp_path_factory.mktemp("path-equivalence"), untrained_parts)


def _app_side(runner: Runner, question: str, method: str):
    acting = ACTING.get(method, {})
    sliders = tuple(acting.get(p.name, p.default) if name == method else p.default for name, p in SLIDERS)
    request = RunRequest(
        image={"path": str(runner.upload_folder / "scene.png")}, question=question, model_name=runner.pool.default,
        method=method, decoding_mode="greedy", max_new_tokens=MAX_NEW_TOKENS, sliders=sliders,
    )
    final = list(runner.run(RunControl(), request))[-1]
    return final.shown.comparison.method_side


def _answers(served: Served, model: str, method: str) -> dict:
    """Each path's answer (its method side), or the message it refused with."""
    runner = served.runner(model)
    adapter = runner.pool.get(runner.pool.default)
    image, question, params = served.image, served.question, ACTING.get(method, {})
    paths = {
        "compare": lambda: compare(
            adapter, image, question, method, max_new_tokens=MAX_NEW_TOKENS, **params
        ).method_side,
        "stream_compare": lambda: list(stream_compare(
            adapter, image, question, method, max_new_tokens=MAX_NEW_TOKENS, attention_layers=None,
            visual_dependence=False, **params,
        ))[-1].method_side,
        "app": lambda: _app_side(runner, question, method),
        "answer_all": lambda: answer_all(
            adapter, image, question, [(method, params)], max_new_tokens=MAX_NEW_TOKENS
        )[0][method],
    }
    answers = {}
    for path, answer in paths.items():
        try:
            answers[path] = answer()
        except RunError as refused:
            answers[path] = f"refused: {refused.message}"
        except ValueError as refused:
            answers[path] = f"refused: {refused}"
    return answers


def test_the_cases_cover_every_record_and_every_family():
    assert {method for _, method in CASES} == set(METHODS)
    assert {model for model, _ in CASES} == {EMBEDDED, *TINY_FAMILIES}
    assert all(sum(m == method for _, m in CASES) >= 3 for method in METHODS)


@pytest.mark.parametrize(("model", "method"), CASES)
def test_every_path_gives_the_same_answer(served, model, method):
    answers = _answers(served, model, method)
    refusals = {path: answer for path, answer in answers.items() if isinstance(answer, str)}
    if refusals:
        assert len(refusals) == len(answers) and len(set(refusals.values())) == 1, refusals
        assert model != EMBEDDED, f"every record must run on the embedded model: {refusals}"
        return
    reference = answers["compare"]
    assert reference.tokens, "no token decoded"
    for path, side in answers.items():
        assert [t.token_id for t in side.tokens] == [t.token_id for t in reference.tokens], path
        moved = max(abs(t.final.prob - r.final.prob) for t, r in zip(side.tokens, reference.tokens))
        assert moved <= TOLERANCE, (path, moved)


@pytest.mark.parametrize("control", [name for name, record in REGISTRY.items() if record.kind == "control"])
def test_a_control_in_the_third_panel_answers_as_eval_decodes_it(served, control):
    """The app's third panel beside the default method, on the embedded model, against the control in answer_all."""
    runner = served.runner(EMBEDDED)
    request = RunRequest(
        image={"path": str(runner.upload_folder / "scene.png")}, question=served.question,
        model_name=runner.pool.default, method=METHODS[0], decoding_mode="greedy", max_new_tokens=MAX_NEW_TOKENS,
        control=control,
    )
    panel = list(runner.run(RunControl(), request))[-1].shown.comparison.control_side
    adapter = runner.pool.get(runner.pool.default)
    alone = answer_all(adapter, served.image, served.question, [control], max_new_tokens=MAX_NEW_TOKENS)[0][control]
    assert [t.token_id for t in panel.tokens] == [t.token_id for t in alone.tokens] and panel.tokens
    assert max(abs(a.final.prob - b.final.prob) for a, b in zip(panel.tokens, alone.tokens)) <= TOLERANCE


def test_icd_s_instruction_given_to_eval_is_the_one_its_contrast_row_carries(served):
    from decoding.branches import ICD_DISTURBANCE_INSTRUCTION
    from eval.cli import parse_method

    given = "Squint at the picture, then answer."
    name, params = parse_method("icd:alpha=2", instruction=given)
    assert (name, params["instruction"], params["alpha"]) == ("icd", given, 2.0)
    assert parse_method("icd")[1]["instruction"] == ICD_DISTURBANCE_INSTRUCTION
    assert "instruction" not in parse_method("vcd", instruction=given)[1]
    # Instructive Decoding's own instruction is not ICD's: --icd-instruction leaves it at its default
    id_default = REGISTRY["instructive"].defaults["instruction"]
    assert parse_method("instructive", instruction=given)[1]["instruction"] == id_default
    runner = served.runner(EMBEDDED)
    adapter = runner.pool.get(runner.pool.default)
    _, infos = answer_all(adapter, served.image, served.question, [(name, params)], max_new_tokens=1)
    assert infos["icd"]["instruction"] == given
    library = compare(adapter, served.image, served.question, "icd", max_new_tokens=1, instruction=given)
    assert library.branches["instruction"] == library.params["instruction"] == given
