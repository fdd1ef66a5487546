"""The training settings of the routers learned from search labels, each a flag of its fit (no torch: the command
line reads its defaults here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Dr.LLM's training settings (each a flag of the fit)."""

    epochs: int = 25
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05  # share of the steps spent warming up
    gamma: float = 2.0  # focal loss
    beta: float = 0.999  # effective-number class weights
    batch: int = 32
    seed: int = 0
