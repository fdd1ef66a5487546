"""`cola generate`, `cola layers`, `cola export`: a chain of the model, run or written."""

from __future__ import annotations

import argparse
import json

from ..core.chain import as_chain
from .common import add_model_args, add_truncate, check_chain, load, positive_int


def cmd_generate(args: argparse.Namespace) -> int:
    from ..inference.generation import generate_text

    check_chain(args)
    cm = load(args)
    chain = as_chain(args.chain, cm.depth)
    out = generate_text(cm, chain, [args.prompt], chat=args.chat, max_new_tokens=args.max_new_tokens,
                        truncate=args.truncate)[0]
    if args.json:
        print(json.dumps({"chain": str(chain), "tokens": out.tokens, "text": out.text}))
    else:
        print(out.text)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    cm = load(args)
    print(f"model: {cm.name} ({cm.config.model_type}), depth: {cm.depth}")
    for i, layer_type in enumerate(cm.layer_types):
        experts = cm.experts(i)
        print(f"{i:4d}  {layer_type:18s} {f'mixture of {experts} experts' if experts else 'dense'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..core.export import check_export_folder, export_chain

    check_export_folder(args.out)  # before the model loads
    check_chain(args)
    cm = load(args, device="cpu")
    chain = as_chain(args.chain, cm.depth)
    out = export_chain(cm, chain, args.out)
    print(f"exported {cm.name} chain {chain} ({len(chain)} layers) to {out}")
    return 0


def add_parsers(sub) -> None:
    """The parsers of this module's commands, on ``cola``'s subcommands ``sub``."""
    p = sub.add_parser("generate", help="greedy generation through a chain of layers")
    add_model_args(p)
    p.add_argument("--chain", default="full", help="chain notation, e.g. 0-13,13,14-29 (default: full)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object with chain, tokens and text")
    add_truncate(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("layers", help="print the model's depth, each layer's attention type and its experts")
    add_model_args(p)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("export", help="write a chain as a standard Hugging Face model folder (transformers loads it)")
    add_model_args(p, device=False)
    p.add_argument("--chain", required=True, help="chain notation, e.g. 0-9,12-29")
    p.add_argument("--out", required=True, help="a new folder")
    p.set_defaults(func=cmd_export)
