"""A user's text is text: checked for characters no tokenizer can encode, and kept from forming control tokens.

A chat prompt is one string that the processor expands (each image placeholder becomes the image's tokens) and the
tokenizer parses (every added token, special ones included, is matched wherever its text occurs). A question holding
``<image>`` would therefore make the processor count two images, and ``</s>``, ``<|im_end|>`` or a template's role
word (``USER:``, ``ASSISTANT:``) would end the user turn early. ``neutralise`` breaks each such string with an
invisible WORD JOINER (U+2060) after its first character: the text reads the same and tokenizes as plain text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

WORD_JOINER = "\u2060"
# Role words of plain-text chat templates: a word and a colon (LLaVA-1.5's "USER: ... ASSISTANT:"), a bracketed
# word (Llama 2's and Mistral's "[INST] ... [/INST]", plain text to their tokenizers) and Llama 2's "<<SYS>>" markers.
_ROLE_WORD = re.compile(r"\b[A-Za-z][A-Za-z_]*:|\[/?[A-Za-z][A-Za-z_]*\]|<</?[A-Za-z][A-Za-z_]*>>")
_ALLOWED_CONTROLS = frozenset("\t\n\r")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str, what: str = "the question") -> str:
    """``text`` as given; ValueError naming the first character no tokenizer takes as text: a lone surrogate (which
    cannot be encoded as UTF-8), NUL or another control character (tab and line breaks are text)."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be text, got {type(text).__name__}")  # noqa: TRY004 (one type for callers)
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs":
            kind = "a lone surrogate, which is not valid Unicode text"
        elif category == "Cc" and char not in _ALLOWED_CONTROLS:
            kind = "a control character"
        else:
            continue
        raise ValueError(
            f"{what} holds a character that is not text: U+{ord(char):04X} ({kind}) at position {position + 1}; "
            "remove it and try again"
        )
    return text


def replace_surrogates(text: str) -> str:
    """``text`` with each lone surrogate made U+FFFD, the replacement character."""
    return _SURROGATE.sub("\ufffd", text)


def role_words(template_text: str) -> set[str]:
    """The role words (``USER:``, ``[/INST]``, ``<<SYS>>``) of a rendered chat prompt's own text."""
    return set(_ROLE_WORD.findall(template_text))


class Neutraliser:
    """Breaks every occurrence of ``markers`` (special tokens, image placeholders, role words) in a text."""

    def __init__(self, markers: Iterable[str]):
        markers = sorted({m for m in markers if isinstance(m, str) and len(m) > 1}, key=len, reverse=True)
        self.markers = tuple(markers)
        self._pattern = re.compile("|".join(re.escape(m) for m in markers)) if markers else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        # Breaking a marker cannot form another (none holds the joiner), unless one marker lies inside another's
        # tail: a few passes settle that too.
        for _ in range(4):
            broken = self._pattern.sub(lambda match: match.group(0)[0] + WORD_JOINER + match.group(0)[1:], text)
            if broken == text:
                break
            text = broken
        return text
