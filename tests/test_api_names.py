"""/compare's input names: every input has one, a method's parameters are named by method and parameter (not by
position), a method added to the registry renames none of the others, and a caller passing a few inputs by name gets
the page's defaults for the rest."""

import dataclasses
import json
import keyword
from pathlib import Path

import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from serving import free_port

from decoding.methods import REGISTRY
from demo.allow_list import EMBEDDED_MODEL_DIR
from demo.examples import EXAMPLES_DIR
from demo.model_pool import ModelPool
from demo.run import CONTROL_SLIDERS, SLIDERS, Runner
from demo.ui import (
    CONTROL_FIELD, CONTROL_SLIDER_NAMES, REQUEST_FIELDS, SLIDER_NAMES, build_blocks, launch, slider_names,
)

SCENE = EXAMPLES_DIR / "shapes-1600000138.png"
STATUS, DOWNLOAD = 0, 5


def sliders_of(registry: dict) -> list:
    """(method, Param) pairs in registry order, as run.SLIDERS builds them."""
    return [(name, param) for name, record in registry.items() for param in record.params]


def test_every_input_has_its_own_name_and_a_methods_parameters_are_named_by_method_and_parameter():
    names = [*REQUEST_FIELDS, *SLIDER_NAMES, CONTROL_FIELD, *CONTROL_SLIDER_NAMES]
    assert len(set(names)) == len(names)
    assert all(name.isidentifier() and not keyword.iskeyword(name) for name in names)  # gradio_client keywords
    assert list(SLIDER_NAMES) == [f"{method}_{param.name}" for method, param in SLIDERS]
    assert len(SLIDER_NAMES) == len(SLIDERS) and len(CONTROL_SLIDER_NAMES) == len(CONTROL_SLIDERS)


@pytest.mark.parametrize("after", ["(first)", "vcd", "opera"])
def test_a_method_inserted_into_the_registry_renames_no_existing_input(after):
    """A newcomer's VCD variant, inserted after ``after``: every existing parameter keeps its name, and the new one
    takes names no other input has."""
    variant = dataclasses.replace(REGISTRY["vcd"], name="vcd_black")
    names = list(REGISTRY)
    at = names.index(after) + 1 if after in names else 0
    grown = {name: REGISTRY[name] for name in names[:at]} | {"vcd_black": variant}
    grown |= {name: REGISTRY[name] for name in names[at:]}
    before = dict(zip([(m, p.name) for m, p in sliders_of(REGISTRY)], slider_names(sliders_of(REGISTRY))))
    after_insert = dict(zip([(m, p.name) for m, p in sliders_of(grown)], slider_names(sliders_of(grown))))
    assert all(after_insert[key] == name for key, name in before.items())
    added = [name for key, name in after_insert.items() if key[0] == "vcd_black"]
    assert added and not set(added) & {*before.values(), *REQUEST_FIELDS, CONTROL_FIELD, *CONTROL_SLIDER_NAMES}


@pytest.fixture(scope="module")
def client():
    pool = ModelPool([str(EMBEDDED_MODEL_DIR)])
    pool.start()
    blocks = build_blocks(Runner(pool, get_upload_folder()))
    _, url, _ = launch(blocks, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield Client(url, verbose=False)
    finally:
        blocks.close()


def test_the_api_lists_every_input_by_name_and_a_call_by_name_gets_the_defaults_for_the_rest(client):
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/compare"]["parameters"]
    listed = [parameter["parameter_name"] for parameter in parameters]
    assert listed == [*REQUEST_FIELDS, *SLIDER_NAMES, CONTROL_FIELD, *CONTROL_SLIDER_NAMES]
    outputs = client.predict(
        image=handle_file(str(SCENE)), question="is there a star in the image ?", method="vcd", vcd_alpha=2.5,
        vcd_noise_step=250, max_new_tokens=3, control="apc_only", control_apc_only_beta=0.3, api_name="/compare",
    )
    trace = json.loads(Path(outputs[DOWNLOAD]).read_text())
    assert outputs[STATUS].startswith("Done"), outputs[STATUS]
    defaults = {param.name: param.default for method, param in SLIDERS if method == "vcd"}
    assert trace["params"] == defaults | {"alpha": 2.5, "noise_step": 250}
    assert trace["control"] == "apc_only" and trace["control_params"]["beta"] == 0.3
