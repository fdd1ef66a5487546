"""Any free-answer JSONL file: ``question`` and ``answer`` (graded as a number when both parse as numbers, else as
a string that the first line of the answer must contain as a whole phrase, case-insensitively)."""

import re

from .base import Sample, Task
from .grading import extract_number, number_done, numbers_equal
from .gsm8k import parse_row


def _numeric(sample: Sample) -> bool:
    return re.fullmatch(r"-?\$?[\d,]*\.?\d+", sample.gold.strip()) is not None


def extract(text: str, sample: Sample) -> str | None:
    if _numeric(sample):
        return extract_number(text)
    line = text.strip().split("\n")[0].strip().rstrip(".")
    return line or None


def grade(pred: str | None, sample: Sample) -> bool:
    if _numeric(sample):
        return numbers_equal(pred, sample.gold)
    gold = re.escape(sample.gold.strip().lower())
    return pred is not None and re.search(rf"(?<!\w){gold}(?!\w)", pred.lower()) is not None


TASK = Task(
    name="qa_jsonl",
    kind="qa",
    description="any question/answer JSONL file (--data-file)",
    parse_row=parse_row,
    prompt=lambda s: f"{s.question}\nGive only the final answer, with no explanation.",
    extract=extract,
    is_done=lambda text, s: number_done(text) if _numeric(s) else "\n" in text.strip(),
    grade=grade,
    max_new_tokens=24,
)

REGISTERED = (TASK,)
