"""A content hash of the weights a model was loaded from: what every result records (:mod:`cola.evaluation.provenance`)
and an export's config names as its source (:mod:`cola.core.export`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .loading import WEIGHT_SUFFIXES, cache_root, file_sha256
from .models import ColaModel


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
