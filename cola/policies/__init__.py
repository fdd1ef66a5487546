"""Label-free depth policies: a single chain, a confidence cascade, a vote over chains, self-consistency and the
router, each answering an input by asking chains without its gold, and all measured by one harness at the cost they
compute (:mod:`.spec`, :mod:`.signals`, :mod:`.run`, :mod:`.calibrate`, :mod:`.evaluate`)."""

from .calibrate import calibrate, parse_objective, settings, sweep
from .evaluate import evaluate_policy
from .run import Asked, Request, ask_table, decide, next_request, replay, run_policy
from .signals import confidence, option_probabilities
from .spec import KINDS, RULES, PolicySpec, chains_from, make_spec

__all__ = ["Asked", "KINDS", "PolicySpec", "RULES", "Request", "ask_table", "calibrate", "chains_from", "confidence",
           "decide", "evaluate_policy", "make_spec", "next_request", "option_probabilities", "parse_objective", "replay",
           "run_policy", "settings", "sweep"]
