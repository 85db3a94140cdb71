"""Every method and control on the embedded model: each acts at its defaults (or the page says why it cannot), and
every parameter at its slider's minimum and maximum decodes, or is refused up front naming the parameter."""

from __future__ import annotations

import pytest
from PIL import Image

from decoding import compare
from decoding.methods import METHODS, REGISTRY

QUESTION = "is there a square in the image ?"
# A long answer: OPERA's column scores (past 10 tokens) sink every candidate below its fill at sigma 200.
DESCRIBE = "Describe the picture."
# MemVR retraces only where a middle layer is unsure: on QUESTION the embedded model's layer 1 is sure of the first
# tokens (uncertainty at most 0.59 under τ 0.75: it never fires); on DESCRIBE its first token is not (0.753).
QUESTION_FOR = {"memvr": DESCRIBE}
# A note that says a method does nothing on this model at these settings starts with one of these.
SAYS_IT_IS_A_NO_OP = ("**Nothing to hide**", "**No amplification**")


@pytest.fixture
def embedded(embedded_model):
    return embedded_model


@pytest.fixture(scope="module")
def picture():
    return Image.open("assets/examples/shapes-1600000015.png").convert("RGB")


def _notes(result) -> list[str]:
    return [note.text for note in REGISTRY[result.method].notes(result.branches)]


def _moved(result) -> bool:
    """Whether the method's answer differs from the baseline's, in a token or in the final distribution."""
    pairs = zip(result.baseline.tokens, result.method_side.tokens, strict=False)
    return any(
        a.token_id != b.token_id or abs(a.final.prob - b.final.prob) > 1e-4
        or [c.token_id for c in a.final.top] != [c.token_id for c in b.final.top]
        for a, b in pairs
    )


@pytest.mark.parametrize("method", METHODS)
def test_every_method_acts_on_the_embedded_model_at_its_defaults(embedded, picture, method):
    result = compare(embedded, picture, QUESTION_FOR.get(method, QUESTION), method, max_new_tokens=3, ignore_eos=True)
    assert _moved(result), f"{method} decodes as the baseline at its defaults"
    assert not any(text.startswith(SAYS_IT_IS_A_NO_OP) for text in _notes(result))


def test_sid_keeps_the_releases_share_of_the_models_image_tokens_and_says_when_it_hides_nothing(embedded, picture):
    result = compare(embedded, picture, QUESTION, "sid", max_new_tokens=2, ignore_eos=True)
    assert result.params["keep"] == 0
    assert result.branches["image_tokens"] == 36 and result.branches["kept_image_tokens"] == round(100 * 36 / 576)
    for params in ({"keep": 36}, {"layer": 4}):  # every image token kept; a layer past the model's 4
        idle = compare(embedded, picture, QUESTION, "sid", max_new_tokens=2, ignore_eos=True, **params)
        assert not _moved(idle) and _notes(idle)[0].startswith("**Nothing to hide**")
    idle = compare(embedded, picture, QUESTION, "pai", max_new_tokens=2, ignore_eos=True, first_layer=4, gamma=1.0)
    assert not _moved(idle) and _notes(idle)[0].startswith("**No amplification**")


# Every slider's two ends (a text parameter, ICD's instruction, has a text box, no slider).
EXTREMES = [(method, param.name, value) for method in METHODS for param in REGISTRY[method].params
            if getattr(param, "kind", None) != "text" for value in dict.fromkeys((param.low, param.high))]


@pytest.mark.parametrize("method, name, value", EXTREMES)
def test_every_parameter_at_its_sliders_ends_decodes_or_is_refused_naming_it(embedded, picture, method, name, value):
    """As the page runs a method (image attention recorded, visual dependence measured); OPERA long enough for its
    column scores (past 10 tokens)."""
    tokens = 11 if REGISTRY[method].search == "beam" else 3
    try:
        result = compare(embedded, picture, DESCRIBE, method, max_new_tokens=tokens, ignore_eos=True, **{name: value})
    except ValueError as refusal:
        assert name in str(refusal)
        return
    assert result.done and len(result.method_side.tokens) == tokens


# Every text box's two ends: one character, and its limit of characters (words, as a visitor types them).
TEXT_EXTREMES = [(method, param.name, length) for method in METHODS for param in REGISTRY[method].params
                 if getattr(param, "kind", None) == "text" for length in (int(param.low), int(param.high))]


@pytest.mark.parametrize("method, name, length", TEXT_EXTREMES)
def test_every_text_parameter_at_its_ends_decodes_or_is_refused_naming_it(embedded, picture, method, name, length):
    """A text at its limit may not fit the embedded model's context beside the picture: then the refusal names it
    among what to shorten, not the question alone."""
    text = ("look at the picture " * length)[:length]
    try:
        result = compare(embedded, picture, QUESTION, method, max_new_tokens=2, ignore_eos=True, **{name: text})
    except ValueError as refusal:
        assert f"the method's {name}" in str(refusal), str(refusal)
        return
    assert len(result.method_side.tokens) == 2
