"""Every GPU measurement of the study in one process, written to --out as result.json and result.txt.

    python bench/gpu_study.py --data-dir ../shared/data --out bench/results/gpu-h200       # on the GPU machine
    python bench/gpu_study.py --tiny --model TINY_MODEL_FOLDER --out /tmp/gpu-study        # a CPU smoke run

Sections (all by default, or pick with --sections):
  a  score mode: --n ARC-Challenge test samples x --sims simulations, all searched at once (--batch N), wall time
     and time per sample, in float32 and in bfloat16;
  b  the same in generate mode (bfloat16 on CUDA), stopped at --generate-cap-s: the rate and the time the whole
     run would take;
  c  candidates per second of CoLa's search path against the published method (transformers `generate` on the
     patched layer list, fresh prefill, 50 new tokens) on --compare-n samples, answers compared in float32
     (bench/search_speed.py's `compare`);
  d  answer agreement of --batch 64 with --batch 1 on --agree-n samples (--agree-sims simulations);
  e  one-call packed attention (cola.core.packing ``one_call``) against the per-row path: the score-mode search of
     section a on --attn-n samples, timed both ways, with its records compared, and the largest logit difference of
     one packed prefill;
  f  batch invariance in bfloat16 on this device: --agree-n samples x 3 chains, each alone against all together,
     with batch-invariant products (cola.core.invariant, off by default on CUDA) and without: numbers and verdicts that
     differ.
--tiny scales everything down (a few samples and simulations, the offline synthetic tasks) so that a test runs the
whole script on a CPU in seconds: a broken script is caught before a GPU is spent on it. The script installs
nothing; the device needs the repository's set-up (`bash dev/setup.sh`), which brings the embedded model.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benches of this folder

from batch_agreement import compare  # noqa: E402
from search_speed import section_compare  # noqa: E402

from cola import Chain, load_model  # noqa: E402
from cola.core.executor import advance, prompt_segment  # noqa: E402
from cola.core.invariant import make_batch_invariant  # noqa: E402
from cola.evaluation.evaluator import EvalConfig, Evaluator  # noqa: E402
from cola.search import MCTSConfig, SearchSpace  # noqa: E402
from cola.search.run import search_samples  # noqa: E402
from cola.tasks import get_task, load_samples  # noqa: E402

SECTIONS = ("a", "b", "c", "d", "e", "f")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def searched(evaluator: Evaluator, samples: list, sims: int, batch: int, cap_s: float | None = None) -> dict:
    """The samples searched ``batch`` at once: wall time, records, chains evaluated; stopped at ``cap_s``."""
    evaluated = [0]
    sync(evaluator.cm.device)
    start = time.perf_counter()
    records = []
    stream = search_samples(evaluator, samples, SearchSpace(evaluator.cm.depth), MCTSConfig(sims=sims), 0,
                            batch=batch, on_evaluation=lambda: evaluated.__setitem__(0, evaluated[0] + 1))
    for record in stream:
        records.append(record)
        if cap_s is not None and time.perf_counter() - start > cap_s:
            break
    sync(evaluator.cm.device)
    wall = time.perf_counter() - start
    stopped = len(records) < len(samples)
    if stopped:
        stream.close()
    rate = evaluated[0] / wall
    return {"samples": len(samples), "finished": len(records), "sims": sims, "batch": batch, "wall_s": round(wall, 2),
            "per_sample_s": round(wall / max(len(records), 1), 3), "chains_evaluated": evaluated[0],
            "chains_per_s": round(rate, 2), "stopped_at_cap": stopped,
            "estimated_total_s": round(len(samples) * (sims + 1) / rate, 1) if rate else None,
            "original": sum(r["full"]["correct"] for r in records), "oracle": sum(r["best"]["correct"] for r in records),
            "records": records}


def section_a(args, tasks) -> dict:
    out = {}
    for dtype in args.dtypes.split(","):
        cm = load_model(args.model, device=args.device, dtype=dtype)
        evaluator = Evaluator(cm, tasks["score"], config=EvalConfig(mode="score"))
        result = searched(evaluator, args.samples["score"], args.sims, len(args.samples["score"]))
        result.pop("records")
        out[dtype] = result
        log(f"a [{dtype}] {result['samples']} samples x {args.sims} sims at once: {result['wall_s']} s, "
            f"{result['per_sample_s']} s a sample, oracle {result['oracle']}/{result['finished']}")
    return out


def section_b(args, tasks) -> dict:
    cm = load_model(args.model, device=args.device)
    evaluator = Evaluator(cm, tasks["generate"], config=EvalConfig(mode="generate"))
    result = searched(evaluator, args.samples["generate"], args.sims, len(args.samples["generate"]), args.generate_cap_s)
    result.pop("records")
    result["dtype"] = str(cm.dtype).removeprefix("torch.")
    log(f"b [generate, {result['dtype']}] {result['finished']}/{result['samples']} finished in {result['wall_s']} s, "
        f"{result['chains_per_s']} chains/s, whole run ~{result['estimated_total_s']} s")
    return result


def section_c(args, tasks) -> dict:
    cm = load_model(args.model, device=args.device, dtype="float32")
    samples = args.samples["generate"][: args.compare_n]
    try:
        ratio, identical = section_compare(cm, tasks["generate"], samples, args.compare_sims, args.every,
                                           len(samples), 8.0), True
    except AssertionError as err:
        ratio, identical = None, False
        log(f"c: answers differ: {str(err)[:2000]}")
    log(f"c: CoLa / published candidates per second: {ratio}, identical answers: {identical}")
    return {"samples": len(samples), "sims": args.compare_sims, "every": args.every, "ratio": ratio,
            "identical_answers": identical, "dtype": "float32"}


def section_d(args, tasks) -> dict:
    cm = load_model(args.model, device=args.device)
    out = {}
    for mode in ("score", "generate"):
        evaluator = Evaluator(cm, tasks[mode], config=EvalConfig(mode=mode))
        samples = args.samples[mode][: args.agree_n]
        alone = {r["id"]: r for r in searched(evaluator, samples, args.agree_sims, 1)["records"]}
        together = {r["id"]: r for r in searched(evaluator, samples, args.agree_sims, min(64, len(samples)))["records"]}
        out[mode] = compare(alone, together)
        log(f"d [{mode}] batch {min(64, len(samples))} vs 1: {out[mode]}")
    return out


def section_e(args, tasks) -> dict:
    cm = load_model(args.model, device=args.device)
    evaluator = Evaluator(cm, tasks["score"], config=EvalConfig(mode="score"))
    samples = args.samples["score"][: args.attn_n]
    out, answers = {}, {}
    for mode in ("per_row", "one_call"):
        cm.packed_attention = mode
        result = searched(evaluator, samples, args.sims, len(samples))
        answers[mode] = {r["id"]: [(e["chain"], e["answer"]) for e in r["evaluations"]] for r in result["records"]}
        out[mode] = {"wall_s": result["wall_s"], "chains_per_s": result["chains_per_s"]}
    ids = [evaluator.prompt_ids(s) for s in samples]
    chain = Chain.full(cm.depth)
    logits = {}
    for mode in ("per_row", "one_call"):
        cm.packed_attention = mode
        logits[mode] = advance(cm, [prompt_segment(cm, chain, x) for x in ids]).float()
    cm.packed_attention = "auto"
    out["speedup"] = round(out["per_row"]["wall_s"] / out["one_call"]["wall_s"], 3)
    out["same_chains_and_answers"] = answers["per_row"] == answers["one_call"]
    out["max_logit_diff"] = float((logits["per_row"] - logits["one_call"]).abs().max())
    out["dtype"] = str(cm.dtype).removeprefix("torch.")
    log(f"e: one call {out['speedup']}x the per-row path, same chains and answers: {out['same_chains_and_answers']}, "
        f"max logit diff {out['max_logit_diff']:.3g}")
    return out


def section_f(args, tasks) -> dict:
    """Batch invariance in bf16 on this device: each (chain, sample) alone against all of them run together, with the
    rows' products kept apart (cola.core.invariant) and without, per-row attention: how many differ in any number and
    how many in verdict."""
    cm = load_model(args.model, device=args.device, dtype="bfloat16")
    cm.packed_attention = "per_row"
    chains = [Chain.full(cm.depth), Chain.parse(f"0-{cm.depth // 2},{cm.depth // 2}-{cm.depth - 1}"),
              Chain.parse(f"0-{cm.depth // 3},{cm.depth // 3 + 2}-{cm.depth - 1}")]
    out = {}
    for invariant in (True, False):
        make_batch_invariant(cm.model, invariant)
        for mode in ("score", "generate"):
            evaluator = Evaluator(cm, tasks[mode], config=EvalConfig(mode=mode))
            samples = args.samples[mode][: args.agree_n]
            pairs = [(c, s) for c in chains for s in samples]
            alone = {(str(c), s.id): evaluator.evaluate(c, [s])[0] for c, s in pairs}
            requests = evaluator.requests()
            for c, s in pairs:
                requests.submit((str(c), s.id), c, s)
            together = requests.drain()
            numbers = sum((a.output, a.mean_logprob) != (together[k].output, together[k].mean_logprob)
                          for k, a in alone.items())
            flips = sum(a.correct != together[k].correct for k, a in alone.items())
            key = f"{'invariant' if invariant else 'plain'}-{mode}"
            out[key] = {"evaluations": len(pairs), "numbers_differ": numbers, "verdicts_differ": flips}
            log(f"f [{key}] bf16, {len(pairs)} (chain, sample) pairs alone vs together: {numbers} differ in numbers, "
                f"{flips} in verdict")
    make_batch_invariant(cm.model, cm.batch_invariant)
    return out


LINES: list[str] = []


def log(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for result.json and result.txt")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--tiny", action="store_true", help="a few samples and simulations on the synthetic tasks")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--n", type=int, default=100, help="samples of sections a and b (default 100)")
    parser.add_argument("--sims", type=int, default=200, help="simulations per sample (default 200)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="dtypes of section a")
    parser.add_argument("--generate-cap-s", type=float, default=150.0, help="wall-time cap of section b")
    parser.add_argument("--compare-n", type=int, default=4, help="samples of section c (default 4)")
    parser.add_argument("--compare-sims", type=int, default=50, help="simulations per sample in section c")
    parser.add_argument("--every", type=int, default=4, help="section c re-runs every k-th candidate the published way")
    parser.add_argument("--agree-n", type=int, default=20, help="samples of section d (default 20)")
    parser.add_argument("--agree-sims", type=int, default=50, help="simulations per sample in section d (default 50)")
    parser.add_argument("--attn-n", type=int, default=50, help="samples of section e (default 50)")
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {','.join(SECTIONS)}")
    if args.tiny:
        args.n, args.sims, args.compare_n, args.compare_sims, args.agree_n, args.agree_sims, args.attn_n = \
            3, 6, 2, 4, 3, 4, 3
        args.every, args.generate_cap_s = 1, 60.0
        tasks = {"score": get_task("synthetic_mc"), "generate": get_task("synthetic")}
        args.samples = {m: load_samples(t, n=args.n, seed=0) for m, t in tasks.items()}
    else:
        if args.data_dir is None:
            parser.error("--data-dir is needed (the folder of shared/data), or --tiny")
        tasks = {"score": get_task("arc_challenge"), "generate": get_task("arc_challenge")}
        samples = load_samples(tasks["score"], args.data_dir, n=args.n, seed=0)
        args.samples = {"score": samples, "generate": samples}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = {"model": args.model, "tiny": args.tiny, "device": str(device), "torch": torch.__version__,
              "python": platform.python_version(), "n": args.n, "sims": args.sims, "sections": {}, "seconds": {}}
    if device.type == "cuda":
        result["device"] += f" ({torch.cuda.get_device_name(device)})"
    log(f"gpu_study: {args.model} on {result['device']}, torch {torch.__version__}, sections {','.join(sections)}")
    functions = {"a": section_a, "b": section_b, "c": section_c, "d": section_d, "e": section_e, "f": section_f}
    for name in sections:
        start = time.perf_counter()
        result["sections"][name] = functions[name](args, tasks)
        result["seconds"][name] = round(time.perf_counter() - start, 1)
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")  # kept if a later section is cut off
        log(f"section {name}: {result['seconds'][name]} s")
    (out / "result.txt").write_text("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
