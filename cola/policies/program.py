"""PoLar's program predictor (Li, Li & Zhou, ICML 2026; tianyi-lab/PoLar, written anew): a small network that writes
a *program of layers* for an input, read from its question alone, non-autoregressively.

A program cuts the model's layers, in order, into segments of 1 to ``max_pack`` (4) consecutive layers, each
skipped, kept or run twice (a doubled segment is two independent applications, each with its own cache slot: CoLa's
exact repeat; PoLar's code shares one slot). Its targets, per layer: a boundary bit (a segment starts here; layer 0
always does) and, at each segment start, the op.

- :func:`parse_program`: a chain found by a search as segments, by PoLar's dynamic programme and tie order (fewest
  segments, then fewest skips, then most repeats, then larger segments first); a chain that no program writes (a layer
  three times, a jump back that is not a doubled segment) is None.
- :class:`ProgramPredictor`: the question's token states from a frozen encoder, projected to ``d_model``; one learned
  query per layer cross-attends to them; a post-norm Transformer encoder over the layers; a boundary head and an op
  head.
- :func:`decode`: segment starts where the boundary sigmoid is at least 0.5 (gaps over ``max_pack`` split), the two
  best ops of each segment read at its start, a beam of 5 by the sum of the ops' log-probabilities.
- :class:`ProgramRouter`: a predictor folder (or a control of one: random programs at its rates, a fixed menu) as the
  ``program`` policy kind routes it: the top program (pass@1) or the best ``k`` (for PoLar's own best-of-k metric, an
  oracle: :mod:`cola.policies.program_eval`).

The training (:mod:`cola.policies.program_fit`) follows PoLar's released command.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.chain import Chain
from ..core.models import ColaModel
from ..errors import RouterError

SKIP, KEEP, REPEAT = 0, 1, 2  # PoLar's op labels
OPS = ("skip", "keep", "repeat")
IGNORE = -100  # an op label where no segment starts
CONFIG, WEIGHTS = "config.json", "program.safetensors"
CHECKPOINT = "fit.partial"  # in a router folder while its fit runs (program_fit.Checkpoint); gone once it is saved

Segment = tuple[int, int, int]  # (first layer, size, op)


# --- programs ---------------------------------------------------------------------------------------------------------

def parse_program(chain: Chain | Sequence[int], depth: int, max_pack: int = 4) -> list[Segment] | None:
    """``chain`` as PoLar's program: segments covering layers ``0 .. depth-1`` in order, each of 1 to ``max_pack``
    layers skipped, kept or doubled; among the programs that write it, the one of fewest segments, then fewest skips,
    then most repeats, then larger segments first. None when no program writes it."""
    path = tuple(chain)
    memo: dict[tuple[int, int], tuple[Segment, ...] | None] = {}

    def key(program: tuple[Segment, ...]) -> tuple:
        ops = [op for _, _, op in program]
        return len(program), ops.count(SKIP), -ops.count(REPEAT), [-size for _, size, _ in program]

    def best(cursor: int, pos: int) -> tuple[Segment, ...] | None:
        if (cursor, pos) in memo:
            return memo[cursor, pos]
        if cursor == depth:
            return () if pos == len(path) else None
        found = None
        for size in range(1, max_pack + 1):
            if cursor + size > depth:
                break
            block = tuple(range(cursor, cursor + size))
            for op, used in ((SKIP, 0), (KEEP, size), (REPEAT, 2 * size)):
                if path[pos : pos + used] != block * (used // size if used else 0):
                    continue
                tail = best(cursor + size, pos + used)
                if tail is not None:
                    candidate = ((cursor, size, op), *tail)
                    if found is None or key(candidate) < key(found):  # ties keep the first found
                        found = candidate
        memo[cursor, pos] = found
        return found

    program = best(0, 0)
    return None if program is None else list(program)


def program_chain(program: Sequence[Segment]) -> Chain | None:
    """The chain a program runs (None when it skips every layer)."""
    layers = [layer for first, size, op in program for _ in range(op) for layer in range(first, first + size)]
    return Chain(tuple(layers)) if layers else None


def program_targets(program: Sequence[Segment], depth: int) -> tuple[list[int], list[int]]:
    """PoLar's targets of a program: a boundary bit per layer (1 where a segment starts; layer 0's is 0, being
    implicit) and the op at each segment start (:data:`IGNORE` elsewhere)."""
    boundaries, ops = [0] * depth, [IGNORE] * depth
    for first, _, op in program:
        boundaries[first] = int(first > 0)
        ops[first] = op
    return boundaries, ops


def segments(starts: Sequence[int], depth: int, max_pack: int = 4) -> list[tuple[int, int]]:
    """The segments (first layer, size) that segment starts cut (layer 0 always starts one), a gap longer than
    ``max_pack`` cut into pieces of ``max_pack``."""
    cuts = [0]
    for start in sorted(set(starts) - {0}):
        while start - cuts[-1] > max_pack:
            cuts.append(cuts[-1] + max_pack)
        cuts.append(start)
    while depth - cuts[-1] > max_pack:
        cuts.append(cuts[-1] + max_pack)
    return [(a, b - a) for a, b in zip(cuts, [*cuts[1:], depth])]


def decode(boundary_logits: torch.Tensor, op_logits: torch.Tensor, threshold: float = 0.5, max_pack: int = 4,
           beam: int = 5, top_ops: int = 2) -> list[tuple[list[Segment], float]]:
    """PoLar's decoding of one input's logits ((depth,), (depth, 3)): segment starts at layer 0 and wherever the
    boundary sigmoid is at least ``threshold`` (:func:`segments`); each segment's ``top_ops`` best ops, read at its
    start, expanded; the ``beam`` best programs by the sum of their ops' log-probabilities (no length
    normalisation), best first (ties keep the earlier expansion)."""
    depth = boundary_logits.shape[0]
    starts = [i for i in range(1, depth) if torch.sigmoid(boundary_logits[i]).item() >= threshold]
    log_probs = torch.log_softmax(op_logits.float(), dim=-1).tolist()
    beams: list[tuple[list[Segment], float]] = [([], 0.0)]
    for first, size in segments(starts, depth, max_pack):
        ranked = sorted(range(len(OPS)), key=lambda op: log_probs[first][op], reverse=True)[:top_ops]
        grown = [(program + [(first, size, op)], score + log_probs[first][op])
                 for program, score in beams for op in ranked]
        beams = sorted(grown, key=lambda b: b[1], reverse=True)[:beam]
    return beams


# --- the question encoder and the predictor -------------------------------------------------------------------------

class QuestionEncoder:
    """A frozen encoder of the input's text (:func:`input_text`; no chat template, at most ``max_tokens`` tokens):
    its last hidden states. ``name`` is a hub id or folder (``AutoModel``'s last hidden state: PoLar's is
    ``Qwen/Qwen3-Embedding-0.6B``), or ``target``: the target model itself, its full depth's normalised final hidden
    states (CoLa's offline default; docs/polar.md). Each question is encoded alone, without padding."""

    def __init__(self, name: str, cm: ColaModel | None = None, max_tokens: int = 512) -> None:
        self.name, self.max_tokens = name, max_tokens
        if name == "target":
            if cm is None:
                raise RouterError("the target-model encoder needs the model (cm)")
            self.cm, self.tokenizer, self.dim = cm, cm.tokenizer, cm.config.hidden_size
        else:
            from transformers import AutoModel, AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(name)
                self.model = AutoModel.from_pretrained(name, dtype=torch.float32).eval()
            except OSError as err:
                raise RouterError(f"cannot load the question encoder {name!r} ({err}); offline, use --encoder "
                                  "target (the target model's own hidden states)") from None
            self.model.requires_grad_(False)
            self.dim = self.model.config.hidden_size

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], progress: bool = False) -> list[torch.Tensor]:
        """Each text's token states (tokens, dim), float32 on the CPU (``progress``: a bar)."""
        from tqdm import tqdm

        out = []
        for text in tqdm(texts, desc="encoding inputs", unit="input", disable=not progress):
            ids = self.tokenizer(text, truncation=True, max_length=self.max_tokens, return_tensors="pt")["input_ids"]
            if self.name == "target":
                from ..core.executor import prompt_hidden

                hidden = self.cm.model.model.norm(prompt_hidden(self.cm, Chain.full(self.cm.depth),
                                                                ids.to(self.cm.device)))
            else:
                hidden = self.model(input_ids=ids).last_hidden_state
            out.append(hidden[0].float().cpu())
        return out


def input_text(evaluator, sample) -> str:
    """The text a predictor reads for ``sample``: what the model reads before its answer (the prompt; in score mode
    the context its options share), decoded without special tokens. The lm-eval backend has these ids and no raw
    question, so both paths give the predictor the same text (PoLar reads the raw problem; docs/polar.md)."""
    return evaluator.cm.tokenizer.decode(evaluator.prompt_ids(sample)[0].tolist(), skip_special_tokens=True)


class ProgramPredictor(torch.nn.Module):
    """PoLar's predictor: token states (batch, tokens, q_dim) -> boundary logits (batch, depth) and op logits (batch,
    depth, 3). The encoder's states are projected to ``d_model``; ``depth`` learned layer queries cross-attend to them
    (``heads`` heads, dropout 0.1); a ``blocks``-layer post-norm Transformer encoder (FFN 4 x d_model, ReLU, dropout
    0.1) mixes the layers; a boundary head and an op head read each layer."""

    def __init__(self, depth: int, q_dim: int, d_model: int = 256, heads: int = 4, blocks: int = 2) -> None:
        super().__init__()
        self.depth, self.q_dim, self.d_model, self.heads, self.blocks = depth, q_dim, d_model, heads, blocks
        self.q_proj = torch.nn.Linear(q_dim, d_model)
        self.layer_embedding = torch.nn.Embedding(depth, d_model)
        self.cross_attn = torch.nn.MultiheadAttention(d_model, heads, dropout=0.1, batch_first=True)
        layer = torch.nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, dropout=0.1,
                                                 batch_first=True)
        self.layer_encoder = torch.nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.seg_head = torch.nn.Linear(d_model, 1)
        self.op_head = torch.nn.Linear(d_model, len(OPS))

    def forward(self, states: torch.Tensor, padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``states`` (batch, tokens, q_dim), ``padding`` (batch, tokens; True where there is no token)."""
        tokens = self.q_proj(states)
        queries = self.layer_embedding.weight.unsqueeze(0).expand(states.shape[0], -1, -1)
        x, _ = self.cross_attn(queries, tokens, tokens, key_padding_mask=padding)
        x = self.layer_encoder(x)
        return self.seg_head(x).squeeze(-1), self.op_head(x)


def pad(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states of several questions as one batch (batch, longest, dim) and its padding mask."""
    longest = max(s.shape[0] for s in states)
    batch = torch.zeros(len(states), longest, states[0].shape[1])
    padding = torch.ones(len(states), longest, dtype=torch.bool)
    for i, s in enumerate(states):
        batch[i, : s.shape[0]] = s
        padding[i, : s.shape[0]] = False
    return batch, padding


# --- the router folder: a trained predictor, or a control of one ----------------------------------------------------

@dataclass(frozen=True)
class Decoding:
    """PoLar's decoding settings."""

    threshold: float = 0.5
    max_pack: int = 4
    beam: int = 5
    top_ops: int = 2


class ProgramRouter:
    """What a ``program`` router folder holds (``config.json``, and ``program.safetensors`` for a trained
    predictor): ``routing`` ``trained`` (the predictor), ``random`` (programs drawn at the predictor's own boundary and
    op rates, seeded per input; with ``with_full``, full depth first) or ``menu`` (the same programs for every input:
    those most often right on train). :meth:`programs` gives an input's ``k`` best programs, best first."""

    def __init__(self, config: dict, predictor: ProgramPredictor | None = None,
                 encoder: QuestionEncoder | None = None) -> None:
        self.config, self.predictor, self.encoder = config, predictor, encoder
        self.depth, self.routing = int(config["depth"]), config["routing"]
        self.decoding = Decoding(**config.get("decoding", {}))

    def programs(self, texts: Sequence[str], keys: Sequence[str], k: int = 1) -> list[list[list[Segment]]]:
        """The ``k`` best programs (at most the beam's), best first, of each input: its text (:func:`input_text`) and
        its name (``keys``: what a random control's draws are seeded by)."""
        if self.routing == "menu":
            menu = [parse_program(Chain.parse(c), self.depth) for c in self.config["menu"]]
            return [menu[:k] for _ in texts]
        if self.routing == "random":
            return [self._random(key, k) for key in keys]
        return self.decode_states(self.encoder.encode(texts), k)

    def decode_states(self, states: Sequence[torch.Tensor], k: int = 1) -> list[list[list[Segment]]]:
        """The trained predictor's ``k`` best programs for inputs already encoded (their token ``states``)."""
        with torch.inference_mode():
            boundary, ops = self.predictor(*pad(states))
        d = self.decoding
        return [[program for program, _ in decode(b, o, d.threshold, d.max_pack, d.beam, d.top_ops)][:k]
                for b, o in zip(boundary, ops)]

    def _random(self, key: str, k: int) -> list[list[Segment]]:
        """``k`` programs drawn at the rates: a segment starts at layer i with the boundary rate of i, its op drawn at
        the op rates of its start; full depth first with ``with_full`` (then drawn at the rates of the predictor's
        whole beam: the programs a best-of-k tries besides its first)."""
        rates, found = self.config["rates"], []
        if self.config.get("with_full"):
            found.append([(first, size, KEEP) for first, size in segments([], self.depth, self.decoding.max_pack)])
        draw = 0
        while len(found) < k:
            rng = random.Random(f"{self.config['seed']}:{key}:{draw}")
            starts = [i for i in range(1, self.depth) if rng.random() < rates["boundary"][i]]
            found.append([(first, size, rng.choices(range(len(OPS)), rates["ops"][first])[0])
                          for first, size in segments(starts, self.depth, self.decoding.max_pack)])
            draw += 1
        return found[:k]

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` (and the predictor's weights), each whole or not at all; then drop the fit's
        checkpoint, if it kept one there."""
        from ..storage import save_tensors_atomic, write_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.predictor is not None:
            save_tensors_atomic(folder / WEIGHTS, self.predictor.state_dict())
        write_atomic(folder / CONFIG, json.dumps({**self.config, "router": "program"}, indent=2) + "\n")
        shutil.rmtree(folder / CHECKPOINT, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path, cm: ColaModel | None = None) -> ProgramRouter:
        """Read a program router folder; with ``cm``, check that it was made for this model (name, weights, depth)
        and load its question encoder. A foreign or damaged folder is one :class:`~cola.errors.RouterError`."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from ..errors import DataError
        from ..storage import read_json

        folder = Path(folder)
        if not (folder / CONFIG).is_file():
            raise RouterError(f"{folder} is not a program router folder (it needs {CONFIG}; make one with `cola "
                              "router fit-program`)")
        try:
            config = read_json(folder / CONFIG)
            if config.get("router") != "program":
                raise RouterError(f"{folder} holds another kind of router ({config.get('router') or 'no router key'}),"
                                  " not a program predictor")
            predictor = None
            if config["routing"] == "trained":
                shape = config["predictor"]
                predictor = ProgramPredictor(int(config["depth"]), int(shape["q_dim"]), int(shape["d_model"]),
                                             int(shape["heads"]), int(shape["blocks"]))
                predictor.load_state_dict(load_file(str(folder / WEIGHTS)))
                predictor.eval()
            elif config["routing"] not in ("random", "menu"):
                raise ValueError(f"unknown routing {config['routing']!r}")
        except RouterError:
            raise
        except (SafetensorError, OSError, KeyError, RuntimeError, ValueError, TypeError, DataError) as err:
            raise RouterError(f"{folder}: an unreadable program router ({type(err).__name__}: {err}); fit it "
                              "again") from None
        encoder = None
        if cm is not None:
            from ..core.hashes import weights_hash

            expected = {"model": cm.name, "depth": cm.depth, "weights": weights_hash(cm)}
            differ = [f"{k} {config.get(k)!r} (this model: {v!r})" for k, v in expected.items() if config.get(k) != v]
            if differ:
                raise RouterError(f"{folder} was made for another model: {'; '.join(differ)}")
            if predictor is not None:
                encoder = QuestionEncoder(config["encoder"], cm, int(config.get("max_tokens", 512)))
        return cls(config, predictor, encoder)


def route_inputs(router: ProgramRouter, evaluator, samples: Sequence, prefixes=None) -> list[Chain]:
    """The chain of each sample's top program (pass@1; a program that skips every layer runs the last one, as a
    per-layer router's empty path does)."""
    texts = [input_text(evaluator, s) for s in samples]
    return [program_chain(programs[0]) or Chain((router.depth - 1,))
            for programs in router.programs(texts, [s.id for s in samples], 1)]


def untrained_program_router(cm: ColaModel, folder: str | Path, seed: int = 0) -> Path:
    """A program router for ``cm`` whose predictor has seeded random weights and reads the target model's states,
    written to ``folder``: the stand-in the policy contract tests run
    (:meth:`~cola.policies.spec.PolicySpec.example`)."""
    from ..core.hashes import weights_hash

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        predictor = ProgramPredictor(cm.depth, cm.config.hidden_size, d_model=32, heads=4, blocks=1).eval()
    config = {"model": cm.name, "weights": weights_hash(cm), "depth": cm.depth, "routing": "trained",
              "encoder": "target", "predictor": {"q_dim": cm.config.hidden_size, "d_model": 32, "heads": 4,
                                                 "blocks": 1}, "untrained": True}
    return ProgramRouter(config, predictor).save(folder)
