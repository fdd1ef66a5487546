"""MATH (Hendrycks et al.): competition problems with difficulty levels 1-5, answers in ``\\boxed{}``.

The study's DART-1..5 sets are MATH-style problems binned by the same difficulty; ``--level`` selects one.
"""

from .base import Sample, Task, require
from .grading import extract_math, first_boxed, math_done, math_equal

INSTRUCTION = "Give only the final answer in \\boxed{}, with no explanation."


def parse_row(row: dict, sample_id: str) -> Sample:
    problem, answer = require(row, "problem", "answer")
    level = row.get("level")
    if level is not None and int(level) not in range(1, 6):
        raise ValueError(f"level {level!r} is not 1-5")
    meta = {"level": int(level) if level is not None else None, "subject": row.get("subject")}
    return Sample(id=sample_id, question=problem, gold=str(answer), meta=meta)


def from_hub(row: dict) -> dict:
    """EleutherAI/hendrycks_math rows: ``level`` is ``'Level 3'`` and the answer is boxed in the solution."""
    level = str(row.get("level", "")).replace("Level", "").strip()
    return {
        "problem": row["problem"],
        "answer": row.get("answer") or first_boxed(row["solution"]),
        "level": int(level) if level.isdigit() else None,
        "subject": row.get("type") or row.get("subject"),
    }


TASK = Task(
    name="math",
    kind="qa",
    description="MATH test (5000 problems, levels 1-5), boxed answer graded by math-verify",
    parse_row=parse_row,
    prompt=lambda s: f"{s.question}\n{INSTRUCTION}",
    extract=lambda text, s: extract_math(text),
    is_done=lambda text, s: math_done(text),
    grade=lambda pred, s: math_equal(pred, s.gold),
    max_new_tokens=48,
    local_files={"test": "math/test_full.jsonl"},
    hub=("EleutherAI/hendrycks_math", "all", {"test": "test"}),
    from_hub=from_hub,
)

REGISTERED = (TASK,)
