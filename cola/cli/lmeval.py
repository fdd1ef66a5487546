"""`cola lm-eval`: lm-evaluation-harness's command line with CoLa's backend registered."""

from __future__ import annotations

import argparse

from ..errors import UsageError


def cmd_lm_eval(args: argparse.Namespace) -> int:
    """``cola lm-eval``: lm-eval's own command line, with the ``cola`` backend registered (:mod:`cola.lmeval`)."""
    try:
        from ..lmeval import main as lm_eval_main
    except ImportError as err:
        raise UsageError(f"cola lm-eval needs lm-evaluation-harness ({err}): pip install lm-eval") from None
    return lm_eval_main(args.lm_eval_args)


def add_parsers(sub) -> None:
    """The parsers of this module's commands, on ``cola``'s subcommands ``sub``."""
    p = sub.add_parser("lm-eval", help="lm-evaluation-harness's command line with CoLa's `cola` model backend "
                       "(needs lm-eval): `cola lm-eval --model cola --model_args chain=0-13+13+14-29 --tasks arc_easy`",
                       add_help=False)
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="lm-eval's own arguments")
    p.set_defaults(func=cmd_lm_eval)
