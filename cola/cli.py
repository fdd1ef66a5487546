"""The ``cola`` command line: ``generate``, ``layers`` (and the commands later modules add)."""

from __future__ import annotations

import argparse
import json
import sys

from .chain import ChainError, as_chain
from .models import DEFAULT_MODEL, ModelLoadError, load_model


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"alias, .gguf file, folder or hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--dtype", default=None, help="torch dtype, e.g. float32, bfloat16 (default: bf16 on cuda, fp32 on cpu)")


def cmd_generate(args: argparse.Namespace) -> int:
    from .generation import generate_text

    cm = load_model(args.model, device=args.device, dtype=args.dtype)
    chain = as_chain(args.chain, cm.depth)
    out = generate_text(cm, chain, [args.prompt], chat=args.chat, max_new_tokens=args.max_new_tokens)[0]
    if args.json:
        print(json.dumps({"chain": str(chain), "tokens": out.tokens, "text": out.text}))
    else:
        print(out.text)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    cm = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"model: {cm.name} ({cm.config.model_type}), depth: {cm.depth}")
    for i, layer_type in enumerate(cm.layer_types):
        print(f"{i:4d}  {layer_type}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cola", description="Chains of layers: skip, repeat and re-order the layers of a pretrained LLM per input.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="greedy generation through a chain of layers")
    _add_model_args(p)
    p.add_argument("--chain", default="full", help="chain notation, e.g. 0-13,13,14-29 (default: full)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object with chain, tokens and text")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("layers", help="print the model's depth and the attention type of each layer")
    _add_model_args(p)
    p.set_defaults(func=cmd_layers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cola`` console script."""
    args = build_parser().parse_args(argv)
    import transformers

    transformers.utils.logging.set_verbosity_error()  # weight-loading bars and notices drown the command's output
    transformers.utils.logging.disable_progress_bar()
    try:
        return args.func(args)
    except (ChainError, ModelLoadError, FileNotFoundError) as err:
        print(f"cola: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
