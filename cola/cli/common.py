"""What the commands share: argument types and groups, the model, samples and evaluator a command names, progress bars
per stage."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..core.aliases import DEFAULT_MODEL

DTYPES = ("auto", "float32", "bfloat16", "float16")

def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def number_list(kind: type) -> Callable[[str], list]:
    """An argparse type: comma-separated numbers of ``kind`` (int or float), e.g. ``1,3,5``."""
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, e.g. "
                                             f"{'1,3,5' if kind is int else '0.5,0.7'}; not {text!r}") from None
    return parse


def add_model_args(parser: argparse.ArgumentParser, device: bool = True) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"alias, .gguf file, folder or hub id (default {DEFAULT_MODEL})")
    if device:
        parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="weights and activations (default: bfloat16 on cuda, float32 on cpu; auto: bfloat16 also on "
                             "a cpu with native bf16, AVX512-BF16 or AMX)")
    parser.add_argument("--allow-untested", action="store_true",
                        help="load a model family CoLa is not tested on (refused otherwise); it must still pass the "
                             "exactness check against the model's own forward")


def check_chain(args: argparse.Namespace) -> None:
    """``--chain`` checked against the model's depth from its config, before the weights load."""
    from ..core.chain import as_chain
    from ..core.loading import model_depth

    depth = model_depth(args.model)
    if depth is not None:
        as_chain(args.chain, depth)


def load(args: argparse.Namespace, device: str | None = None):
    """The model the command names (:func:`cola.core.loading.load_model`)."""
    from ..core.loading import load_model

    return load_model(args.model, device=device or getattr(args, "device", None), dtype=args.dtype,
                      allow_untested=args.allow_untested)


def add_task_args(parser: argparse.ArgumentParser) -> None:
    from ..evaluation.config import MODES, SCORE_STYLES

    parser.add_argument("--task", default=None, help="task name (see `cola tasks`); or --lm-eval-task")
    parser.add_argument("--lm-eval-task", default=None,
                        help="an lm-evaluation-harness task as the task (needs lm-eval; docs/lm-eval.md): its "
                             "documents, prompts and per-document acc (multiple choice) or exact_match (generation)")
    parser.add_argument("--lm-eval-include", default=None,
                        help="a folder of lm-eval YAML tasks to find --lm-eval-task in (local JSONL data: "
                             "dataset_path: json)")
    parser.add_argument("--data-dir", default=None, help="folder in the layout of shared/data (default: the HF hub)")
    parser.add_argument("--data-file", default=None, help="a JSONL file of the task's shape (mc_jsonl, qa_jsonl)")
    parser.add_argument("--split", default=None,
                        help="split of a benchmark task, one of its own (`cola tasks` lists them; default: test, "
                             "CSQA: dev): fit on train, select on dev, report on test")
    parser.add_argument("--n", type=int, default=None, help="seeded random subset size (default 500; 50 for synthetic; 0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    parser.add_argument("--level", type=int, default=None, choices=range(1, 6), help="MATH difficulty level")
    parser.add_argument("--mode", default=None, choices=MODES,
                        help="generate, or score (multiple choice) (default: generate; an lm-eval task's own)")
    parser.add_argument("--score-style", default="lmeval", choices=SCORE_STYLES, help="context format in score mode")
    parser.add_argument("--no-chat", dest="chat", action="store_false", help="do not use the chat template")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows (counted) instead of failing")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None, help="generation budget (default: the task's)")
    add_truncate(parser)


def add_truncate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--truncate", action="store_true",
                        help="an input longer than the model's context loses its first tokens, with a warning "
                             "(default: it is refused before any work)")


def resolve_mode(args: argparse.Namespace) -> None:
    """``--mode``'s default for an lm-eval task: its one mode (score for multiple choice, else generate)."""
    if args.mode is None:
        from ..tasks import get_task

        args.mode = get_task(args.task, args.lm_eval_include).modes[0]


def selection(args: argparse.Namespace):
    """The samples the command names (:class:`~cola.tasks.Selection`)."""
    from ..tasks import Selection

    return Selection(args.task, args.data_dir, args.data_file, args.split, args.n, args.seed, args.level,
                     args.skip_bad_rows, args.lm_eval_include)


def eval_config(args: argparse.Namespace):
    """How the command asks its task (:class:`~cola.evaluation.evaluator.EvalConfig`)."""
    from ..evaluation.evaluator import EvalConfig

    return EvalConfig(mode=args.mode, chat=args.chat, score_style=args.score_style,
                      max_new_tokens=args.max_new_tokens, truncate=args.truncate)


class Bars:
    """One tqdm bar per stage of an evaluation: ``progress(stage, done, total)`` (:data:`cola.policies.job.Progress`)."""

    def __init__(self, task: str) -> None:
        self.task, self.bars = task, {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage not in self.bars:
            self.bars[stage] = tqdm(total=total, desc=f"{self.task} [{stage}]", unit="sample")
        self.bars[stage].update(done)

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()
