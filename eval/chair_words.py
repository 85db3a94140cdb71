"""How CHAIR turns a caption into the words it looks up: nltk's tokens, then each variant's singular forms.

Both reference chair.py files start with ``nltk.word_tokenize(caption.lower())`` (LisaAnne/Hallucination 6e4d33c
utils/chair.py line 106; sangminwoo/RITUAL 52065a6 eval_bench/chair.py line 220, shikiw/OPERA 61426ef chair.py
line 220). Then:

- ``original`` (Rohrbach et al.): pattern's ``singularize`` on every token (utils/chair.py line 107), see
  ``pattern_inflect``.
- ``lvlm`` (the LVLM papers' copy): ``nltk.pos_tag`` of the tokens, then WordNet's lemmatizer with the tag's part of
  speech, a noun where the tag is none of adjective, verb, noun, adverb (eval_bench/chair.py lines 200-210 and
  221-226), see ``wordnet``.

``word_tokenize`` (nltk 3.8.1 63a63b1, nltk/tokenize/__init__.py lines 106 and 114-132) splits the text into
sentences with Punkt's trained English model, a data download, then each sentence with ``NLTKWordTokenizer``. Here the
Punkt splitter is an untrained one, so nothing has to be downloaded. On lower-cased text the two differ only after a
period that ends one of the English model's abbreviations (st., dr., mr., u.s. ...), a single letter or a number: there
one keeps "u.s." a token where the other gives "u.s", "." (with the English model's parameters, 2 of the 6,000 LVLM
descriptions in shikiw/OPERA's log/chair_eval_results). No word of CHAIR's COCO table, or of the shapes world's, is
such a token, so the objects found are the same; a description's length can differ by that one token. Likewise
``NLTKWordTokenizer`` has changed since nltk 3.8.1 in how it splits apostrophes and dashes: 4 of those 6,000
descriptions are tokenised differently, none with other objects. ``provenance()`` records the nltk version.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Hashable, Sequence

from .errors import EvalInputError
from .pattern_inflect import singularize
from .wordnet import POS, WordNet, WordNetMissing, find_wordnet

Tagger = Callable[[list[str]], Sequence[tuple[str, str]]]  # as nltk.pos_tag: tokens -> [(token, Penn tag), ...]
WordKey = Callable[[str], Hashable]  # what a word means to the caller's table: words with the same key are alike

CHAIR_VARIANTS = {
    "lvlm": "the LVLM papers' chair.py: nltk part-of-speech tags, WordNet lemmas",
    "original": "Rohrbach et al.'s chair.py: pattern's singularize",
}
DEFAULT_CHAIR_VARIANT = "lvlm"

NLTK_DOWNLOAD = "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet"
LEMMA_TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "wordnet_lemmas.tsv")


class ChairDataMissing(EvalInputError):
    """The lvlm variant's tagger or WordNet is not installed."""


def _missing(what: str) -> ChairDataMissing:
    return ChairDataMissing(
        f"CHAIR's lvlm variant needs {what}, which is not installed. Fetch nltk's tagger and WordNet once with "
        f"`{NLTK_DOWNLOAD}` (WordNet alone can also come from Debian: `apt-get install wordnet-base`, read from "
        "/usr/share/wordnet), or score with --chair-variant original, which needs no data.")


@functools.lru_cache(maxsize=1)
def _splitters():
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def tokenize(caption: str) -> list[str]:
    """``nltk.word_tokenize(caption.lower())``, with an untrained Punkt sentence splitter (see the module's note)."""
    sentences, words = _splitters()
    return [token for sentence in sentences.tokenize(caption.lower()) for token in words.tokenize(sentence)]


def wordnet_pos(tag: str) -> str:
    """eval_bench/chair.py lines 200-210 (``get_wordnet_pos``) with line 225's ``or wordnet.NOUN``."""
    return {"J": "a", "V": "v", "N": "n", "R": "r"}.get(tag[:1], "n")


def nltk_tagger() -> Tagger:
    """``nltk.pos_tag``, once it has loaded its tagger (ChairDataMissing if the tagger's data is not installed). Since
    nltk 3.9 it builds that tagger once (``_get_tagger`` is cached, nltk/tag/__init__.py); nltk 3.8.1 built it anew
    for every caption, from the same averaged-perceptron model."""
    import nltk

    try:
        nltk.pos_tag([])
    except LookupError:
        raise _missing("nltk's part-of-speech tagger (averaged_perceptron_tagger_eng)") from None
    return nltk.pos_tag


def read_lemma_table(path: str = LEMMA_TABLE_PATH) -> dict[str, tuple[str, ...]]:
    """word -> its WordNet lemma as a noun, verb, adjective, adverb (tab-separated; "#" lines are comments)."""
    table = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                word, *lemmas = line.rstrip("\n").split("\t")
                table[word] = tuple(lemmas)
    return table


class OriginalWords:
    """The original CHAIR's words: pattern's singular of each token."""

    variant = "original"

    def words(self, tokens: list[str], key: WordKey) -> list[str]:
        return [singularize(token) for token in tokens]

    def require_data(self) -> None:
        """Nothing to install."""

    def provenance(self) -> dict:
        return {"variant": self.variant, "nltk": _nltk_version()}


class LvlmWords:
    """The LVLM papers' CHAIR words: each token's WordNet lemma for the part of speech nltk's tagger gives it.

    tagger: as ``nltk.pos_tag`` (default: nltk's own, read on first use). wordnet: default, found on first use
    (``wordnet.find_wordnet``). Lemmas of the words in ``lemma_table`` (default: data/wordnet_lemmas.tsv, WordNet's own
    lemmas of the shapes world's words) are read from there, so those words need no WordNet. A caption is tagged only
    when the part of speech can matter: when some token's lemmas for the four parts of speech differ in their ``key``
    (the caller's table: which object, which double word); otherwise every choice of tags gives the same words.
    """

    variant = "lvlm"

    def __init__(self, tagger: Tagger | None = None, wordnet: WordNet | None = None,
                 lemma_table: dict[str, tuple[str, ...]] | None = None):
        self._tagger, self._given_tagger = tagger, tagger is not None
        self._wordnet = wordnet
        self._table = read_lemma_table() if lemma_table is None else lemma_table
        self.used = {"tagger": False, "wordnet": False}

    def words(self, tokens: list[str], key: WordKey) -> list[str]:
        lemmas = [self.lemmas(token) for token in tokens]
        if all(len({key(lemma) for lemma in options}) == 1 for options in lemmas):
            return [options[0] for options in lemmas]
        tagged = self.tagger()(tokens)
        self.used["tagger"] = True
        return [options[POS.index(wordnet_pos(tag))] for options, (_, tag) in zip(lemmas, tagged)]

    def lemmas(self, token: str) -> tuple[str, ...]:
        """The token's lemma as a noun, a verb, an adjective and an adverb."""
        if token in self._table:
            return self._table[token]
        wordnet = self.wordnet()
        self.used["wordnet"] = True
        return tuple(wordnet.lemmatize(token, pos) for pos in POS)

    def tagger(self) -> Tagger:
        if self._tagger is None:
            self._tagger = nltk_tagger()
        return self._tagger

    def wordnet(self) -> WordNet:
        if self._wordnet is None:
            try:
                self._wordnet = find_wordnet()
            except WordNetMissing:
                raise _missing("WordNet") from None
        return self._wordnet

    def require_data(self) -> None:
        """Load the tagger and WordNet now (ChairDataMissing, saying how to install them, if they are missing)."""
        self.tagger()
        self.wordnet()

    def provenance(self) -> dict:
        """What the scores came from: the tagger and WordNet, or None where no caption needed them."""
        tagger = ("given" if self._given_tagger else "nltk.pos_tag") if self.used["tagger"] else None
        wordnet = self._wordnet.source if self.used["wordnet"] else None
        return {"variant": self.variant, "nltk": _nltk_version(), "tagger": tagger, "wordnet": wordnet}


def caption_words(variant: str = DEFAULT_CHAIR_VARIANT, tagger: Tagger | None = None):
    """The words of ``variant`` ("lvlm" or "original"); ``tagger`` replaces nltk's for lvlm."""
    if variant == "original":
        if tagger is not None:
            raise ValueError("the original CHAIR variant tags nothing; a tagger is for the lvlm variant")
        return OriginalWords()
    if variant == "lvlm":
        return LvlmWords(tagger)
    raise EvalInputError(f"unknown CHAIR variant {variant!r}; expected one of {', '.join(CHAIR_VARIANTS)}")


def _nltk_version() -> str:
    import nltk

    return nltk.__version__

