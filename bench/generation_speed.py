"""Generation tokens/s of the ``full`` chain through CoLa's executor against ``model.generate``, side by side.

    .venv/bin/python bench/generation_speed.py [--model smollm2-135m] [--new-tokens 64] [--reps 3]

Both run greedy decoding of the same chat prompts in one process, alternating, and must give the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cola import Chain, load_model
from cola.inference.generation import generate

PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short story about a robot who learns to paint.",
    "List some tips for staying focused while studying.",
    "Describe how a bicycle works.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cm = load_model(args.model)
    chain = Chain.full(cm.depth)
    print(f"model {args.model} on {cm.device} ({cm.dtype}), {torch.get_num_threads()} threads, "
          f"{args.new_tokens} new tokens, {args.reps} reps")
    for batch in (1, len(PROMPTS)):
        ids, mask = cm.encode(PROMPTS[:batch])
        rates = {"cola": [], "hf": []}
        for _ in range(args.reps):
            t0 = time.perf_counter()
            ours = generate(cm, chain, ids, mask, max_new_tokens=args.new_tokens)
            t1 = time.perf_counter()
            with torch.inference_mode():
                hf = cm.model.generate(ids, attention_mask=mask, max_new_tokens=args.new_tokens, do_sample=False)
            t2 = time.perf_counter()
            n_ours = sum(len(g.tokens) for g in ours)
            n_hf = sum(min(len(g.tokens), hf.shape[1] - ids.shape[1]) for g in ours)
            for b, g in enumerate(ours):
                assert g.tokens == hf[b, ids.shape[1] : ids.shape[1] + len(g.tokens)].tolist(), "outputs differ"
            rates["cola"].append(n_ours / (t1 - t0))
            rates["hf"].append(n_hf / (t2 - t1))
        cola, hf_rate = statistics.median(rates["cola"]), statistics.median(rates["hf"])
        print(f"batch {batch}: cola {cola:7.1f} tok/s   model.generate {hf_rate:7.1f} tok/s   ratio: {cola / hf_rate:.2f}")


if __name__ == "__main__":
    main()
