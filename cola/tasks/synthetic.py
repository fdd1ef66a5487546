"""Items the package makes itself from a seed, so that everything runs on an offline machine with no data files:
small arithmetic with a numeric answer (``synthetic``) and its four-option multiple-choice variant
(``synthetic_mc``)."""

from __future__ import annotations

import random
from dataclasses import replace

from . import gsm8k, multiple_choice
from .base import Task


def arithmetic_rows(n: int, seed: int) -> list[dict]:
    """``n`` questions ``What is a op b?`` with op in +, -, x, drawn with ``seed``; each with 4 labelled options."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        op = rng.choice("+-*")
        a, b = (rng.randint(2, 12), rng.randint(2, 12)) if op == "*" else (rng.randint(1, 60), rng.randint(1, 40))
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        wrong: set[int] = set()
        while len(wrong) < 3:
            candidate = answer + rng.choice([-10, -2, -1, 1, 2, 10, 3, -3])
            if candidate != answer:
                wrong.add(candidate)
        options = [answer, *sorted(wrong)]
        rng.shuffle(options)
        labels = "ABCD"
        rows.append({
            "id": f"synthetic-{seed}-{i}",
            "question": f"What is {a} {'x' if op == '*' else op} {b}?",
            "answer": str(answer),
            "choices": [{"label": lab, "text": str(v)} for lab, v in zip(labels, options)],
            "answerKey": labels[options.index(answer)],
        })
    return rows


SYNTHETIC = Task(
    name="synthetic",
    kind="qa",
    description="seeded small arithmetic, numeric answer (no data files needed)",
    parse_row=gsm8k.parse_row,
    prompt=gsm8k.prompt,
    extract=gsm8k.TASK.extract,
    is_done=gsm8k.TASK.is_done,
    grade=gsm8k.TASK.grade,
    max_new_tokens=8,
    generator=arithmetic_rows,
    default_n=50,
)

SYNTHETIC_MC = replace(
    multiple_choice.mc_task("synthetic_mc", "seeded small arithmetic, four options (no data files needed)"),
    generator=arithmetic_rows,
    default_n=50,
)

REGISTERED = (SYNTHETIC, SYNTHETIC_MC)
