"""PoLar's released metric, and why it is an oracle: an input counts as right when any of its ``k`` best programs is
right by the gold answer (``best_of_k_online``); as released, a program that the offline search already found for
that test input counts with the search's verdict without being run (``as_released``: PoLar's ``trust_valid_cache``,
on by default). Both check candidates against the gold: neither is what a deployed predictor gives (its top program
alone, pass@1: the ``program`` policy). Every number here is labelled an oracle wherever it is printed or written,
and stands beside the same best-of-k of a chance control (random programs at the predictor's rates, or a fixed menu)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.prefix_cache import PrefixCache
from ..evaluation.evaluator import Evaluator
from ..evaluation.stats import wilson_interval
from ..storage import EvalStore, chunks, read_config, read_records
from ..tasks import Sample
from .program import ProgramRouter, input_text, program_chain

ORACLE = "ORACLE (gold-checked best-of-k)"


def trusted_verdicts(runs: Sequence[str], header: dict, ids: Sequence[str]) -> dict[str, dict[str, bool]]:
    """Per sample id, the verdict of every chain the search ``runs`` evaluated on it (PoLar's valid and invalid
    caches), from runs of the same model, task and prompts as the evaluation (``header``) that hold a record of every
    evaluated sample (``ids``): an unfinished search would quietly trust fewer hits."""
    from ..errors import UsageError

    found: dict[str, dict[str, bool]] = {}
    for run in runs:
        config = read_config(run)
        differ = [k for k in ("model", "weights", "task", "mode", "chat", "score_style")
                  if config.get(k) != header.get(k)]
        if differ:
            raise UsageError(f"--trust-runs {run} searched with another {', '.join(differ)} than this evaluation")
        for record in read_records(run):
            found.setdefault(record["id"], {}).update({e["chain"]: bool(e["correct"]) for e in record["evaluations"]})
    missing = [i for i in ids if i not in found]
    if missing:
        raise UsageError(f"--trust-runs {', '.join(map(str, runs))} hold no record of {len(missing)} of the "
                         f"{len(ids)} evaluated samples (first: {missing[0]}); finish the search (the same "
                         "command resumes it) or evaluate without --trust-runs")
    return found


def best_of_k(router: ProgramRouter, evaluator: Evaluator, samples: Sequence[Sample], k: int,
              trusted: dict[str, dict[str, bool]] | None = None, batch: int = 16,
              progress: Callable[[int], None] | None = None, store: EvalStore | None = None) -> list[dict]:
    """Per sample, its ``k`` best programs, each run (a program that runs no layer is wrong and costs nothing), and
    with ``trusted`` (:func:`trusted_verdicts`) PoLar's reading: a program the search evaluated on the sample takes
    the search's verdict, unrun. Each batch is recorded in ``store`` (stage ``oracle``) and read back on a resume."""

    def unit(chunk: Sequence[Sample]) -> list[dict]:
        programs = router.programs([input_text(evaluator, s) for s in chunk], [s.id for s in chunk], k)
        requests, prefixes = evaluator.requests(), [PrefixCache() for _ in chunk]
        chains = [[program_chain(p) for p in ps] for ps in programs]
        for i, (sample, sample_chains) in enumerate(zip(chunk, chains)):
            for j, chain in enumerate(sample_chains):
                if chain is not None:
                    requests.submit((i, j), chain, sample, prefixes[i])
        outcomes = requests.drain()
        rows = []
        for i, sample in enumerate(chunk):
            verdicts = [bool(outcomes[i, j].correct) if c is not None else False for j, c in enumerate(chains[i])]
            known = (trusted or {}).get(sample.id, {})
            cached = [str(c) in known if c is not None else False for c in chains[i]]
            released = [known[str(c)] if hit else v for c, v, hit in zip(chains[i], verdicts, cached)]
            lengths = [len(c) if c is not None else 0 for c in chains[i]]
            rows.append({
                "id": sample.id, "programs": [str(c) if c is not None else "" for c in chains[i]],
                "verdicts": verdicts, "trusted": cached, "pass1": verdicts[0], "best_of_k_online": any(verdicts),
                "as_released": any(released), "layers_pass1": lengths[0], "layers_online": sum(lengths),
                "layers_as_released": sum(n for n, hit in zip(lengths, cached) if not hit)})
        return rows

    units, _ = (store or EvalStore()).stage("oracle", chunks(samples, batch), unit, progress)
    return [row for u in units for row in u]


def oracle_summary(rows: Sequence[dict], k: int, trusted_runs: Sequence[str] = ()) -> dict:
    """The oracle numbers of :func:`best_of_k`'s rows, each labelled as an oracle: best-of-k run online and, with
    trusted runs, as released; and pass@1 of the same programs (the deployable number) for comparison."""
    n = len(rows)

    def rate(field: str, layers: str) -> dict:
        right = sum(r[field] for r in rows)
        return {"k": right, "accuracy": right / n, "ci": list(wilson_interval(right, n)),
                "mean_layers": sum(r[layers] for r in rows) / n}

    out = {"label": ORACLE, "top_k": k, "n": n, "pass1": rate("pass1", "layers_pass1"),
           "best_of_k_online": rate("best_of_k_online", "layers_online")}
    if trusted_runs:
        out["as_released"] = {**rate("as_released", "layers_as_released"), "trust_runs": list(trusted_runs),
                              "programs_trusted": sum(sum(r["trusted"]) for r in rows)}
    return out

