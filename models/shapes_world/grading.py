"""Scoring an answer about a shapes-world scene against its ground truth, word by word.

The app marks the answer of each panel with this: every shape word (and the colour word before it) is *correct* when
the scene has it and *hallucinated* when it does not; a yes/no answer is *correct*, *hallucinated* (a "yes" to
something the picture does not show) or *missed* (a "no" to something it does show). Answers are read leniently
(case, punctuation, "Yes, there is..."), so the same scoring works for a real LVLM asked about a world scene.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import world

CORRECT = "correct"
HALLUCINATED = "hallucinated"
MISSED = "missed"

_WORD = re.compile(r"[a-z]+")
_KIND_OF_WORD = {k: k for k in world.KINDS} | {p: k for k, p in world.PLURALS.items()}
_NUMBERS = {word: number for number, word in world.NUMBER_WORDS.items()}
_RELATIONS = {tuple(relation.split()): relation for relation in world.RELATIONS}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def parse_question(text: str) -> tuple[str, tuple[str, ...], str] | None:
    """(family, subject kinds, detail) of a question in the world's grammar, read leniently; None otherwise.

    >>> parse_question("Is there a star in the image?")
    ('existence', ('star',), '')
    >>> parse_question("are there exactly two circles ?")
    ('count', ('circle',), '2')
    """
    words = _words(text)
    match words:
        case ["describe", ("the" | "this"), ("image" | "picture" | "scene"), *_]:
            return "description", (), ""
        case ["is", "there", "exactly", "one", kind, *_] if kind in world.KINDS:
            return "count", (kind,), "1"
        case ["are", "there", "exactly", number, plural, *_] if number in _NUMBERS and plural in _KIND_OF_WORD:
            return "count", (_KIND_OF_WORD[plural],), str(_NUMBERS[number])
        case ["is", "there", ("a" | "an" | "any"), kind, *rest] if kind in world.KINDS and rest in (
            [], ["in", "the", "image"], ["in", "the", "picture"]
        ):
            return "existence", (kind,), ""
        case ["is", "the", kind, colour] if kind in world.KINDS and colour in world.COLOURS:
            return "colour", (kind,), colour
        case ["is", "the", a, *relation, "the", b] if (
            a in world.KINDS and b in world.KINDS and a != b and tuple(relation) in _RELATIONS
        ):
            return "position", (a, b), _RELATIONS[tuple(relation)]
    return None


def question_about(scene: world.Scene, text: str) -> world.Question | None:
    """The world's Question (with its true answer) for a question text, or None when it is not in the grammar or has
    no answer on this scene (a position question needs exactly one of each shape)."""
    parsed = parse_question(text)
    if parsed is None:
        return None
    family, subject, detail = parsed
    if family == "description":
        return world.description_question(scene)
    if family == "existence":
        return world.existence_question(scene, subject[0])
    if family == "colour":
        return world.colour_question(scene, subject[0], detail)
    if family == "count":
        return world.count_question(scene, subject[0], int(detail))
    if any(scene.count(kind) != 1 for kind in subject):
        return None
    return world.position_question(scene, subject[0], detail, subject[1])


@dataclass(frozen=True)
class Grade:
    """One answer scored against a scene.

    marks: per answer piece, CORRECT / HALLUCINATED / MISSED or None (a word that claims nothing about the scene).
    correct / hallucinated / missed: counts. A yes/no answer counts once; a description counts each shape word and
    each colour word, plus one miss per object of the scene it leaves out.
    question: the world Question the answer was scored on (None: the text was not a yes/no question of the grammar,
    so only its shape words were scored).
    """

    marks: tuple[str | None, ...]
    correct: int
    hallucinated: int
    missed: int
    question: world.Question | None


def grade_answer(scene: world.Scene, question_text: str, pieces: list[str]) -> Grade:
    """Score an answer, given as the pieces it was decoded in (tokens), against ``scene``.

    Yes/no questions of the grammar: the first "yes" or "no" is the answer; the shape words around it only repeat the
    question and are not scored. Anything else (descriptions, free questions): each shape word is correct if the scene
    has that kind, else hallucinated; a colour word right before a shape word is correct if an object of that kind
    has that colour, else hallucinated; kinds the scene has but the answer never names count as missed.
    """
    question = question_about(scene, question_text)
    spans, text = [], ""
    for piece in pieces:
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text.lower())]
    word_marks: list[tuple[int, int, str]] = []  # (start, end, mark)
    if question is not None and question.family != "description":
        for word, start, end in words:
            if word in ("yes", "no"):
                if word == question.answer:
                    mark = CORRECT
                else:
                    mark = HALLUCINATED if word == "yes" else MISSED
                word_marks.append((start, end, mark))
                break
        missed_objects = 0
    else:
        named = set()
        for index, (word, start, end) in enumerate(words):
            kind = _KIND_OF_WORD.get(word)
            if kind is None:
                continue
            named.add(kind)
            word_marks.append((start, end, CORRECT if world.exists(scene, kind) else HALLUCINATED))
            if index > 0 and words[index - 1][0] in world.COLOURS:
                colour, colour_start, colour_end = words[index - 1]
                good = world.has_colour(scene, kind, colour)
                word_marks.append((colour_start, colour_end, CORRECT if good else HALLUCINATED))
        missed_objects = len(scene.kinds - named)
    marks = []
    for start, end in spans:
        covering = [mark for w_start, w_end, mark in word_marks if w_start < end and start < w_end]
        # A token spanning a correct and a wrong word shows the wrong one: a hallucination must never be hidden.
        marks.append(next((m for m in (HALLUCINATED, MISSED, CORRECT) if m in covering), None))
    counts = [mark for _, _, mark in word_marks]
    return Grade(
        marks=tuple(marks),
        correct=counts.count(CORRECT),
        hallucinated=counts.count(HALLUCINATED),
        missed=counts.count(MISSED) + missed_objects,
        question=question,
    )


__all__ = ["CORRECT", "HALLUCINATED", "MISSED", "Grade", "grade_answer", "parse_question", "question_about"]
