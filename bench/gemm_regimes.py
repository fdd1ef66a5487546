"""Where does a row of a matrix product depend on how many rows are multiplied with it? The evidence behind
cola/core/invariant.py.

    .venv/bin/python bench/gemm_regimes.py [--threads 1,2] [--max-m 200] [--speed]

For the linear shapes of SmolLM2-135M and Gemma 3 270M, in float32 and bfloat16, multiplies the first M rows of a
fixed random input for M = 1 .. --max-m (and the same rows at an offset of 7 among others) and compares each result
row with the same row inside the product of all --max-m rows: it prints how many M differ and the largest. Then the
same with cola's InvariantLinear on one-token rows (tiles of 16) and on whole rows of M tokens: none may differ.
In bfloat16 on a CPU with native bf16 it also counts the M at which the product through the pre-packed weight
(cola.core.invariant.packed_weight) differs from plain F.linear: none may.

--speed instead times, single-threaded, each product at M = 1, 4, 16, 31 and 64 rows: float32 F.linear, bfloat16
F.linear and bfloat16 through the pre-packed weight, side by side (best of 9 runs of about 20 ms each).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cola.core.invariant import InvariantLinear, packed_rows, packed_weight

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576),  # SmolLM2: q/o, k/v, up/gate, down, head
          (1024, 640), (256, 640), (640, 1024), (2048, 640), (640, 2048)]  # Gemma 3 270M: q, k/v, o, up/gate, down


def best_time(call, repeats: int = 9, run_s: float = 0.02) -> float:
    """Seconds per call of ``call``: the best of ``repeats`` runs of about ``run_s`` seconds each (robust to a busy
    machine)."""
    start = time.perf_counter()
    call()
    calls = max(1, round(run_s / (time.perf_counter() - start)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


@torch.inference_mode()
def speed() -> None:
    """float32, bfloat16 and pre-packed bfloat16 products timed side by side, one thread."""
    torch.set_num_threads(1)
    print(f"{'product':>13s} {'rows':>4s} {'float32':>9s} {'bf16':>9s} {'bf16 packed':>11s}   f32/bf16 f32/packed "
          f"bf16/packed (microseconds per call)")
    for n, k in SHAPES:
        torch.manual_seed(0)
        layer = InvariantLinear(k, n, bias=False, dtype=torch.bfloat16)
        plain32 = layer.weight.float()
        if packed_weight(layer) is None:
            raise SystemExit("no pre-packed bf16 product on this CPU (no native bf16 in oneDNN)")
        for m in (1, 4, 16, 31, 64):
            x = torch.randn(m, k)
            xb = x.bfloat16()
            f32 = best_time(lambda: F.linear(x, plain32))
            bf16 = best_time(lambda: F.linear(xb, layer.weight))
            packed = best_time(lambda: layer.product(xb))
            print(f"{n:6d} x {k:4d} {m:4d} {1e6 * f32:9.1f} {1e6 * bf16:9.1f} {1e6 * packed:11.1f}   {f32 / bf16:8.2f} "
                  f"{f32 / packed:10.2f} {bf16 / packed:11.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--max-m", type=int, default=200)
    parser.add_argument("--speed", action="store_true", help="time the products instead (module doc)")
    args = parser.parse_args()
    if args.speed:
        return speed()
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
                    prepacked = "" if packed_weight(layer) is None else (
                        f"; pre-packed against plain: "
                        f"{sum(not torch.equal(layer.product(x[:m]), F.linear(x[:m], w)) for m in range(1, top + 1))}"
                        f" differ")
                print(f"{threads} thread(s) {str(dtype).removeprefix('torch.'):8s} {n:5d} x {k:4d}: a row differs at "
                      f"{len(set(bad)):3d} of {top - 1} row counts (largest {max(bad) if bad else '-'}); with "
                      f"InvariantLinear: {fixed} differ{prepacked}")


if __name__ == "__main__":
    main()
