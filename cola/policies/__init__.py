"""Label-free depth policies: a single chain, a confidence cascade, a vote over chains, self-consistency and the
routers, each a registered kind (:mod:`.spec`) answering an input by asking chains without its gold, and all measured by
one harness at the cost they compute (:mod:`.sources`, :mod:`.signals`, :mod:`.harness`, :mod:`.calibrate`,
:mod:`.evaluation`). The names below are imported when first used, so that reading the kinds loads no torch
(calibration's entry point is ``cola.policies.calibrate.calibrate``: the module's name)."""

_LAZY = {"parse_objective": "calibrate", "sweep": "calibrate",
         "evaluate_policy": "evaluation", "ask_table": "harness", "replay": "harness", "run_policy": "harness",
         "confidence": "signals", "option_probabilities": "signals", "chains_from": "sources", "make_spec": "sources",
         "KINDS": "spec", "RULES": "spec", "Asked": "spec", "PolicySpec": "spec", "Request": "spec", "policy": "spec"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
