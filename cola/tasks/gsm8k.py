"""GSM8K: grade-school maths word problems with a numeric answer."""

from .base import Sample, Task, require
from .grading import extract_number, number_done, numbers_equal

INSTRUCTION = "Give only the final answer as a number, with no explanation."


def parse_row(row: dict, sample_id: str) -> Sample:
    """A free-answer row: ``question`` and ``answer`` (as a string); also the row of :mod:`cola.tasks.qa_jsonl`."""
    question, answer = require(row, "question", "answer")
    return Sample(id=sample_id, question=question, gold=str(answer))


def from_hub(row: dict) -> dict:
    """openai/gsm8k rows carry the worked solution; the answer is the number after ``####``."""
    return {"question": row["question"], "answer": row["answer"].split("####")[-1].strip().replace(",", "")}


def prompt(sample: Sample) -> str:
    return f"{sample.question}\n{INSTRUCTION}"


TASK = Task(
    name="gsm8k",
    kind="qa",
    description="GSM8K test, numeric answer (zero-shot, direct)",
    parse_row=parse_row,
    prompt=prompt,
    extract=lambda text, s: extract_number(text),
    is_done=lambda text, s: number_done(text),
    grade=lambda pred, s: numbers_equal(pred, s.gold),
    max_new_tokens=16,
    local_files={"test": "gsm8k/test.jsonl", "train": "gsm8k/train.jsonl"},
    hub=("openai/gsm8k", "main", {"test": "test", "train": "train"}),
    from_hub=from_hub,
)

REGISTERED = (TASK,)
