"""CoLa as an lm-evaluation-harness model backend, registered as ``cola``.

``import cola.lmeval`` registers it, so ``lm_eval.simple_evaluate(model="cola", model_args={...})`` runs any lm-eval
task through a chain, a policy or a router; ``cola lm-eval ARGS`` (or ``python -m cola.lmeval ARGS``) registers it
and runs lm-eval's own command line, so ``cola lm-eval --model cola --model_args chain=0-13+13+14-29 --tasks
arc_easy`` is ``lm_eval --model cola ...``.

``model_args``: ``pretrained`` (an alias, a ``.gguf`` file, a folder or a hub id; default the embedded SmolLM2),
``chain`` (chain notation with ``+`` between the parts, as lm-eval splits ``model_args`` on commas: ``0-13+13+14-29``;
commas work in JSON ``model_args``), ``policy`` (a policy spec JSON, or a ``cola eval --out`` summary holding one),
``router`` (a ``cola router fit`` folder or a ``cola router fit-layers`` folder of per-layer routers), ``device``,
``dtype``, ``batch_size`` (contexts asked together), ``max_length``, ``allow_untested``.

Each context is asked once: ``loglikelihood`` groups lm-eval's requests by context, the policy picks the context's
chain without any gold (lm-eval never shows it), and all of its continuations are scored through the context's prefix
cache (:func:`cola.inference.scoring.score_many`, the score path of ``cola eval``). Contexts and continuations are
tokenised by lm-eval's own ``TemplateLM`` (its context/continuation split, an empty context's prefix token), with
special tokens as the ``hf`` backend adds them. ``generate_until`` decodes through CoLa's decoder with lm-eval's stop
strings; ``loglikelihood_rolling`` scores lm-eval's rolling windows, each window a context of its own. lm-eval's
response cache (``--use_cache``) keys requests by their text alone, so it would hand one chain's answers to another: it
is refused.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from .core.chain import Chain
from .core.loading import DEFAULT_MODEL, load_model
from .core.models import ColaModel
from .core.prefix_cache import PrefixCache
from .errors import UsageError
from .evaluation.evaluator import EvalConfig, Evaluator, Prepared
from .inference.generation import Sampler
from .inference.scoring import encode, inputs_of_pairs, prefix_token_id, score_many
from .policies.harness import decided_requests
from .policies.sources import router_kind
from .policies.spec import KINDS, ChainPolicy, PolicySpec, draw_seed
from .tasks import Sample, Task

Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)


def requests_task(until: Sequence[str] | None = None, max_gen_toks: int = 256) -> Task:
    """The stand-in task of lm-eval's requests: verbatim contexts, scored (``until`` None) or continued until the
    first of ``until``, the text cut there (lm-eval's post-processing); nothing is graded here (lm-eval grades)."""
    stops = list(until or ())
    return Task(name="lm-eval", kind="mc" if until is None else "qa", description="requests from lm-evaluation-harness",
                parse_row=lambda row, sample_id: Sample(sample_id, row["context"], ""),
                prompt=lambda sample: sample.question,
                extract=lambda text, sample: postprocess_generated_text(text, stops, None),
                is_done=lambda text, sample: any(stop in text for stop in stops),
                grade=lambda answer, sample: False, max_new_tokens=max_gen_toks, verbatim=True)


@dataclass
class GivenEvaluator(Evaluator):
    """An :class:`~cola.evaluation.evaluator.Evaluator` of inputs lm-eval has already built and tokenised: each sample's
    :class:`~cola.evaluation.evaluator.Prepared` is given (``given``, by sample id), so policies, routers and the score
    and decode paths run on exactly lm-eval's tokens."""

    given: dict[str, Prepared] = field(default_factory=dict)

    def prepare(self, sample: Sample) -> Prepared:
        return self.given[sample.id]


def context_key(ids: Sequence[int]) -> str:
    """A context's sample id: a hash of its token ids (a router's random control and a vote's draws are seeded by
    it, so they do not depend on the batch or the order)."""
    return "ctx-" + hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()[:16]


def parse_chain(text: str | int, depth: int) -> Chain:
    """A chain from ``model_args``: notation with ``+`` for ``,`` (lm-eval splits ``model_args`` on commas)."""
    return Chain.parse(str(text).replace("+", ","), depth)


@register_model("cola")
class ColaLM(TemplateLM):
    """A chain, a policy or a router of one CoLa model as an lm-eval ``LM`` (module doc)."""

    def __init__(self, pretrained: str = DEFAULT_MODEL, chain: str | None = None, policy: str | None = None,
                 router: str | None = None, device: str | None = None, dtype: str | None = None,
                 batch_size: int | str | None = 16, max_length: int | None = None, allow_untested: bool = False,
                 cm: ColaModel | None = None, **unknown) -> None:
        super().__init__()
        unknown.pop("max_batch_size", None)  # lm-eval passes it to every backend; contexts go `batch_size` at a time
        if unknown:
            raise UsageError(f"cola backend: unknown model_args {', '.join(sorted(unknown))}; known: pretrained, chain, "
                             "policy, router, device, dtype, batch_size, max_length, allow_untested")
        if sum(x is not None for x in (chain, policy, router)) > 1:
            raise UsageError("cola backend: give one of chain=, policy= or router= (a policy names its own chains "
                             "and router)")
        if cm is None and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda:0 unless told otherwise; its hf backend falls back as well
            warnings.warn(f"cola backend: device {device!r} is not on this machine; running on the CPU", stacklevel=2)
            device = "cpu"
        self.cm = cm or load_model(str(pretrained), device, dtype, allow_untested=bool(allow_untested))
        depth = self.cm.depth
        if policy is not None:
            self.spec = PolicySpec.load(policy)
        elif router is not None:
            self.spec = KINDS[router_kind(str(router))](router=str(router))
        else:
            self.spec = ChainPolicy((str(parse_chain(chain or "full", depth)),))
        self.router = self.spec.load_router(self.cm) if self.spec.routed else None
        self.batch_size = 16 if batch_size in (None, "auto") or str(batch_size).startswith("auto") else int(batch_size)
        self._max_length = int(max_length) if max_length else (self.cm.context_limit or 2048)
        self.tokenizer = self.cm.tokenizer
        self._header: dict | None = None

    # -- what lm-eval asks of a model ------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return prefix_token_id(self.cm)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return encode(self.cm, string, add_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def set_cache_hook(self, cache_hook) -> None:
        if getattr(cache_hook, "dbdict", None) is not None:
            raise UsageError("cola backend: lm-eval's --use_cache keys answers by the request text alone, so answers of "
                             "one chain or policy would be read back for another; run without --use_cache")
        super().set_cache_hook(cache_hook)

    def get_model_info(self) -> dict:
        """What produced the results: the model and its weights hash, the dtype, and the chain or policy."""
        from .evaluation.provenance import model_header

        if self._header is None:
            self._header = model_header(self.cm)
        return {"cola": {**self._header, "policy": self.spec.to_dict(),
                         "chain": self.spec.chains[0] if isinstance(self.spec, ChainPolicy) else None}}

    # -- scoring ---------------------------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: Sequence[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        return self.score_pairs([(ctx, cont) for _, ctx, cont in requests],
                                [len(cont_text) for (_, cont_text), _, _ in requests], disable_tqdm)

    def score_pairs(self, pairs: Sequence[Pair], n_chars: Sequence[int] | None = None,
                    disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        """(log-likelihood, greedy) of each (context ids, continuation ids) pair: the pairs of one context form one
        input, whose chain the policy picks once, ``batch_size`` inputs asked together."""
        n_chars = n_chars or [len(cont) for _, cont in pairs]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(pairs):
            groups.setdefault(tuple(ctx), []).append(i)
        evaluator = GivenEvaluator(self.cm, requests_task(), config=EvalConfig(mode="score", chat=False))
        samples = []
        for ctx, members in groups.items():
            inputs = inputs_of_pairs([pairs[i] for i in members], [n_chars[i] for i in members])
            drop = inputs.positions - self.max_length
            if drop > 0:  # lm-eval keeps the last max_length positions
                if drop >= len(inputs.context):
                    raise UsageError(f"a continuation of {inputs.positions - len(inputs.context)} tokens leaves no "
                                     f"room for its context in {self.max_length} positions")
                inputs = inputs.without_first(drop)
            sample = Sample(context_key(ctx), "", "0", tuple((str(j), "") for j in range(len(members))))
            evaluator.given[sample.id] = Prepared("", None, inputs)
            samples.append((sample, members))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        with tqdm(total=len(pairs), desc="cola: loglikelihood", disable=disable_tqdm) as bar:
            for start in range(0, len(samples), self.batch_size):
                chunk = samples[start : start + self.batch_size]
                asked = [s for s, _ in chunk]
                prefixes = [PrefixCache() for _ in chunk]
                decided = decided_requests(self.spec, evaluator, asked, prefixes, self.router)
                scores = score_many(self.cm, [(r.chain, evaluator.prepare(s).inputs, p)
                                              for r, s, p in zip(decided, asked, prefixes)])
                for (_, members), s in zip(chunk, scores):
                    for j, i in enumerate(members):
                        results[i] = (s.logprobs[j], s.greedy[j])
                    bar.update(len(members))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each string's log-likelihood over lm-eval's disjoint rolling windows of ``max_length`` tokens (the first
        after the prefix token), each window an input of its own."""
        windows: list[Pair] = []
        owner: list[int] = []
        for r, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((list(ctx), list(cont)))
                owner.append(r)
        totals = [0.0] * len(requests)
        for r, (logprob, _) in zip(owner, self.score_pairs(windows, disable_tqdm=disable_tqdm)):
            totals[r] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # -- generation ------------------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Each context continued through its chain until one of lm-eval's stop strings (EOS among them) or
        ``max_gen_toks`` tokens, cut at the stop string as lm-eval cuts it. Greedy, or with ``do_sample`` drawn at
        ``temperature`` by a sampler seeded per context."""
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str | None] = [None] * len(requests)
        with tqdm(total=len(requests), desc="cola: generate_until", disable=disable_tqdm) as bar:
            for members in groups.values():
                kwargs = normalize_gen_kwargs(dict(requests[members[0]].args[1]), 256)
                until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
                budget, sample_, temperature = kwargs.pop("max_gen_toks"), kwargs.pop("do_sample"), kwargs.pop(
                    "temperature", 0.0)
                if kwargs:
                    raise UsageError(f"cola backend: generation settings {', '.join(sorted(kwargs))} are not supported "
                                     "(CoLa decodes greedily, or draws at a temperature with do_sample)")
                if budget >= self.max_length:
                    raise UsageError(f"max_gen_toks {budget} leaves no room for a context in {self.max_length} "
                                     "positions")
                evaluator = GivenEvaluator(self.cm, requests_task(until, budget), config=EvalConfig(mode="generate",
                                                                                                    chat=False))
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start : start + self.batch_size]
                    samples = []
                    for i in chunk:
                        context = requests[i].args[0]
                        ids = self.tok_encode(context)[-(self.max_length - budget):]
                        sample = Sample(context_key(ids), context, "")
                        evaluator.given[sample.id] = Prepared(context, torch.tensor([ids], device=self.cm.device),
                                                              None)
                        samples.append(sample)
                    prefixes = [PrefixCache() for _ in chunk]
                    decided = decided_requests(self.spec, evaluator, samples, prefixes, self.router)
                    asked = evaluator.requests()
                    for j, (request, sample, prefix) in enumerate(zip(decided, samples, prefixes)):
                        sampler = (Sampler(draw_seed(self.spec.seed, sample.id, 0), temperature)
                                   if sample_ and temperature > 0 else request.sampler(self.spec.seed, sample.id))
                        asked.submit(j, request.chain, sample, prefix, sampler)
                    for j, outcome in asked.drain().items():
                        out[chunk[j]] = outcome.answer
                        self.cache_hook.add_partial("generate_until", requests[chunk[j]].args, outcome.answer)
                    bar.update(len(chunk))
        return out


def main(argv: Sequence[str] | None = None) -> int:
    """lm-eval's own command line with the ``cola`` backend registered and chosen unless ``--model`` names another
    (``cola lm-eval``, ``python -m cola.lmeval``)."""
    from lm_eval.__main__ import cli_evaluate

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "-h" in argv or "--help" in argv:
        print("usage: cola lm-eval ARGS: lm-evaluation-harness's command line with CoLa's `cola` model backend "
              "registered (--model cola --model_args chain=0-13+13+14-29|policy=FILE.json|router=DIR; docs/lm-eval.md). "
              "lm-eval's own help follows.\n")
    if argv and argv[0] not in ("ls", "validate") and not any(a in ("--model", "-m") or a.startswith("--model=")
                                                               for a in argv):
        argv = ["--model", "cola", *argv]  # the backend this command is for, unless another is named
    sys.argv = ["lm-eval", *argv]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
