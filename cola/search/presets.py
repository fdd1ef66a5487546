"""Named search protocols: the study's (the default) and Dr.LLM's, each a full set of search settings that any
explicit option overrides.

Dr.LLM (Heakl et al., 2025) labels its per-layer routers with an MCTS over paths that run the layers in order, each
0, 1 or 2 times: skip a block of at most 2 consecutive layers, repeat one layer once, length at most 2 x depth; UCB
constant 1.8, length penalty 3 x len/depth, a random child with probability 0.1, a 0/1 reward, 50 simulations (the
paper's; its code defaults to 200), and two early stops: at the first right path of a sample the full model gets
wrong, and at the first right path at least 2 layers shorter than the model.

PoLar (Li, Li & Zhou, ICML 2026) supervises its program predictor with its own MCTS (:mod:`cola.search.polar`): drop
or double one position (at the root also blocks of 2-4), no layer more than twice, length bounds by depth, lambda 5,
UCB with ln(N + 1), a random child with probability 0.1, 100 simulations, no early stop, a 0/1 reward.
"""

from __future__ import annotations

import math

from .mcts import MCTSConfig
from .space import SearchSpace

# setting -> value; the keys are SearchSpace's (actions, max_k, max_r, min_len, max_len) and MCTSConfig's fields
PRESETS: dict[str, dict] = {
    "study": {"actions": "all", "max_k": 4, "max_r": 4, "min_len": None, "max_len": None, "sims": 200, "lam": 5.0,
              "c": math.sqrt(2), "epsilon": 0.1, "widening": 0.5, "stop_on_fix": False, "stop_shorter_by": 0},
    "drllm": {"actions": "drllm", "max_k": 2, "max_r": 1, "min_len": 1, "max_len": None, "sims": 50, "lam": 3.0,
              "c": 1.8, "epsilon": 0.1, "widening": 0.5, "stop_on_fix": True, "stop_shorter_by": 2},
    "polar": {"actions": "polar", "max_k": 4, "max_r": 1, "min_len": None, "max_len": None, "sims": 100, "lam": 5.0,
              "c": math.sqrt(2), "epsilon": 0.1, "widening": 0.5, "stop_on_fix": False, "stop_shorter_by": 0},
}
SPACE_KEYS = ("actions", "max_k", "max_r", "min_len", "max_len")
REWARDS = ("correct", "margin")  # a chain's reward: its 0/1 verdict, or (score mode) the gold option's margin
CONTROLS = ("none", "decoy", "sample", "menu")  # what a run is: a search, or one of its chance controls


def search_settings(preset: str = "study", **overrides) -> tuple[dict, MCTSConfig]:
    """The search space's settings (without the depth) and the MCTS config of ``preset``, with every override that
    is not None applied."""
    settings = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(settings) - set(PRESETS["study"]))
    if unknown:
        raise TypeError(f"unknown search settings: {', '.join(unknown)}")
    space = {k: settings[k] for k in SPACE_KEYS}
    SearchSpace(1, space["actions"])  # an unknown action set is one clear error
    return space, MCTSConfig(**{k: v for k, v in settings.items() if k not in SPACE_KEYS})
