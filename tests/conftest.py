"""Shared fixtures: tiny random-weight models of every supported family, the embedded real model, and a reference
model that physically holds the layers in chain order (the ground truth the executor must match)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; set before transformers reads it

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GraniteConfig,
    GraniteForCausalLM,
    GraniteMoeConfig,
    GraniteMoeForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

import cola.loading
from cola import Chain, ColaModel

DATA_DIR = Path(os.environ.get("COLA_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
VOCAB = 96
EOS = 2
PAD = 0

_COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, eos_token_id=EOS, bos_token_id=1, pad_token_id=PAD,
    tie_word_embeddings=False,
)

_MOE = dict(num_experts_per_tok=2)
_GRANITE = dict(embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.1, logits_scaling=4.0)

# family -> (model class, config); Gemma2/3 mix sliding (window 5) and global layers, Mistral slides everywhere; the
# Qwen MoE stacks mix dense and sparse layers; Gemma2 soft-caps attention logits; Granite scales embeddings, residuals,
# attention and logits
FAMILIES = {
    "llama": (LlamaForCausalLM, lambda: LlamaConfig(**_COMMON)),
    "qwen2": (Qwen2ForCausalLM, lambda: Qwen2Config(**_COMMON)),
    "qwen3": (Qwen3ForCausalLM, lambda: Qwen3Config(**_COMMON, head_dim=16)),
    "mistral": (MistralForCausalLM, lambda: MistralConfig(**_COMMON, sliding_window=5)),
    "olmo2": (Olmo2ForCausalLM, lambda: Olmo2Config(**_COMMON)),
    "gemma3": (
        Gemma3ForCausalLM,
        lambda: Gemma3TextConfig(
            **_COMMON, head_dim=16, sliding_window=5, final_logit_softcapping=30.0,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
        ),
    ),
    "gemma2": (
        Gemma2ForCausalLM,
        lambda: Gemma2Config(
            **_COMMON, head_dim=16, sliding_window=5, final_logit_softcapping=30.0, attn_logit_softcapping=20.0,
            query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention"] * 3,
        ),
    ),
    "phi3": (Phi3ForCausalLM, lambda: Phi3Config(**_COMMON)),
    "granite": (GraniteForCausalLM, lambda: GraniteConfig(**_COMMON, **_GRANITE)),
    "olmoe": (OlmoeForCausalLM, lambda: OlmoeConfig(**_COMMON, num_experts=4, **_MOE)),
    "mixtral": (MixtralForCausalLM, lambda: MixtralConfig(**_COMMON, num_local_experts=4, **_MOE)),
    "qwen2_moe": (
        Qwen2MoeForCausalLM,
        lambda: Qwen2MoeConfig(**_COMMON, num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                               mlp_only_layers=[0, 3], **_MOE),
    ),
    "qwen3_moe": (
        Qwen3MoeForCausalLM,
        lambda: Qwen3MoeConfig(**_COMMON, head_dim=16, num_experts=4, moe_intermediate_size=32, mlp_only_layers=[1],
                               **_MOE),
    ),
    "granitemoe": (GraniteMoeForCausalLM, lambda: GraniteMoeConfig(**_COMMON, num_local_experts=4, **_GRANITE, **_MOE)),
}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over VOCAB tokens ``t0 .. t95``; ids 0/1/2 are pad/bos/eos."""
    vocab = {f"t{i}": i for i in range(VOCAB)}
    vocab.update({"<pad>": PAD, "<s>": 1, "</s>": EOS})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="left"
    )


def tiny_model(family: str, seed: int = 0) -> ColaModel:
    """A random-weight model of ``family`` with 6 layers, float32 on CPU, weights scaled up so that layers matter."""
    model_cls, make_config = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(make_config()).eval()
    with torch.no_grad():  # the default init (std 0.02) makes every layer nearly the identity; widen it
        for name, param in model.named_parameters():
            if param.dim() >= 2:  # matrices, and the stacked matrices of a mixture of experts
                param.normal_(0.0, 0.15)
    return ColaModel(model=model, tokenizer=tiny_tokenizer(), name=f"tiny-{family}")


def reference_model(model: torch.nn.Module, chain: Chain) -> torch.nn.Module:
    """Ground truth for a chain: a deep copy of the model whose ``ModuleList`` holds a copy of each chain layer, in
    chain order, each with its own ``layer_idx``, and a config whose depth and per-layer types match."""
    ref = copy.deepcopy(model)
    types = getattr(model.config, "layer_types", None)
    layers = torch.nn.ModuleList()
    for position, index in enumerate(chain):
        layer = copy.deepcopy(model.model.layers[index])
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


_PACKAGED: dict[tuple, ColaModel] = {}


def _load_once(spec="smollm2-135m", device=None, dtype=None, attn_implementation=None, allow_untested=False):
    """``load_model``, with each packaged model (an alias: the real weights) loaded once per test session and handed
    to every later caller, in-process CLI commands included; other models (tiny folders) load each time."""
    from cola.loading import ALIASES

    key = (spec, str(device or "cpu"), str(dtype).removeprefix("torch.") if dtype else "float32",
           attn_implementation, allow_untested)
    if spec not in ALIASES:
        return _load_model(spec, device, dtype, attn_implementation, allow_untested)
    if key not in _PACKAGED:
        _PACKAGED[key] = _load_model(spec, device, dtype, attn_implementation, allow_untested)
    return _PACKAGED[key]


_load_model = cola.loading.load_model
cola.loading.load_model = _load_once  # the library and the CLI look it up in cola.loading when they load


@pytest.fixture(scope="session")
def smol() -> ColaModel:
    """The embedded default model (SmolLM2-135M-Instruct), loaded once per test session."""
    return _load_once("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma() -> ColaModel:
    """The second real model (Gemma 3 270M base: 18 layers, five sliding to one global), loaded once per test
    session; installed by the test set-up (`bash dev/setup.sh --test`)."""
    return _load_once("gemma3-270m", device="cpu")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny random-weight Llama saved as a model folder, for commands run in a subprocess."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    cm = tiny_model("llama")
    cm.model.save_pretrained(folder)
    cm.tokenizer.save_pretrained(folder)
    return folder
