"""The ``cola`` command line: one module per command group (``model``: generate, layers, export; ``evaluate``: eval;
``search``: search, prune; ``router``; ``report``: report, tasks; ``lmeval``), sharing ``common``.

Each command parses its arguments, calls the library and prints: what a command does, a Python caller can do with the
same calls. Each imports what it needs when it runs, so ``cola --help`` stays fast. Errors CoLa raises on purpose
(:mod:`cola.errors`) print as one line; anything else is a bug and shows its traceback."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..errors import ColaError, DiskFullError
from ..storage import STOPS
from . import bench, evaluate, lmeval, model, report, router, search


def build_parser() -> argparse.ArgumentParser:
    """The ``cola`` parser: each command group adds its commands."""
    parser = argparse.ArgumentParser(prog="cola", description="Chains of layers: skip, repeat and re-order the layers of a pretrained LLM per input.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (model, evaluate, search, router, report, bench, lmeval):
        group.add_parsers(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a namespace: ``cola lm-eval``'s arguments all go to lm-eval, options and --help included;
    a command that takes a task gets ``--task`` or ``--lm-eval-task`` (as the task ``lm-eval:NAME``) and its mode
    (default generate; an lm-eval task's own, set when the task loads)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:
        return argparse.Namespace(func=lmeval.cmd_lm_eval, lm_eval_args=argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "lm_eval_task"):
        from ..tasks.lmeval import PREFIX

        if (args.task is None) == (args.lm_eval_task is None):
            parser.error("give --task NAME or --lm-eval-task NAME (one of them)")
        if args.lm_eval_task is not None:
            args.task = PREFIX + args.lm_eval_task
        if args.mode is None and not args.task.startswith(PREFIX):  # an lm-eval task's own: once it loads (resolve_mode)
            args.mode = "generate"
    return args


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, ``timeout``, ``docker stop``): the command stops as Ctrl-C stops it."""


def _stop(signum, frame) -> None:
    """Ctrl-C or SIGTERM: stop once. A second signal while the command winds down (Ctrl-C pressed twice, ``timeout``
    passing its SIGTERM on to a process that got one already) is ignored, so that the stop stays one line and never a
    traceback from a cleanup it interrupted."""
    for number in STOPS:
        signal.signal(number, signal.SIG_IGN)
    _stopped_by[:] = [signum]
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


_stopped_by: list[int] = []  # the signal that stopped the command: Ray's waits turn any exception a handler raises
# into a plain KeyboardInterrupt, so what arrives is not always a Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cola`` console script."""
    args = parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()  # where a signal handler may be set
    # the handlers set before (None: set in C, left as they are); SIGINT only where it is not ignored (a background job)
    previous = {n: h for n in STOPS if on_main_thread and (h := signal.getsignal(n)) not in (None, signal.SIG_IGN)}
    for number in previous:
        signal.signal(number, _stop)
    _stopped_by.clear()
    import warnings

    import transformers

    shown = warnings.showwarning  # for this command only: main() may be called from a Python program or a test
    warnings.showwarning = lambda message, *_, **__: print(f"cola: warning: {message}", file=sys.stderr)
    transformers.utils.logging.set_verbosity_error()  # weight-loading bars and notices drown the command's output
    transformers.utils.logging.disable_progress_bar()
    try:
        if getattr(args, "device", None) is not None:  # a device this machine lacks fails before any work
            from ..core.loading import parse_device

            parse_device(args.device)
        return args.func(args)
    except DiskFullError as err:  # nothing torn is left (cola.storage): say what is kept and how to go on
        kept = getattr(args, "kept", None)
        then = f"{kept()}" if kept else "nothing partial was left; run the same command again"
        print(f"cola: error: {err}; {then} once space is freed", file=sys.stderr)
        return 2
    except ColaError as err:  # a bad input or a state the user can fix; anything else is a bug: its traceback shows
        print(f"cola: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every write is whole (cola.storage): say what is kept
        kept = getattr(args, "kept", None)
        terminated = _stopped_by == [signal.SIGTERM]  # a Terminated may reach here as a plain KeyboardInterrupt
        how = "terminated" if terminated else "interrupted"
        print(f"\n{how}: {kept() if kept else 'nothing was written'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        warnings.showwarning = shown
        for number, handler in previous.items():
            signal.signal(number, handler)
