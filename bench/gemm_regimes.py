"""Where does a row of a matrix product depend on how many rows are multiplied with it? The evidence behind
cola/core/invariant.py.

    .venv/bin/python bench/gemm_regimes.py [--threads 1,2] [--max-m 200]

For the linear shapes of SmolLM2-135M and Gemma 3 270M, in float32 and bfloat16, multiplies the first M rows of a
fixed random input for M = 1 .. --max-m (and the same rows at an offset of 7 among others) and compares each result
row with the same row inside the product of all --max-m rows: it prints how many M differ and the largest. Then the
same with cola's InvariantLinear on one-token rows (tiles of 16) and on whole rows of M tokens: none may differ.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from cola.core.invariant import InvariantLinear, packed_rows

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576),  # SmolLM2: q/o, k/v, up/gate, down, head
          (1024, 640), (256, 640), (640, 1024), (2048, 640), (640, 2048)]  # Gemma 3 270M: q, k/v, o, up/gate, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--max-m", type=int, default=200)
    args = parser.parse_args()
    top = args.max_m
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.bfloat16):
            for n, k in SHAPES:
                torch.manual_seed(0)
                w, x = torch.randn(n, k).to(dtype), torch.randn(top, k).to(dtype)
                whole = F.linear(x, w)
                bad = [m for m in range(1, top) if not torch.equal(F.linear(x[:m], w), whole[:m])]
                bad += [m for m in range(1, top - 7) if not torch.equal(F.linear(x[7 : 7 + m], w), whole[7 : 7 + m])]
                layer = InvariantLinear(k, n, bias=False, dtype=dtype)
                layer.weight.data.copy_(w)
                with torch.inference_mode():
                    tokens = layer(x[:, None])  # one token per row: tiles of 16
                    fixed = sum(not torch.equal(layer(x[3 : 3 + m, None]), tokens[3 : 3 + m]) for m in range(1, 40))
                    with packed_rows([(0, 1), (1, 37), (37, 38), (38, 120)]):  # rows of 1, 36, 1 and 82 tokens
                        packed = layer(x[None, :120])[0]
                    alone = torch.cat([layer(x[None, a:b])[0] for a, b in [(0, 1), (1, 37), (37, 38), (38, 120)]])
                fixed += not torch.equal(packed, alone)
                print(f"{threads} thread(s) {str(dtype).removeprefix('torch.'):8s} {n:5d} x {k:4d}: a row differs at "
                      f"{len(set(bad)):3d} of {top - 1} row counts (largest {max(bad) if bad else '-'}); with "
                      f"InvariantLinear: {fixed} differ")


if __name__ == "__main__":
    main()
