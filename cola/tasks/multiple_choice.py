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


def listed_options(sample: Sample) -> tuple[str, list[str]]:
    """lm-eval's ``commonsense_qa`` format: the question with its options listed, the labels scored after it."""
    options = "".join(f"\n{label}. {text}" for label, text in sample.choices)
    return f"Question: {sample.question.strip()}{options}\nAnswer:", sample.labels


def mc_task(name: str, description: str, local_files: dict[str, str] | None = None, hub: tuple | None = None,
            default_split: str = "test", **fields) -> Task:
    """A multiple-choice task asked and graded as ARC is (the prompt, label extraction, exact-label grading);
    ``fields`` replaces any other :class:`Task` field: its ``parse_row`` for rows of another shape, its
    ``score_format``, ..."""
    return Task(**{
        "name": name, "kind": "mc", "description": description, "parse_row": parse_row, "prompt": prompt,
        "extract": lambda text, s: extract_label(text, s.labels), "is_done": lambda text, s: label_done(text, s.labels),
        "grade": lambda pred, s: pred == s.gold, "max_new_tokens": 8, "local_files": local_files or {}, "hub": hub,
        "default_split": default_split, **fields})


def arc(level: str) -> Task:
    """ARC-Easy or ARC-Challenge: test, dev and train splits."""
    files = {split: f"arc/{level.lower()}_{split}.jsonl" for split in ("test", "dev", "train")}
    hub = ("allenai/ai2_arc", f"ARC-{level}", {"test": "test", "dev": "validation", "train": "train"})
    return mc_task(f"arc_{level.lower()}", f"ARC-{level} (test; --split dev, train)", files, hub)


ARC_EASY = arc("Easy")
ARC_CHALLENGE = arc("Challenge")
CSQA = mc_task("csqa", "CommonsenseQA (its dev set; --split train; the test set has no labels)",
               {"dev": "commonsense/csqa_dev.jsonl", "train": "commonsense/csqa_train.jsonl"},
               ("tau/commonsense_qa", None, {"dev": "validation", "train": "train"}), default_split="dev",
               score_format=listed_options)
MC_JSONL = mc_task("mc_jsonl", "any multiple-choice JSONL file (--data-file)")

REGISTERED = (ARC_EASY, ARC_CHALLENGE, CSQA, MC_JSONL)
