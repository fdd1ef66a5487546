"""Per-sample search over chains of layers."""

from .mcts import Evaluation, MCTSConfig, SearchResult, mcts, search_steps
from .space import ACTION_SETS, SearchSpace

__all__ = ["ACTION_SETS", "Evaluation", "MCTSConfig", "SearchResult", "SearchSpace", "mcts", "search_steps"]
