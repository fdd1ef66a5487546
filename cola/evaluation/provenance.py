"""Provenance: what a result was computed with, recorded beside it (a run's ``config.json``, an eval's summary, a
router's config): a content hash of the weights, the dtype, the software and the device."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .._version import __version__
from ..core.loading import WEIGHT_SUFFIXES, cache_root, file_sha256, processor
from ..core.models import ColaModel
from .evaluator import Evaluator


def _weight_files(weights: Path | str) -> list[Path]:
    """The files holding the weights: the file itself, a folder's weight files, or a hub id's cached snapshot."""
    if isinstance(weights, str):
        try:
            from huggingface_hub import snapshot_download

            weights = Path(snapshot_download(weights, local_files_only=True))
        except Exception:  # not in the local hub cache (it was just loaded, so this is rare)
            return []
    if weights.is_file():
        return [weights]
    return sorted(p for p in weights.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def _file_sha256(path: Path, memo: dict) -> str:
    """SHA-256 of a file's content, memoised by path, size and modification time."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in memo:
        memo[key] = file_sha256(path)
    return memo[key]


def weights_hash(cm: ColaModel) -> str:
    """A content hash of the loaded weights, ``sha256:<hex>``: of the weight files (GGUF or safetensors; cached in
    ``$COLA_CACHE/weight-hashes.json`` by path, size and time, so a model is read once), or, for a model with no
    files (built in memory), of its parameters."""
    files = _weight_files(cm.weights) if cm.weights is not None else []
    digest = hashlib.sha256()
    if files:
        memo_path = cache_root() / "weight-hashes.json"
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        for path in files:
            digest.update(f"{path.name}:{_file_sha256(path, memo)}\n".encode())
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
            os.replace(tmp, memo_path)
        except OSError:  # a read-only cache only costs the next load a re-hash
            pass
    else:
        for name, tensor in sorted(cm.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def environment(cm: ColaModel) -> dict:
    """The software and device a result was computed with: CoLa, Python, torch, transformers, the device (a GPU's
    name; on a CPU its :func:`~cola.core.loading.processor`, whose kernels decide bf16's last bits)."""
    import platform

    import transformers

    device = str(cm.device)
    if cm.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(cm.device)})"
    found = {"processor": processor()} if cm.device.type == "cpu" else {}
    return {"cola": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device, **found}


def evaluator_header(evaluator: Evaluator) -> dict:
    """What decides an evaluator's outcomes, with its provenance: the model (:func:`model_header`), the task and how
    it is asked, the CoLa version and the environment (software and device)."""
    return {**model_header(evaluator.cm), "task": evaluator.task.name, "mode": evaluator.config.mode,
            "chat": evaluator.config.chat, "score_style": evaluator.config.score_style,
            "max_new_tokens": evaluator.config.max_new_tokens or evaluator.task.max_new_tokens, "version": __version__,
            "environment": environment(evaluator.cm)}


def model_header(cm: ColaModel) -> dict:
    """What identifies the model a result was computed with: its name, a content hash of its weights as given (the
    GGUF file, a folder's files), of the weights actually loaded where they are others (a GGUF's verified
    conversion), its dtype, whether its products are batch-invariant (:mod:`cola.core.invariant`) and its depth. A
    resume under other weights, loaded weights, dtype or invariance is refused."""
    weights = weights_hash(cm)
    loaded = {"loaded_weights": cm.loaded_weights} if cm.loaded_weights not in (None, weights) else {}
    return {"model": cm.name, "weights": weights, **loaded, "dtype": str(cm.dtype).removeprefix("torch."),
            "batch_invariant": cm.batch_invariant, "depth": cm.depth}


