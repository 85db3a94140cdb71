"""The lvlm variant's machinery: WordNet's lemmatizer as nltk 3.8.1 ran it, read from Debian's or nltk's files; nltk's
tagger, built once; the errors that say how to install what is missing; the lemma table that lets the shapes world's
CHAIR run with no data at all, in either variant."""

from __future__ import annotations

import json
import os
import zipfile

import nltk
import nltk.tag
import pytest

from eval.benchmarks import chair_benchmark
from eval.chair_words import (
    LEMMA_TABLE_PATH,
    NLTK_DOWNLOAD,
    ChairDataMissing,
    LvlmWords,
    nltk_tagger,
    tokenize,
    wordnet_pos,
)
from eval.lemma_table import lemma_table, shapes_world_tokens
from eval.shapes_world import benchmark as shapes_benchmark
from eval.wordnet import DEBIAN_WORDNET, WordNetMissing, find_wordnet, read_folder


@pytest.fixture()
def no_nltk_data(tmp_path, monkeypatch):
    """nltk looks for its data in an empty folder only."""
    empty = tmp_path / "nltk_data"
    empty.mkdir()
    monkeypatch.setattr(nltk.data, "path", [str(empty)])
    return empty


@pytest.mark.parametrize("word, pos, lemma", [
    ("buses", "n", "bus"), ("bus", "n", "bus"), ("ties", "n", "tie"), ("manes", "n", "mane"),
    ("glasses", "n", "glass"),  # "glasses" and "glass" are both nouns: the shorter
    ("men", "n", "men"),  # noun.exc: men -> man, but "men" is a noun too, and comes first among equals
    ("teeth", "n", "teeth"), ("mice", "n", "mouse"), ("ponies", "n", "pony"), ("is", "v", "be"),
    ("copes", "v", "cop"), ("copes", "n", "cope"),  # verbs "cope" and "cop" (es -> ""): the shorter
    # no one-step form is a verb, so nltk 3.8.1 applies the rules again: surrounding -> surround
    ("surroundings", "v", "surround"),
    ("xyzzies", "n", "xyzzies"),  # not in WordNet: unchanged
])
def test_lemmatizer_is_nltk_381s(wordnet, word, pos, lemma):
    assert wordnet.lemmatize(word, pos) == lemma


def test_wordnet_is_read_from_nltks_data_as_the_downloader_leaves_it(tmp_path, monkeypatch):
    if not os.path.isfile(os.path.join(DEBIAN_WORDNET, "index.noun")):
        pytest.fail(f"this test packs Debian's WordNet ({DEBIAN_WORDNET}): install wordnet-base, as .ci/run does")
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    with zipfile.ZipFile(corpora / "wordnet.zip", "w", zipfile.ZIP_STORED) as archive:
        for name in os.listdir(DEBIAN_WORDNET):
            if name.startswith("index.") or name.endswith(".exc"):
                archive.write(os.path.join(DEBIAN_WORDNET, name), f"wordnet/{name}")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    from_nltk, from_debian = find_wordnet(folders=()), read_folder(DEBIAN_WORDNET)
    assert from_nltk.source.startswith("WordNet 3.0, nltk data: ")
    assert from_debian.source == f"WordNet 3.0, {DEBIAN_WORDNET}"
    assert from_nltk.lemmas == from_debian.lemmas and from_nltk.exceptions == from_debian.exceptions


def test_missing_wordnet_says_how_to_install_it(tmp_path, monkeypatch, no_nltk_data):
    with pytest.raises(WordNetMissing):
        find_wordnet(folders=(str(tmp_path),))
    monkeypatch.setattr("eval.chair_words.find_wordnet", lambda: find_wordnet(folders=(str(tmp_path),)))
    words = LvlmWords(tagger=lambda tokens: [(t, "NN") for t in tokens])
    with pytest.raises(ChairDataMissing) as error:
        words.lemmas("zebras")
    message = str(error.value)
    assert "needs WordNet" in message and NLTK_DOWNLOAD in message and "apt-get install wordnet-base" in message


@pytest.fixture()
def fresh_pos_tag():
    """nltk.pos_tag builds its tagger again (nltk caches it in nltk.tag._get_tagger), before and after the test."""
    nltk.tag._get_tagger.cache_clear()
    yield
    nltk.tag._get_tagger.cache_clear()


def test_missing_tagger_says_how_to_install_it(no_nltk_data, fresh_pos_tag):
    # the real nltk.pos_tag, finding no averaged_perceptron_tagger_eng
    with pytest.raises(ChairDataMissing) as error:
        nltk_tagger()
    message = str(error.value)
    assert "part-of-speech tagger (averaged_perceptron_tagger_eng)" in message
    assert f"`{NLTK_DOWNLOAD}`" in message and "--chair-variant original" in message


def test_the_lvlm_variant_tags_with_nltk_pos_tag(monkeypatch, fresh_pos_tag):
    class StandIn:  # in place of nltk's PerceptronTagger, whose data CI does not download
        def tag(self, tokens):
            return [(t, "VBZ" if t == "copes" else "NN") for t in tokens]

    monkeypatch.setattr(nltk.tag, "PerceptronTagger", StandIn)
    words = LvlmWords()
    assert words.tagger() is nltk.pos_tag
    assert words.words(tokenize("He copes."), key=str) == ["he", "cop", "."]  # "copes" as a verb: "cop"
    assert words.provenance()["tagger"] == "nltk.pos_tag"


@pytest.mark.parametrize("tag, pos", [("JJR", "a"), ("VBZ", "v"), ("NNS", "n"), ("RB", "r"), ("RP", "r"),
                                      ("IN", "n"), ("WRB", "n"), (".", "n")])
def test_tags_map_to_wordnet_as_get_wordnet_pos(tag, pos):
    assert wordnet_pos(tag) == pos


def test_lemma_table_is_wordnets_for_every_token_of_the_shapes_world(wordnet):
    with open(LEMMA_TABLE_PATH, encoding="utf-8") as f:
        assert f.read() == lemma_table(shapes_world_tokens(), wordnet)


@pytest.fixture(scope="module")
def shapes_chair(tmp_path_factory):
    return shapes_benchmark.write_chair(str(tmp_path_factory.mktemp("shapes-chair")), n=6, seed=0)


@pytest.mark.parametrize("variant", ["lvlm", "original"])
def test_shapes_world_chair_needs_no_data(shapes_chair, monkeypatch, variant):
    def not_needed(*args, **kwargs):
        raise AssertionError("the shapes world's CHAIR must need neither WordNet nor a tagger")

    monkeypatch.setattr("eval.chair_words.find_wordnet", not_needed)
    monkeypatch.setattr("eval.chair_words.nltk_tagger", not_needed)
    folder = os.path.dirname(shapes_chair["instances"])
    bench = chair_benchmark(os.path.join(folder, "images"), shapes_chair["instances"], shapes_chair["captions"],
                            num_images=100, synonyms_path=shapes_chair["synonyms"], variant=variant)
    with open(shapes_chair["captions"], encoding="utf-8") as f:
        described = {a["image_id"]: a["caption"] for a in json.load(f)["annotations"]}
    with open(shapes_chair["instances"], encoding="utf-8") as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    kinds = {i: {names[a["category_id"]] for a in data["annotations"] if a["image_id"] == i} for i in described}
    invented = "a red ring , two green frames and a blue moon ."
    answers = {bench.requests[k].key: {"baseline": described[i], "invented": invented}
               for k, i in enumerate(bench.settings["image_ids"])}
    scored = bench.score(answers, ["baseline", "invented"])
    baseline, wrong = scored.details["baseline"], scored.details["invented"]
    assert (baseline["chair_s"], baseline["chair_i"], baseline["recall"]) == (0.0, 0.0, 1.0)
    expected = sum(len({"ring", "frame", "moon"} - kinds[i]) for i in described) / (3 * len(described))
    assert wrong["chair_i"] == pytest.approx(expected) and wrong["mentions"] == 3 * len(described)
    assert bench.settings["chair_words"]["variant"] == variant
    assert bench.settings["chair_words"].get("wordnet") is None and bench.settings["chair_words"].get("tagger") is None
