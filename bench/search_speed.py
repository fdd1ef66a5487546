"""How fast CoLa's search path is, against a re-implementation of the published method's cost, side by side.

    .venv/bin/python bench/search_speed.py --task arc_challenge --data-dir ../shared/data --n 20
    .venv/bin/python bench/search_speed.py --task gsm8k --data-dir ../shared/data --n 20

Sections (all by default, or pick with --sections):
  compare  On the same samples and the same candidate chains (those a real MCTS run of CoLa visits), runs
           (a) the published method: per candidate the model's layer list patched to the chain and transformers'
               own greedy `generate` (a full prefill, 50 new tokens, EOS ends it), no sharing, with one fix only:
               each chain position is its own module copy (shared weights) with its own `layer_idx`, so it owns
               its cache slot;
           (b) CoLa's search path: prefix reuse across candidates, early stop once the answer is complete, and
               --batch samples searched at once (default: all), their chains run in shared, packed layer calls;
           asserts that every candidate gets the same answer from both, prints candidates/s and `ratio: X`.
  mcts     Median wall time of one MCTS per sample (score and generate mode) next to the time of as many
           independent full forwards of the same prompt; then the samples searched at once, per sample, next to
           the forwards of all their prompts packed together.
  growth   Search time per sample and per simulation for 50/100/200/400 simulations, and the mean number of
           layers computed per candidate against the mean chain length.
  dtype    bfloat16 against float32 on the same samples, side by side: a 200-simulation search per sample in
           score and generate mode (alone, and all samples at once), candidates/s, and the share of each dtype's
           measured matmul peak that a packed full forward of the prompts achieves in the layers' products.
The `compare` section prints its ratio last, so the script's last line is `ratio: X`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cola import Chain, load_model
from cola.core.executor import advance, forward, prompt_segment
from cola.core.export import as_hf
from cola.core.invariant import InvariantLinear
from cola.core.prefix_cache import PrefixCache
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.search import Evaluation, MCTSConfig, SearchSpace, mcts
from cola.search.records import make_record
from cola.search.run import sample_rng, search_samples
from cola.tasks import get_task, load_samples

PUBLISHED_NEW_TOKENS = 50


@torch.inference_mode()
def published_answer(evaluator: Evaluator, chain: Chain, sample) -> str | None:
    """The published way: patch the layer list (with the one fix, each position its own cache slot: `as_hf`,
    weights shared), prefill from scratch and greedily `generate` 50 new tokens (EOS still ends it) with
    transformers, then extract the answer."""
    cm = evaluator.cm
    ids, mask = cm.tokenize([evaluator.prompt(sample)], evaluator.config.chat)  # the prompt CoLa asks
    out = as_hf(cm, chain).generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=PUBLISHED_NEW_TOKENS, do_sample=False,
        pad_token_id=cm.tokenizer.pad_token_id)
    text = cm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return evaluator.task.extract(text, sample)


def run_mcts(evaluator, sample, sims, seed=0):
    """One sample's search, as `cola search --batch 1` runs it, keeping its prefix cache to read its statistics."""
    prefix = PrefixCache()
    space = SearchSpace(evaluator.cm.depth)

    def evaluate(chain):
        outcome = evaluator.evaluate_one(chain, sample, prefix)
        return Evaluation(chain, outcome.answer, outcome.correct, float(outcome.correct))

    t0 = time.perf_counter()
    result = mcts(Chain.full(space.depth), evaluate, space, MCTSConfig(sims=sims), sample_rng(seed, sample.id))
    seconds = time.perf_counter() - t0
    return make_record(sample, result, seconds), seconds, prefix


def section_compare(cm, task, samples, sims, every, batch, prefix_gib):
    # the same budget as the published method, so that both must give the same answer; CoLa stops early instead
    evaluator = Evaluator(cm, task, config=EvalConfig(mode="generate", max_new_tokens=PUBLISHED_NEW_TOKENS))
    print(f"\n== compare: {task.name}, generate mode, {len(samples)} samples, {sims} simulations each, "
          f"CoLa searching {batch} sample(s) at once, {prefix_gib:g} GiB of prefix caches ==")
    t0 = time.perf_counter()
    records = list(search_samples(evaluator, samples, SearchSpace(cm.depth), MCTSConfig(sims=sims), 0, batch=batch,
                                  prefix_bytes=int(prefix_gib * (1 << 30))))
    cola_time = time.perf_counter() - t0
    cola_n = sum(len(r["evaluations"]) for r in records)
    by_id = {s.id: s for s in samples}
    base_time, base_n, differ = 0.0, 0, []
    for record in records:
        for e in record["evaluations"][::every]:
            t0 = time.perf_counter()
            answer = published_answer(evaluator, Chain.parse(e["chain"]), by_id[record["id"]])
            base_time += time.perf_counter() - t0
            base_n += 1
            if answer != e["answer"]:
                differ.append(f"{record['id']} {e['chain']}: published {answer!r} != cola {e['answer']!r}")
    cola_rate, base_rate = cola_n / cola_time, base_n / base_time
    print(f"candidates: {cola_n} searched by CoLa, {base_n} re-run the published way (every {every}), "
          f"{base_n - len(differ)} with the same answer")
    print(f"published method: {base_rate:8.3f} candidates/s ({base_time / base_n:.3f} s each)")
    print(f"CoLa search path: {cola_rate:8.3f} candidates/s ({cola_time / cola_n:.3f} s each, MCTS included)")
    assert not differ, "answers differ:\n" + "\n".join(differ)
    return cola_rate / base_rate


def section_mcts(cm, samples, sims):
    print(f"\n== mcts: one {sims}-simulation search per sample vs {sims} independent full forwards ==")
    print("(ARC-Challenge, chat-formatted prompt; score mode ranks the option labels as the reply)")
    for mode in ("score", "generate"):
        evaluator = Evaluator(cm, get_task("arc_challenge"), config=EvalConfig(mode=mode, score_style="chat"))
        searches, forwards, prompts = [], [], []
        for sample in samples:
            _, seconds, _ = run_mcts(evaluator, sample, sims)
            searches.append(seconds)
            ids = cm.tokenizer(evaluator.prompt(sample), return_tensors="pt", add_special_tokens=False).input_ids
            prompts.append(ids)
            t0 = time.perf_counter()
            for _ in range(sims):
                forward(cm, Chain.full(cm.depth), ids, logits_to_keep=1)
            forwards.append(time.perf_counter() - t0)
        s, f = statistics.median(searches), statistics.median(forwards)
        print(f"{mode:8s}: median search {s:7.2f} s, median {sims} full forwards of the {ids.shape[1]}-token "
              f"prompt {f:7.2f} s, forwards/search {f / s:.2f}x")
        if len(samples) > 1:  # the searches together, against the forwards of all prompts packed together
            t0 = time.perf_counter()
            list(search_samples(evaluator, samples, SearchSpace(cm.depth), MCTSConfig(sims=sims), 0,
                                batch=len(samples)))
            s = (time.perf_counter() - t0) / len(samples)
            t0 = time.perf_counter()
            for _ in range(sims):
                advance(cm, [prompt_segment(cm, Chain.full(cm.depth), ids, None) for ids in prompts])
            packed = (time.perf_counter() - t0) / len(samples)
            print(f"{mode:8s}: the {len(samples)} samples searched at once, {s:7.2f} s a sample; forwards/search "
                  f"{f / s:.2f}x, or {packed / s:.2f}x against the {len(samples)} prompts' forwards packed together "
                  f"({packed:.2f} s a prompt)")


def section_growth(cm, task, samples, budgets):
    print("\n== growth: cost against budget ==")
    mode = "score" if task.kind == "mc" else "generate"
    evaluator = Evaluator(cm, task, config=EvalConfig(mode=mode))
    print(f"{'sims':>5s} {'s/sample':>9s} {'ms/sim':>8s} {'layers computed':>16s} {'chain length':>13s} {'ratio':>6s}")
    for sims in budgets:
        times, computed, lengths = [], [], []
        for sample in samples:
            record, seconds, prefix = run_mcts(evaluator, sample, sims)
            times.append(seconds)
            n = len(record["evaluations"])
            computed.append(prefix.layers_computed / n)
            lengths.append(prefix.layers_requested / n)
        t, c, ln = statistics.mean(times), statistics.mean(computed), statistics.mean(lengths)
        print(f"{sims:5d} {t:9.2f} {1000 * t / sims:8.1f} {c:16.2f} {ln:13.2f} {c / ln:6.2f}")


def matmul_peak(dtype: torch.dtype, seconds: float = 1.0) -> float:
    """The machine's measured matrix-product rate in ``dtype`` (GFLOP/s): a 960 x 576 by 576 x 1536 product (a
    SmolLM2 MLP projection of 8 packed 120-token prompts) the way CoLa's layers multiply (bf16: pre-packed weight),
    repeated for ``seconds``."""
    x, layer = torch.randn(960, 576, dtype=dtype), InvariantLinear(576, 1536, bias=False, dtype=dtype)
    layer.requires_grad_(False)
    for _ in range(3):
        layer.product(x)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        layer.product(x)
        calls += 1
    return 2 * 960 * 576 * 1536 * calls / (time.perf_counter() - start) / 1e9


def section_dtype(model: str, samples, sims: int, modes: tuple[str, ...] = ("score", "generate")) -> None:
    """bf16 against float32 on the same samples and chains: one search per sample in each mode (alone, and all
    samples at once), candidates/s, and the share of each dtype's measured matmul peak a packed forward achieves."""
    print(f"\n== dtype: bfloat16 against float32, {len(samples)} ARC-Challenge samples, {sims} simulations ==")
    rows = {}
    for dtype in ("float32", "bfloat16"):
        cm = load_model(model, dtype=dtype)
        task = get_task("arc_challenge")
        for mode in modes:
            evaluator = Evaluator(cm, task, config=EvalConfig(mode=mode))
            times, candidates = [], 0
            for sample in samples:
                record, seconds, _ = run_mcts(evaluator, sample, sims)
                times.append(seconds)
                candidates += len(record["evaluations"])
            start = time.perf_counter()
            list(search_samples(evaluator, samples, SearchSpace(cm.depth), MCTSConfig(sims=sims), 0,
                                batch=len(samples)))
            together = (time.perf_counter() - start) / len(samples)
            rows[(dtype, mode)] = (statistics.median(times), candidates / sum(times), together)
        prompts = [Evaluator(cm, task, config=EvalConfig(mode="score")).prompt_ids(s) for s in samples]
        linear = sum(m.weight.numel() for m in cm.layers.modules() if isinstance(m, torch.nn.Linear))
        tokens = sum(ids.shape[1] for ids in prompts)
        advance(cm, [prompt_segment(cm, Chain.full(cm.depth), ids, None) for ids in prompts])  # warm-up
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < 2.0:
            advance(cm, [prompt_segment(cm, Chain.full(cm.depth), ids, None) for ids in prompts])
            calls += 1
        achieved = 2 * linear * tokens * calls / (time.perf_counter() - start) / 1e9
        peak = matmul_peak(cm.dtype)
        rows[(dtype, "peak")] = (achieved, peak)
        print(f"{dtype:9s}: matmul peak {peak:7.1f} GFLOP/s; the {len(samples)} prompts' full forward packed "
              f"({tokens} tokens): {achieved:6.1f} GFLOP/s in the layers' products = {achieved / peak:.0%} of peak")
    for mode in modes:
        (f_one, f_rate, f_tog), (b_one, b_rate, b_tog) = rows[("float32", mode)], rows[("bfloat16", mode)]
        print(f"{mode:8s}: search per sample float32 {f_one:6.2f} s, bfloat16 {b_one:6.2f} s ({f_one / b_one:.2f}x); "
              f"candidates/s {f_rate:6.2f} vs {b_rate:6.2f} ({b_rate / f_rate:.2f}x); all {len(samples)} at once "
              f"{f_tog:6.2f} vs {b_tog:6.2f} s a sample ({f_tog / b_tog:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="arc_challenge", choices=["arc_challenge", "gsm8k", "arc_easy", "synthetic"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=20, help="samples (default 20)")
    parser.add_argument("--sims", type=int, default=200, help="simulations per sample in `compare` (default 200)")
    parser.add_argument("--every", type=int, default=1, help="re-run every k-th candidate the published way")
    parser.add_argument("--mcts-samples", type=int, default=3, help="samples for the `mcts` and `growth` sections")
    parser.add_argument("--budgets", default="50,100,200,400")
    parser.add_argument("--sections", default="mcts,growth,compare", help="any of mcts, growth, compare, dtype")
    parser.add_argument("--dtype-modes", default="score,generate", help="the modes the `dtype` section searches in")
    parser.add_argument("--batch", type=int, default=0,
                        help="samples CoLa searches at once in `compare` (default 0: all of them)")
    parser.add_argument("--prefix-gib", type=float, default=8.0,
                        help="prefix-cache memory of the searches in flight in `compare` (default 8; cola search: 4)")
    args = parser.parse_args()
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - {"mcts", "growth", "compare", "dtype"})
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; sections: mcts, growth, compare, dtype")
    torch.manual_seed(0)
    cm = load_model(args.model)
    task = get_task(args.task)
    samples = load_samples(task, args.data_dir, n=args.n, seed=0)
    print(f"model {args.model} on {cm.device} ({cm.dtype}), {torch.get_num_threads()} threads, task {task.name}")
    if "mcts" in sections:
        arc = load_samples("arc_challenge", args.data_dir, n=args.mcts_samples, seed=0)
        section_mcts(cm, arc, 200)
    if "dtype" in sections:
        section_dtype(args.model, load_samples("arc_challenge", args.data_dir, n=args.mcts_samples, seed=0), 200,
                      tuple(args.dtype_modes.split(",")))
    if "growth" in sections:
        section_growth(cm, task, samples[: args.mcts_samples], [int(b) for b in args.budgets.split(",")])
    if "compare" in sections:
        ratio = section_compare(cm, task, samples, args.sims, args.every, args.batch or len(samples),
                                args.prefix_gib)
        print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
