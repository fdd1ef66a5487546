"""Helpers shared by several test files (fixtures live in conftest.py): tiny random-weight models of every supported
family, a reference model that physically holds the layers in chain order (the ground truth the executor must match),
seeded chains, prompts and data rows, and the committed fixture runs."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from cola import Chain, ColaModel
from cola.core.executor import Row, Segment, advance, embed, prefill
from cola.core.families import FAMILIES as FAMILY_RECORDS
from cola.core.families import TINY_COMMON, tiny_config

DATA_DIR = Path(os.environ.get("COLA_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
VOCAB = TINY_COMMON["vocab_size"]
EOS = TINY_COMMON["eos_token_id"]
PAD = TINY_COMMON["pad_token_id"]
FAMILIES = sorted(FAMILY_RECORDS)  # the model_type of every family record: one tiny model each


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the model's VOCAB ids: 0/1/2 are pad/bos/eos, the words ``t3 .. t95`` the rest."""
    vocab = {"<pad>": PAD, "<s>": 1, "</s>": EOS, **{f"t{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="left"
    )


def tiny_model(family: str, seed: int = 0) -> ColaModel:
    """A random-weight model of ``family`` (a ``model_type`` of :data:`cola.core.families.FAMILIES`, built from its
    record's tiny config: 6 layers), float32 on CPU, weights scaled up so that layers matter."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family)).eval()
    with torch.no_grad():  # the default init (std 0.02) makes every layer nearly the identity; widen it
        for name, param in model.named_parameters():
            if param.dim() >= 2:  # matrices, and the stacked matrices of a mixture of experts
                param.normal_(0.0, 0.15)
    return ColaModel(model=model, tokenizer=tiny_tokenizer(), name=f"tiny-{family}")


def reference_model(model: torch.nn.Module, chain: Chain) -> torch.nn.Module:
    """Ground truth for a chain: a copy of the model whose ``ModuleList`` holds a copy of each chain layer, in chain
    order, each with its own ``layer_idx``, and a config whose depth and per-layer types match. The copies share the
    model's weights (modules and config are copied, tensors are not), as a model rebuilt from the same checkpoint
    would hold them."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    ref = copy.deepcopy(model, dict(shared))
    types = getattr(model.config, "layer_types", None)
    layers = torch.nn.ModuleList()
    for position, index in enumerate(chain):
        layer = copy.deepcopy(model.model.layers[index], dict(shared))
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = position
        layers.append(layer)
    ref.model.layers = layers
    ref.config.num_hidden_layers = len(chain)
    if types is not None:
        ref.config.layer_types = [types[i] for i in chain]
    return ref.eval()


def random_chains(depth: int, n: int, seed: int) -> list[Chain]:
    """Seeded random chains mixing skips, repeats and re-orders, 1 to 2*depth long."""
    g = torch.Generator().manual_seed(seed)
    chains = []
    for _ in range(n):
        length = int(torch.randint(max(1, depth // 2), 2 * depth + 1, (1,), generator=g))
        chains.append(Chain(tuple(int(i) for i in torch.randint(0, depth, (length,), generator=g))))
    return chains




CHAINS = ["0-5", "0,2-5", "0-2,1,2,3-5", "0-3,3,3,4,5", "5,4,3,2,1,0", "0,1,4,5"]


def packed_prompts(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Seeded random prompts (1, n) of the tiny vocabulary, one per length."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 96, (1, n), generator=g) for n in lengths]


@torch.inference_mode()
def decode_step(cm: ColaModel, rows: list[Row], token_ids: torch.Tensor) -> torch.Tensor:
    """Run one new token per row (``token_ids``: (rows,)) through each row's chain; returns the next-token logits
    (rows, vocab) and advances every row's cache by one token (the decoder's step, rows given by hand)."""
    hidden = embed(cm, token_ids[:, None])
    return advance(cm, [Segment(row, hidden[b : b + 1]) for b, row in enumerate(rows)])


def decode_together_and_alone(cm, chains, prompts, steps):
    """Decode ``steps`` tokens through each chain with all rows together and with each row alone, feeding both the
    same tokens so only the batching differs; asserts the logits agree at every step and returns the rows run
    together."""

    def rows():
        out, logits = [], []
        for chain, ids in zip(chains, prompts):
            lg, cache = prefill(cm, chain, ids)
            out.append(Row(chain, cache, ids.shape[1]))
            logits.append(lg[0, -1])
        return out, torch.stack(logits).argmax(-1)

    together, tokens = rows()
    alone, _ = rows()
    for _ in range(steps):
        batched = decode_step(cm, together, tokens)
        single = torch.cat([decode_step(cm, [row], tokens[b : b + 1]) for b, row in enumerate(alone)])
        assert (batched - single).abs().max().item() <= 1e-4
        tokens = single.argmax(-1)
    return together


FIXTURES = Path(__file__).parent / "fixtures" / "runs"
RUNS = {name: FIXTURES / name for name in ("cola", "skip", "repeat", "decoy")}  # committed runs of a small real search


def records(name: str) -> list[dict]:
    """The records of the committed fixture run ``name``."""
    return [json.loads(line) for line in (RUNS[name] / "records.jsonl").read_text().splitlines()]


def mc_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` seeded multiple-choice rows in the tiny tokenizer's words (``t10`` .. ``t89``), gold ``A``: the shape of
    the ``mc_jsonl`` task."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = " ".join(f"t{rng.randrange(10, 40)}" for _ in range(5))
        options = rng.sample(range(50, 90), 4)
        rows.append({"id": f"q{i}", "question": words, "answerKey": "A",
                     "choices": [{"label": label, "text": f"t{o}"} for label, o in zip("ABCD", options)]})
    return rows


class Cola:
    """A `cola` command in a child process of its own, forked from a server that imported torch, transformers and
    cola once per test process (multiprocessing's forkserver): a real process (its own pid, lock, signals and exit
    code, as a user's command has) without a fresh interpreter's seconds of imports for each test.

    ``kill_after=N``: the child kills itself (SIGKILL) right after its Nth durable line (a journal's or a run's) is on
    disk. ``pause``: seconds it waits after each durable line, so that a signal sent once a line is on disk lands
    mid-run however busy the machine is. Ctrl-C is handled as in a terminal even when the tests run in the background
    (where a shell starts them with SIGINT ignored). Like ``subprocess.Popen``: ``pid``, ``send_signal``, ``kill``,
    ``wait``, ``returncode`` (minus the signal that ended it); ``stdout`` and ``stderr`` once it ended."""

    def __init__(self, args: list[str], *, kill_after: int = 0, pause: float = 0.0) -> None:
        import multiprocessing
        import tempfile

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["helpers", "cola.cli", "cola.search.run", "cola.evaluation.evaluations"])
        self._logs = tempfile.TemporaryDirectory(prefix="cola-child-")
        self._out, self._err = (os.path.join(self._logs.name, name) for name in ("stdout", "stderr"))
        self._process = context.Process(target=_cola_child, args=(
            list(args), os.getcwd(), dict(os.environ), self._out, self._err, kill_after, pause))
        self._process.start()
        self.pid: int = self._process.pid
        self.returncode: int | None = None
        self.stdout = self.stderr = ""

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def poll(self) -> int | None:
        """None while it runs, else its exit code."""
        return self._process.exitcode

    def wait(self, timeout: float = 300) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            self.kill()
            self._process.join()
            raise TimeoutError(f"cola child {self.pid} ran past {timeout} s")
        self.returncode = self._process.exitcode
        self.stdout, self.stderr = (Path(path).read_text() if os.path.exists(path) else "" for path in (self._out,
                                                                                                      self._err))
        self._logs.cleanup()
        return self.returncode


def run_cola(args: list[str], *, kill_after: int = 0, timeout: float = 300) -> Cola:
    """Run a `cola` command in a child (:class:`Cola`) to its end; the ended child."""
    child = Cola(args, kill_after=kill_after)
    child.wait(timeout)
    return child


def _cola_child(args: list[str], cwd: str, env: dict, out: str, err: str, kill_after: int, pause: float) -> None:
    """The child's side of :class:`Cola`: the parent's directory and environment, output to files, one thread."""
    import sys
    import time

    import cola.storage as store
    from cola.cli import main

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(file, fd)
        os.close(file)
    sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False) for fd in (1, 2))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(1)  # the test processes have one thread each; a child beside them too
    append, written = store.append_line, [0]

    def append_line(path, line):
        append(path, line)
        written[0] += 1
        if written[0] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(pause)

    store.append_line = append_line
    code = main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


WALL = ("wall_s", "wall_ratio", "routed_s", "wall_processes", "environment")


def without_wall(summary: dict) -> dict:
    """An evaluation's summary less what differs between two runs of it: its wall times and environment."""
    summary = {k: v for k, v in summary.items() if k not in WALL}
    summary["config"] = {k: v for k, v in summary["config"].items() if k not in WALL}
    if "baselines" in summary:
        summary["baselines"] = {name: {k: v for k, v in b.items() if k not in WALL}
                                for name, b in summary["baselines"].items()}
    return summary


def generate_task_yaml(name: str, path, text: str, until: list[str], max_gen_toks: int) -> str:
    """An lm-eval generate_until task file over a local JSONL (rows with an ``answer``), graded by exact_match."""
    from cola.tasks.lmeval import task_yaml

    return task_yaml(name, path, output_type="generate_until", doc_to_text=text, doc_to_target="{{answer}}",
                     generation_kwargs={"until": until, "max_gen_toks": max_gen_toks, "do_sample": False},
                     metric_list=[{"metric": "exact_match"}])


def lmeval_agreement():
    """``bench/lmeval_agreement.py`` as a module: the per-sample comparison with lm-evaluation-harness."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "lmeval_agreement", Path(__file__).resolve().parents[1] / "bench" / "lmeval_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_lmeval_agrees(cm, chain, sets, pretrained, folder) -> None:
    """lm-eval on ``pretrained`` (its HF backend on a folder, or an lm-eval model object) against CoLa's evaluator
    running ``chain`` of ``cm`` (16 samples together: on a CPU the numbers of one alone): no sample's verdicts differ
    (float32). ``sets``: ``lmeval_agreement().write_sets``'s."""
    for name, result in lmeval_agreement().disagreements(cm, chain, sets, pretrained, folder, cola_batch=16).items():
        assert not result["differ"], (f"{name}: {len(result['differ'])} of {result['n']} samples differ (id, cola "
                                      f"acc, lm-eval acc, ...): {result['differ'][:5]}")
