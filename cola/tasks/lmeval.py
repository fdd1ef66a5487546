"""Any lm-evaluation-harness task with a per-document reward as a CoLa task, named ``lm-eval:NAME``.

The task's documents come from lm-eval (its dataset, or local JSONL through a YAML task with ``dataset_path: json``
under ``include``); each becomes a :class:`~cola.tasks.Sample` whose question is lm-eval's context for it
(``fewshot_context``: the task's description, its few-shot examples, the document's text), read verbatim. The
few-shot examples are drawn with a seed of the document's own id, so a document's context is the same whatever the
order, subset or resume (and its prefix cache holds across chains).

- A ``multiple_choice`` task is scored: its choices are ``doc_to_choice``'s options, labelled ``0``, ``1``, ... with
  the gold at ``doc_to_target``, each scored after the task's ``target_delimiter``; a chain is right when the gold has
  the highest log-likelihood, lm-eval's per-document ``acc``. The decoy control replaces the gold label.
- A ``generate_until`` task generates until its stop strings or ``max_gen_toks``; the text, cut at the first stop
  string, passes through the task's first filter pipeline, and a chain is right when the task's ``process_results``
  gives it ``exact_match`` 1. Its gold is each document's own target, which a decoy cannot replace.

A task whose metric is not a per-document mean (corpus metrics such as f1, bleu, mcc or perplexity) has no reward on
one document and is refused, and so are tasks of the other kinds (loglikelihood, rolling).
"""

from __future__ import annotations

import functools

from ..errors import UnknownNameError, UsageError
from .base import Sample, Task, row_id

PREFIX = "lm-eval:"
ARC_FIELDS = {  # lm-eval's ARC task over rows of CoLa's multiple-choice shape
    "output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_target": "{{(choices | map(attribute='label') | list).index(answerKey)}}",
    "doc_to_choice": "{{choices | map(attribute='text') | list}}",
    "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
METRICS = {"multiple_choice": "acc", "generate_until": "exact_match"}  # the per-document reward of each kind
FEWSHOT_SEED = 1234  # lm-eval's default few-shot seed, joined with each document's id
_DOCS = {"test": ("has_test_docs", "test_docs"), "dev": ("has_validation_docs", "validation_docs"),
         "train": ("has_training_docs", "training_docs")}


def task_yaml(name: str, path, **fields) -> str:
    """An lm-eval task file named ``name`` over a local JSONL file (``dataset_path: json``, its rows the test split),
    with the task's ``fields`` (``output_type``, ``doc_to_text``, ``generation_kwargs``, ``metric_list``, ...)."""
    import yaml

    task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(path)}},
            "test_split": "test", **fields}
    return yaml.safe_dump(task, sort_keys=False, allow_unicode=True)


@functools.lru_cache(maxsize=None)
def lm_eval_task(name: str, include: str | None = None) -> Task:
    """The lm-eval task ``name`` (found among lm-eval's own or the YAML tasks under ``include``) as a CoLa task
    (module doc)."""
    try:
        from lm_eval.api.metrics import mean
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise UsageError(f"an lm-eval task needs lm-evaluation-harness ({err}): pip install lm-eval") from None
    manager = TaskManager(include_path=include, include_defaults=False) if include else None
    if manager is None or name not in manager.all_tasks:  # lm-eval's own tasks are indexed only when needed (slow)
        manager = TaskManager(include_path=include)
    if name not in manager.all_tasks:
        where = f"lm-eval's tasks or those under {include}" if include else "lm-eval's tasks (add --lm-eval-include DIR)"
        raise UnknownNameError(f"no lm-eval task {name!r} in {where}")
    loaded = manager.load(name)
    if name not in loaded["tasks"]:
        raise UsageError(f"lm-eval {name!r} is a group or tag of tasks ({', '.join(sorted(loaded['tasks']))}); name "
                         "one of its tasks")
    task = loaded["tasks"][name]
    metric = METRICS.get(task.OUTPUT_TYPE)
    if metric is None:
        raise UsageError(f"lm-eval task {name!r} is a {task.OUTPUT_TYPE} task; as a search objective CoLa takes "
                         "multiple_choice tasks (their per-document acc) and generate_until tasks (exact_match)")
    aggregation = task.aggregation()
    if aggregation.get(metric) is not mean:
        raise UsageError(f"lm-eval task {name!r} reports {', '.join(aggregation)}: no per-document {metric} averaged "
                         "over documents, so a chain has no reward on one document (corpus metrics such as f1, bleu, "
                         "mcc or perplexity are not a search objective)")
    shots = task.config.num_fewshot or 0
    generate = task.OUTPUT_TYPE == "generate_until"

    def documents(split: str) -> list[tuple[str, str, dict]]:
        has, docs = _DOCS[split]
        if not getattr(task, has)():
            raise UsageError(f"lm-eval task {name!r} has no {split} split")
        return [(f"{name}[{split}][{i}]", row_id(doc, f"{split}-{i}"), dict(doc))
                for i, doc in enumerate(getattr(task, docs)())]

    def parse_row(doc: dict, sample_id: str) -> Sample:
        task.set_fewshot_seed(f"{FEWSHOT_SEED}:{sample_id}")
        context = task.fewshot_context(doc, shots)
        if generate:
            return Sample(sample_id, context, str(task.doc_to_target(doc)), meta={"doc": doc})
        choices = task.doc_to_choice(doc)
        target = task.doc_to_target(doc)
        gold = target if isinstance(target, int) else choices.index(target)
        return Sample(sample_id, context, str(gold), tuple((str(j), choice) for j, choice in enumerate(choices)))

    splits = tuple(split for split, (has, _) in _DOCS.items() if getattr(task, has)())
    common = dict(name=PREFIX + name, description=f"lm-eval's {name} ({task.OUTPUT_TYPE}, {shots}-shot, {metric})",
                  parse_row=parse_row, prompt=lambda s: s.question, default_split=splits[0], documents=documents,
                  document_splits=splits, verbatim=True)
    if not generate:
        return Task(kind="mc", extract=lambda text, s: None, is_done=lambda text, s: False,
                    grade=lambda answer, s: answer == s.gold, max_new_tokens=0,
                    score_format=lambda s: (s.question, [text for _, text in s.choices]),
                    target_delimiter=task.config.target_delimiter, **common)
    return Task(kind="qa", max_new_tokens=_generation(task)[1], **_graded(task, metric), **common)


def _generation(task) -> tuple[list[str], int]:
    """A generate_until task's stop strings and token budget (lm-eval's defaults: none, 256)."""
    kwargs = task.config.generation_kwargs or {}
    until = kwargs.get("until") or []
    return ([until] if isinstance(until, str) else list(until)), int(kwargs.get("max_gen_toks", 256))


def _graded(task, metric: str) -> dict:
    """How a generate_until task reads and grades a generation as lm-eval does: cut at the first stop string, passed
    through the task's first filter pipeline, scored by the task's ``process_results`` (``metric`` of 1: right)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.utils import postprocess_generated_text

    until, _ = _generation(task)
    pipeline = task._filters[0]

    def extract(text: str, sample: Sample) -> str | None:
        request = Instance("generate_until", sample.meta["doc"], (sample.question, {}), 0)
        request.resps = [postprocess_generated_text(text, until, None)]
        pipeline.apply([request])
        answer = request.filtered_resps[pipeline.name]
        return answer if isinstance(answer, str) else None

    return {"extract": extract, "is_done": lambda text, s: any(stop in text for stop in until),
            "grade": lambda answer, s: answer is not None and bool(task.process_results(s.meta["doc"], [answer])[metric])}
