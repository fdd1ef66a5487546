"""Answer extraction and grading: numbers, choice labels and ``\\boxed{}`` maths (through math-verify)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?")
ANSWER_CUE = re.compile(r"answer\s*(?:is|:)\s*", re.IGNORECASE)


def _bare(number: re.Match) -> str:
    """A :data:`NUMBER` match without its ``$``, thousands commas and the whitespace (any kind: ``- 5`` or a
    no-break space) the pattern allows after the sign: ``'-$ 1,000.5'`` -> ``'-1000.5'``."""
    return re.sub(r"[$,\s]", "", number.group(0))


def normalize_number(text: str) -> float | None:
    """``'$1,000.00'`` -> 1000.0; None when there is no number."""
    m = NUMBER.search(text)
    return None if m is None else float(_bare(m))


def _first_line(text: str) -> tuple[str, bool]:
    """The first non-empty line of the text, and whether it has ended (a newline follows it)."""
    stripped = text.lstrip()
    line, newline, _ = stripped.partition("\n")
    return line, bool(newline)


def extract_number(text: str) -> str | None:
    """The answer number of a direct answer: on the first non-empty line, the number after an answer cue
    (``answer is``/``answer:``) if there is one, else the last number (``49 - 27 = 22`` gives 22). Only the first
    line counts, so decoding may stop at its end without changing the answer."""
    line, _ = _first_line(text)
    cue = ANSWER_CUE.search(line)
    numbers = list(NUMBER.finditer(line, cue.end() if cue else 0))
    if not numbers:
        return None
    return _bare(numbers[0] if cue else numbers[-1])


def number_done(text: str) -> bool:
    """True once the first line, which holds the answer, has ended."""
    return _first_line(text)[1]


def numbers_equal(pred: str | None, gold: str, rel_tol: float = 1e-6) -> bool:
    """Numeric equality, tolerant of commas, ``$``, units and trailing ``.0``."""
    if pred is None:
        return False
    a, b = normalize_number(pred), normalize_number(gold)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


def label_pattern(labels: list[str]) -> re.Pattern:
    """A standalone choice label: ``B``, ``(B)``, ``B.``, ``B)`` — not the ``A`` of ``Answer``."""
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])")


SENTENCE_END = re.compile(r"(?:^|[.!?])\s*$")
NEXT_WORD = re.compile(r"(\s+)([A-Za-z]*)")
# words that follow a label, never the article: "A is not a correct option", "A and C"
LABEL_VERBS = {"is", "was", "are", "were", "would", "will", "can", "could", "should", "seems", "might", "must", "has",
               "does", "and", "or"}


def _label_matches(text: str, labels: list[str], final: bool) -> Iterator[tuple[re.Match, bool | None]]:
    """Each standalone label in the text with its verdict: True (a label), False (the article "A" opening a sentence,
    as in "A plant needs light"), or None (undecided: an "A" opening a sentence whose next word is not complete
    yet). With ``final`` the text has ended, so the last word is complete."""
    for m in label_pattern(labels).finditer(text):
        if m.group(1) != "A" or not SENTENCE_END.search(text[: m.start()]):
            yield m, True
            continue
        after = NEXT_WORD.match(text, m.end())
        if after is None:  # "A." "A)" or the end of the text
            yield m, True
        elif not after.group(2):  # only spaces so far
            yield m, True if final else None
        elif after.end() == len(text) and not final:  # the word may go on
            yield m, None
        else:
            word = after.group(2)
            yield m, not (word[0].islower() and word.lower() not in LABEL_VERBS)


def extract_label(text: str, labels: list[str]) -> str | None:
    """The first standalone choice label in the text; the article "A" opening a sentence is no label."""
    for m, is_label in _label_matches(text, labels, final=True):
        if is_label:
            return m.group(1)
    return None


def label_done(text: str, labels: list[str]) -> bool:
    """True once no continuation can change :func:`extract_label`: the first label is followed by a character, so
    it cannot become part of a word, and an "A" opening a sentence by a whole next word, so it cannot become an
    article (or stop being one)."""
    for m, is_label in _label_matches(text, labels, final=False):
        if is_label is None:
            return False
        if is_label:
            return m.end() < len(text)
    return False


def first_boxed(text: str) -> str | None:
    """Contents of the first complete ``\\boxed{...}`` (balanced braces), or None."""
    start = text.find("\\boxed{")
    if start == -1:
        return None
    depth = 0
    for j in range(start + len("\\boxed"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[start + len("\\boxed{") : j]
    return None


def extract_math(text: str) -> str | None:
    """The boxed answer; without a box, the first line with ``$`` signs stripped (a bare direct answer)."""
    boxed = first_boxed(text)
    if boxed is not None:
        return boxed.strip()
    line = text.strip().split("\n")[0].strip().strip("$").strip().rstrip(".")
    return line or None


def math_done(text: str) -> bool:
    return first_boxed(text) is not None


def math_equal(pred: str | None, gold: str) -> bool:
    """Mathematical equivalence through math-verify (sympy): fractions, ``\\frac`` vs ``/``, intervals, etc."""
    if pred is None:
        return False
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$")
    pred_parsed = parse(f"${pred}$")
    if not gold_parsed or not pred_parsed:
        return pred.strip() == gold.strip()
    return bool(verify(gold_parsed, pred_parsed))
