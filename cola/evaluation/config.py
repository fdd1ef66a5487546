"""How a task's samples are asked: the mode, the chat setting, the score style, the generation budget and truncation
(no torch: the command line reads its choices here)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

MODES = ("generate", "score")
SCORE_STYLES = ("lmeval", "chat")


@dataclass(frozen=True)
class EvalConfig:
    """How a task's samples are asked (one object, as nanoGPT's ``GPTConfig``): ``mode`` ``generate`` (the model writes
    its answer, graded by extraction) or ``score`` (options ranked by log-likelihood); ``chat`` (a chat model reads the
    prompt as a user turn); ``score_style`` (``lmeval`` or ``chat``, :class:`Evaluator`); ``max_new_tokens`` (None: the
    task's own); ``truncate`` (an input past the model's positions loses its first tokens, else it is refused)."""

    mode: str = "generate"
    chat: bool = True
    score_style: str = "lmeval"
    max_new_tokens: int | None = None
    truncate: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.score_style not in SCORE_STYLES:
            raise UsageError(f"score style must be one of {SCORE_STYLES}, not {self.score_style!r}")
