"""POPE's first-token readout reads each tokenizer's own yes / no tokens (eval.pope.answer_token_ids): checked on the
tokenizer of every tiny family and every published-geometry builder, and on the embedded model's."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from eval import pope
from models import tiny, tiny_published

BUILDERS = [(tiny, family) for family in tiny.TINY_FAMILIES] + [
    (tiny_published, family) for family in tiny_published.PUBLISHED_FAMILIES]


@pytest.fixture(scope="module")
def tokenizers():
    # the builders' processors, without instantiating any model (their tokenizers are what a saved checkpoint loads)
    return {(module.__name__, family): module._BUILDERS[family](family)[2].tokenizer for module, family in BUILDERS}


def _first_written(tokenizer, spelling: str) -> int:
    """The first token of ``spelling`` that is not only a space: what an answer starting with it begins with."""
    return next(i for i in tokenizer.encode(spelling, add_special_tokens=False)
                if pope._bare(tokenizer.decode([i], skip_special_tokens=False)))


def test_derived_ids_start_every_spelling_of_yes_and_no_and_nothing_else(tokenizers):
    for name, tokenizer in tokenizers.items():
        ids = pope.answer_token_ids(tokenizer)
        assert ids["yes"] and ids["no"] and not ids["yes"] & ids["no"], name
        for word, found in ids.items():
            for token_id in found:  # each one reads as the word, or the start of it where no token holds it whole
                text = pope._bare(tokenizer.decode([token_id], skip_special_tokens=False))
                assert text == word or (text and word.startswith(text)), (name, token_id, text)
                assert token_id not in tokenizer.all_special_ids
            for spelling in pope.answer_spellings(word):
                first = _first_written(tokenizer, spelling)
                if pope._bare(tokenizer.decode([first])) == word or not any(
                        pope._bare(tokenizer.decode([i])) == word for i in found):
                    assert first in found, (name, spelling, first)
    # not one fixed list: the same word is a different id in different vocabularies
    assert len({pope.answer_token_ids(t)["yes"] for t in tokenizers.values()}) > 1


def test_the_embedded_models_yes_and_no_are_its_own_single_tokens():
    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).parent.parent / "assets" / "shapes-llava")
    ids = pope.answer_token_ids(tokenizer)
    assert ids == {"yes": {tokenizer.convert_tokens_to_ids("yes")}, "no": {tokenizer.convert_tokens_to_ids("no")}}


def test_the_readout_compares_the_two_sums():
    assert pope.first_token_answer(0.6, 0.3) == "yes" and pope.first_token_answer(0.3, 0.6) == "no"
    # neither among the recorded candidates (an answer starting "There is..."): no signal, not a "no"
    assert pope.first_token_answer(0.0, 0.0) is None and pope.first_token_answer(None, None) is None
    assert pope.first_token_answer(0.0, 0.2) == "no"
