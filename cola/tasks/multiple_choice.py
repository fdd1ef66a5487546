"""Multiple-choice benchmarks: ARC-Easy, ARC-Challenge, CommonsenseQA, and any user file of the same shape.

Rows: ``question``, ``choices: [{label, text}]`` (3 to 5 of them; labels ``A``-``E`` or ``1``-``4``), ``answerKey``.
"""

from __future__ import annotations

from .base import Sample, Task, require
from .grading import extract_label, label_done


def parse_row(row: dict, sample_id: str) -> Sample:
    question, choices, answer = require(row, "question", "choices", "answerKey")
    if isinstance(question, dict):  # CommonsenseQA's original nesting
        question = question.get("stem", "")
    if isinstance(choices, dict):  # HF datasets layout: {label: [...], text: [...]}
        choices = [{"label": lab, "text": txt} for lab, txt in zip(choices["label"], choices["text"])]
    pairs = tuple((str(c["label"]).strip(), str(c["text"]).strip()) for c in choices)
    if len(pairs) < 2:
        raise ValueError(f"only {len(pairs)} choice(s); a multiple-choice row needs at least 2")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels) or not all(labels):
        raise ValueError(f"choice labels {labels} are empty or repeated")
    gold = str(answer).strip()
    if gold not in labels:
        raise ValueError(f"answerKey {gold!r} is not one of the choice labels {labels}")
    return Sample(id=sample_id, question=question, gold=gold, choices=pairs)


def prompt(sample: Sample) -> str:
    options = "\n".join(f"{label}. {text}" for label, text in sample.choices)
    what = "number" if sample.labels[0].isdigit() else "letter"
    return f"{sample.question}\n\n{options}\n\nAnswer with the {what} of the correct option only."


def mc_task(name: str, description: str, local_file: str | None, hub: tuple | None) -> Task:
    """A multiple-choice task over rows of the shape above."""
    return Task(
        name=name,
        kind="mc",
        description=description,
        parse_row=parse_row,
        prompt=prompt,
        extract=lambda text, s: extract_label(text, s.labels),
        is_done=lambda text, s: label_done(text, s.labels),
        grade=lambda pred, s: pred == s.gold,
        max_new_tokens=8,
        local_file=local_file,
        hub=hub,
    )


ARC_EASY = mc_task("arc_easy", "ARC-Easy test", "arc/easy_test.jsonl", ("allenai/ai2_arc", "ARC-Easy", "test"))
ARC_CHALLENGE = mc_task(
    "arc_challenge", "ARC-Challenge test", "arc/challenge_test.jsonl", ("allenai/ai2_arc", "ARC-Challenge", "test")
)
CSQA = mc_task("csqa", "CommonsenseQA validation", "commonsense/csqa_dev.jsonl", ("tau/commonsense_qa", None, "validation"))
MC_JSONL = mc_task("mc_jsonl", "any multiple-choice JSONL file (--data-file)", None, None)
