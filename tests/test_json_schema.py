"""README's table of the exported run names exactly the fields a run exports, at every level, and every per-step
scalar the registry can report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decoding import compare
from decoding.comparison import SCHEMA_VERSION
from decoding.methods import STEP_SCALARS
from models import build_tiny, load_model

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_fields() -> dict[str, set[str]]:
    """level -> field names, from the README table under "The exported run"."""
    section = README.read_text().split("### The exported run", 1)[1].split("\n#", 1)[0]
    fields: dict[str, set[str]] = {}
    for level, names in re.findall(r"^\| (\w+) \| ([^|]+) \|", section, flags=re.M):
        if level == "level":
            continue
        fields.setdefault(level, set()).update(re.findall(r"`(\w+)`", names))
    return fields


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = load_model(build_tiny("llava", tmp_path_factory.mktemp("schema")))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    return json.loads(compare(model, image, "What is in the image?", "code", max_new_tokens=2).to_json())


def test_the_table_names_every_exported_field(exported):
    fields = documented_fields()
    side = exported["method_side"]
    token = side["tokens"][0]
    assert fields["run"] == set(exported)
    assert fields["side"] == set(side)
    assert fields["token"] == set(token)
    assert fields["view"] == set(token["final"]) == set(token["branches"]["original"])
    assert fields["candidate"] == set(token["final"]["top"][0])
    assert fields["scalar"] == set(STEP_SCALARS)
    assert set(token["scalars"]) == {"contrast_weight", "plausibility_cut"}


def test_the_schema_version_is_the_documented_one(exported):
    assert exported["schema_version"] == SCHEMA_VERSION
    assert f"schema {SCHEMA_VERSION})" in README.read_text()
