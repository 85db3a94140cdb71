"""data/wordnet_lemmas.tsv, WordNet's lemmas of the shapes world's tokens: ``python -m eval.lemma_table`` rewrites it
from the WordNet that ``wordnet.find_wordnet`` finds (tests/test_eval_chair.py checks it against WordNet)."""

from __future__ import annotations

from .chair_words import LEMMA_TABLE_PATH, tokenize
from .wordnet import POS, WordNet, find_wordnet

def shapes_world_tokens() -> list[str]:
    """Every token the shapes world's model can write: the tokens of each word of its closed vocabulary."""
    from models.shapes_world import build

    return sorted({token for entry in build.vocabulary() for token in tokenize(entry)})


def lemma_table(words: list[str], wordnet: WordNet) -> str:
    """The text of data/wordnet_lemmas.tsv for ``words``: each word's lemma as a noun, verb, adjective, adverb."""
    header = (
        "# WordNet 3.0's lemmas of the shapes world's tokens, as the LVLM papers' chair.py lemmatises them\n"
        "# (nltk 3.8.1's WordNetLemmatizer, eval/wordnet.py), for the parts of speech n, v, a, r: the shapes\n"
        "# world's CHAIR then runs without WordNet. Written by `python -m eval.lemma_table` from WordNet;\n"
        "# tests/test_eval_chair.py checks it.\n"
    )
    rows = ["\t".join([word, *(wordnet.lemmatize(word, pos) for pos in POS)]) for word in words]
    return header + "\n".join(rows) + "\n"


def main() -> None:
    """Rewrite data/wordnet_lemmas.tsv from the WordNet that ``find_wordnet`` finds."""
    with open(LEMMA_TABLE_PATH, "w", encoding="utf-8") as f:
        f.write(lemma_table(shapes_world_tokens(), find_wordnet()))
    print(f"wrote {LEMMA_TABLE_PATH}")


if __name__ == "__main__":
    main()
