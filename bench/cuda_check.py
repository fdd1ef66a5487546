"""CUDA checks and timings (run where a GPU is present; CI has none).

    python bench/cuda_check.py [--sections exactness,generation,prefix]

1. Exactness on CUDA: on a tiny random-weight model of every family, the full chain equals the model and random
   chains equal the physically rebuilt model (logits and greedy tokens), in float32 (TF32 off) and bfloat16.
2. Generation tokens/s of the full chain through CoLa's executor against model.generate, bf16, on random-weight
   models shaped like the embedded SmolLM2-135M and like a 1B Llama.
3. Prefill cost with and without the prefix cache over a search-like sequence of one-edit chains.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import (  # noqa: E402
    EOS,
    FAMILIES,
    PAD,
    random_chains,
    reference_model,
    tiny_model,
    tiny_tokenizer,
)

from cola import Chain, ColaModel  # noqa: E402
from cola.core.executor import forward, prefill  # noqa: E402
from cola.core.prefix_cache import PrefixCache  # noqa: E402
from cola.inference.generation import generate  # noqa: E402
from cola.search import SearchSpace  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def exactness() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print("== exactness on CUDA ==")
    for dtype in (torch.float32, torch.bfloat16):
        for family in sorted(FAMILIES):
            cm = tiny_model(family)
            cm.model.to(DEVICE, dtype)
            ids = torch.randint(3, 96, (2, 11), generator=torch.Generator().manual_seed(0)).to(DEVICE)
            with torch.inference_mode():
                full_diff = (forward(cm, Chain.full(cm.depth), ids) - cm.model(ids).logits).abs().max().item()
            worst, tokens_equal = full_diff, True
            for chain in [Chain.parse("0-2,2,2,3-5"), Chain.parse("5,4,3,2,1,0")] + random_chains(cm.depth, 3, seed=7):
                ref = reference_model(cm.model, chain)
                with torch.inference_mode():
                    worst = max(worst, (forward(cm, chain, ids) - ref(ids).logits).abs().max().item())
                expected = ref.generate(ids[:1], max_new_tokens=8, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
                tokens_equal &= generate(cm, chain, ids[:1], max_new_tokens=8)[0].tokens == expected[0, 11:].tolist()
            print(f"{str(dtype):15s} {family:8s} max |logit diff| {worst:.2e}  greedy tokens equal: {tokens_equal}")


def shaped_model(**shape) -> ColaModel:
    torch.manual_seed(0)
    config = LlamaConfig(**shape, eos_token_id=EOS, bos_token_id=1, pad_token_id=PAD, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).to(DEVICE, torch.bfloat16).eval()
    return ColaModel(model, tiny_tokenizer(), "random")


SHAPES = {
    "smollm2-135m shape": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                               num_key_value_heads=3, vocab_size=49152, head_dim=64),
    "llama-1b shape": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                           num_key_value_heads=8, vocab_size=128256, head_dim=64),
}


def generation_speed() -> None:
    print("\n== generation tokens/s, bf16, 64 new tokens, prompt 115 tokens, median of 3 ==")
    for name, shape in SHAPES.items():
        cm = shaped_model(**shape)
        chain = Chain.full(cm.depth)
        for batch in (1, 8):
            ids = torch.randint(3, 96, (batch, 115), generator=torch.Generator().manual_seed(1)).to(DEVICE)
            rates = {"cola": [], "hf": []}
            for _ in range(4):
                sync(); t0 = time.perf_counter()
                ours = generate(cm, chain, ids, max_new_tokens=64)
                sync(); t1 = time.perf_counter()
                with torch.inference_mode():
                    hf = cm.model.generate(ids, max_new_tokens=64, do_sample=False, min_new_tokens=64,
                                           eos_token_id=EOS, pad_token_id=PAD)
                sync(); t2 = time.perf_counter()
                n = sum(len(g.tokens) for g in ours)
                same = all(g.tokens == hf[b, 115 : 115 + len(g.tokens)].tolist() for b, g in enumerate(ours))
                rates["cola"].append(n / (t1 - t0)); rates["hf"].append(batch * (hf.shape[1] - 115) / (t2 - t1))
            c, h = statistics.median(rates["cola"][1:]), statistics.median(rates["hf"][1:])
            print(f"{name:20s} batch {batch}: cola {c:8.1f} tok/s  model.generate {h:8.1f} tok/s  "
                  f"ratio {c / h:.2f}  same tokens: {same}")


def prefix_reuse_speed(n_chains: int = 200) -> None:
    print(f"\n== prefill of {n_chains} search-like one-edit chains, 115-token prompt, bf16 ==")
    for name, shape in SHAPES.items():
        cm = shaped_model(**shape)
        ids = torch.randint(3, 96, (1, 115), generator=torch.Generator().manual_seed(2)).to(DEVICE)
        space, rng = SearchSpace(cm.depth), random.Random(0)
        chains, pool = [Chain.full(cm.depth)], [Chain.full(cm.depth)]
        while len(chains) < n_chains:  # each new chain is one edit away from a chain already run
            child = rng.choice(space.children(rng.choice(pool)))[1]
            chains.append(child); pool.append(child)
        for c in chains[:5]:
            forward(cm, c, ids, logits_to_keep=1)  # warm-up
        sync(); t0 = time.perf_counter()
        for c in chains:
            forward(cm, c, ids, logits_to_keep=1)
        sync(); t1 = time.perf_counter()
        cache = PrefixCache()
        for c in chains:
            prefill(cm, c, ids, prefix=cache)
        sync(); t2 = time.perf_counter()
        print(f"{name:20s} plain {1000 * (t1 - t0) / n_chains:7.2f} ms/chain  prefix cache "
              f"{1000 * (t2 - t1) / n_chains:7.2f} ms/chain  speed-up {(t1 - t0) / (t2 - t1):.2f}x  "
              f"layers computed {cache.computed_fraction:.2f}")


SECTIONS = {"exactness": exactness, "generation": generation_speed, "prefix": prefix_reuse_speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, in this order (default: all): {', '.join(SECTIONS)}")
    sections = parser.parse_args().sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    print(torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", "torch", torch.__version__)
    for name in sections:
        SECTIONS[name]()


if __name__ == "__main__":
    main()
