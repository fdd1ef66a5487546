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


# `python -c KILLED_AFTER N cola-args...`: run a `cola` command in a child that kills itself (SIGKILL) right after the
# Nth durable line (a journal's or a run's) is on disk
KILLED_AFTER = """
import os, signal, sys
import cola.store as store
append, written, limit = store.append_line, [0], int(sys.argv[1])
def append_then_die(path, line):
    append(path, line)
    written[0] += 1
    if written[0] == limit:
        os.kill(os.getpid(), signal.SIGKILL)
store.append_line = append_then_die
from cola.cli import main
sys.exit(main(sys.argv[2:]))
"""

WALL = ("wall_s", "wall_ratio", "routed_s", "wall_processes", "environment")


def without_wall(summary: dict) -> dict:
    """An evaluation's summary less what differs between two runs of it: its wall times and environment."""
    summary = {k: v for k, v in summary.items() if k not in WALL}
    summary["config"] = {k: v for k, v in summary["config"].items() if k not in WALL}
    if "baselines" in summary:
        summary["baselines"] = {name: {k: v for k, v in b.items() if k not in WALL}
                                for name, b in summary["baselines"].items()}
    return summary
