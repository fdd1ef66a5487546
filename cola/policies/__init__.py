"""Label-free depth policies: a single chain, a confidence cascade, a vote over chains, self-consistency and the
routers, each a registered kind (:mod:`.spec`) answering an input by asking chains without its gold, and all measured by
one harness at the cost they compute (:mod:`.sources`, :mod:`.signals`, :mod:`.harness`, :mod:`.calibrate`,
:mod:`.evaluation`)."""

from .calibrate import calibrate, parse_objective, sweep
from .evaluation import evaluate_policy
from .harness import ask_table, replay, run_policy
from .signals import confidence, option_probabilities
from .sources import chains_from, make_spec
from .spec import KINDS, RULES, Asked, PolicySpec, Request, policy

__all__ = ["Asked", "KINDS", "PolicySpec", "RULES", "Request", "ask_table", "calibrate", "chains_from", "confidence",
           "evaluate_policy", "make_spec", "option_probabilities", "parse_objective", "policy", "replay", "run_policy",
           "sweep"]
