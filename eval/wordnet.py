"""WordNet's lemmatizer as the LVLM papers' CHAIR ran it, read from WordNet 3.0's own files.

The LVLM version of chair.py (sangminwoo/RITUAL 52065a6 eval_bench/chair.py lines 224-226, shikiw/OPERA 61426ef
chair.py, the same lines) calls ``WordNetLemmatizer().lemmatize(word, pos)``, with nltk 3.8.1 (OPERA's
requirements.txt pins it). That is, in nltk 3.8.1 (63a63b1): ``min(lemmas, key=len) if lemmas else word``
(nltk/stem/wordnet.py line 46) over ``WordNetCorpusReader._morphy`` (nltk/corpus/reader/wordnet.py lines 2064-2115):
the exception list's forms if the word is in it, else the word and its one-step suffix substitutions (lines
2036-2060), whichever are WordNet lemmas of that part of speech; if none is, the substitutions are applied again and
again until some are. Later nltk releases dropped that last step ("surroundings" as a verb: "surround" there,
unchanged since), so this module keeps nltk 3.8.1's.

It needs only the four index files (their lemma and part-of-speech fields, as nltk's ``_load_lemma_pos_offset_map``
reads them, lines 1361-1409) and the four exception lists (``_load_exception_map``, lines 1411-1419), which it reads
from nltk's data (``python -m nltk.downloader wordnet``: corpora/wordnet or corpora/wordnet.zip) or from a plain
WordNet 3.0 "dict" folder such as Debian's wordnet-base package (/usr/share/wordnet). nltk's own corpus reader cannot
read that folder: it also wants a ``lexnames`` file and ``index.sense``, which wordnet-base does not ship.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable

POS = ("n", "v", "a", "r")  # WordNet's parts of speech: noun, verb, adjective, adverb
_FILE_POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
DEBIAN_WORDNET = "/usr/share/wordnet"

# nltk 3.8.1 nltk/corpus/reader/wordnet.py lines 2036-2060 (MORPHOLOGICAL_SUBSTITUTIONS), in their order.
SUBSTITUTIONS = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}


class WordNetMissing(LookupError):
    """No WordNet 3.0 files where nltk or Debian keep them."""


class WordNet:
    """The lemmas of each part of speech and the exception lists of WordNet, and its lemmatizer."""

    def __init__(self, lemmas: dict[str, set[str]], exceptions: dict[str, dict[str, list[str]]], source: str):
        self.lemmas = lemmas
        self.exceptions = exceptions
        self.source = source
        self.lemmatize = functools.lru_cache(maxsize=None)(self._lemmatize)

    @classmethod
    def read(cls, open_file, source: str) -> WordNet:
        """``open_file(name)``: a text stream of ``index.noun``, ``noun.exc`` ... of one WordNet folder."""
        lemmas: dict[str, set[str]] = {pos: set() for pos in POS}
        exceptions: dict[str, dict[str, list[str]]] = {}
        version = None
        for pos, name in _FILE_POS.items():
            with open_file(f"index.{name}") as lines:
                for line in lines:
                    if line.startswith(" "):  # the licence, "  14 WordNet 3.0 Copyright 2006 ..."
                        version = version or _version(line)
                        continue
                    lemma, line_pos = line.split(None, 2)[:2]
                    lemmas.setdefault(line_pos, set()).add(lemma)
            with open_file(f"{name}.exc") as lines:
                exceptions[pos] = {terms[0]: terms[1:] for terms in map(str.split, lines) if terms}
        return cls(lemmas, exceptions, f"WordNet {version or '(version not stated)'}, {source}")

    def morphy(self, form: str, pos: str) -> list[str]:
        """nltk 3.8.1's ``_morphy(form, pos)``: the WordNet lemmas ``form`` may be an inflection of."""
        lemmas = self.lemmas[pos]
        substitutions = SUBSTITUTIONS[pos]

        def apply_rules(forms: list[str]) -> list[str]:
            return [f[: -len(old)] + new for f in forms for old, new in substitutions if f.endswith(old)]

        def filter_forms(forms: Iterable[str]) -> list[str]:
            return list(dict.fromkeys(f for f in forms if f in lemmas))

        if form in self.exceptions[pos]:
            return filter_forms([form] + self.exceptions[pos][form])
        forms = apply_rules([form])
        results = filter_forms([form] + forms)
        while not results and forms:
            forms = apply_rules(forms)
            results = filter_forms(forms)
        return results

    def _lemmatize(self, word: str, pos: str = "n") -> str:
        """``WordNetLemmatizer().lemmatize(word, pos)``: the shortest lemma (the first if several), else the word."""
        lemmas = self.morphy(word, pos)
        return min(lemmas, key=len) if lemmas else word


def _version(line: str) -> str | None:
    match = re.search(r"WordNet (\d+\.\d+) Copyright", line)
    return match.group(1) if match else None


def read_folder(folder: str) -> WordNet:
    """WordNet from a folder of its files (Debian's /usr/share/wordnet, an unpacked corpora/wordnet)."""
    return WordNet.read(lambda name: open(os.path.join(folder, name), encoding="utf-8"), folder)


def _nltk_folder():
    """nltk's WordNet as ``nltk.corpus.wordnet`` finds it (corpora/wordnet, or inside corpora/wordnet.zip), or None."""
    import nltk.data

    for resource in ("corpora/wordnet/", "corpora/wordnet.zip/wordnet/"):
        try:
            return nltk.data.find(resource)
        except LookupError:
            continue
    return None


def find_wordnet(folders: Iterable[str] = (DEBIAN_WORDNET,)) -> WordNet:
    """WordNet 3.0 from nltk's data (what the LVLM papers' chair.py reads), else from the first of ``folders`` that
    holds it; WordNetMissing if neither does."""
    pointer = _nltk_folder()
    if pointer is not None:
        return WordNet.read(lambda name: pointer.join(name).open(encoding="utf-8"), f"nltk data: {pointer}")
    for folder in folders:
        if os.path.isfile(os.path.join(folder, "index.noun")):
            return read_folder(folder)
    raise WordNetMissing("WordNet is not installed: neither nltk's data (corpora/wordnet) nor "
                         + ", ".join(folders) + " holds it")
