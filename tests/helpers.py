"""Helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import random


def mc_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` seeded multiple-choice rows in the tiny tokenizer's words (``t10`` .. ``t89``), gold ``A``: the shape of
    the ``mc_jsonl`` task."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = " ".join(f"t{rng.randrange(10, 40)}" for _ in range(5))
        options = rng.sample(range(50, 90), 4)
        rows.append({"id": f"q{i}", "question": words, "answerKey": "A",
                     "choices": [{"label": label, "text": f"t{o}"} for label, o in zip("ABCD", options)]})
    return rows
