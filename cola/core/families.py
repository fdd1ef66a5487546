"""One record per model family (a transformers ``model_type``): what CoLa reads from a model of that family to run its
layers one by one, and the tiny random-weight config its tests build (:data:`FAMILIES`).

The executor, the packed attention, the export and loading read a model's record (:func:`family`); the tests build
one tiny model per record and check that each chain gives the logits of the model physically rebuilt in chain order.
Adding a family is one record here: ``tests/test_executor.py`` and its neighbours then test it. Tokenization has no
per-family rule: special tokens (BOS) are the tokenizer's default for every family, as lm-evaluation-harness does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# the config keywords every tiny test model shares: 6 layers, a 96-token vocabulary, grouped-query attention
TINY_COMMON = dict(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, eos_token_id=2, bos_token_id=1, pad_token_id=0,
    tie_word_embeddings=False,
)
_MOE = dict(num_experts_per_tok=2)
_GRANITE = dict(embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.1, logits_scaling=4.0)


@dataclass(frozen=True)
class Family:
    """What CoLa reads from a model of one family. Each ``str`` field names a config attribute (None: the family has
    none)."""

    model_type: str
    tested: bool = True  # the executor is tested exact on it; an untested family loads only with allow_untested
    embedding_multiplier: str | None = None  # scales the token embeddings (Granite)
    logits_scaling: str | None = None  # divides the logits (Granite)
    final_softcapping: str | None = None  # soft-caps the logits (Gemma)
    attention_softcapping: str | None = None  # soft-caps the attention scores (Gemma 2)
    sliding: str | None = None  # where the sliding layers are read: "layer_types" (per layer) or "sliding_window"
    #                             (every layer slides when it is set); None: every layer attends to the full context
    moe_blocks: tuple[str, ...] = ()  # the decoder-layer attributes that may hold a mixture-of-experts block
    experts: tuple[str, ...] = ()  # the config attributes that may give the number of experts
    dense_layers: str | None = None  # lists the layers that keep a dense MLP in a MoE stack (rewritten per chain)
    tiny: dict = field(default_factory=dict, repr=False)  # its tiny test model's config keywords beyond TINY_COMMON

    @property
    def kind(self) -> str:
        """What the executor does for the family, as the README's table groups them: ``mixture of experts`` (a
        router and experts inside the layer), ``multipliers`` (Granite's), ``mixed attention`` (Gemma's sliding and
        global layers, soft-capping) or ``dense``."""
        if self.moe_blocks:
            return "mixture of experts"
        if self.embedding_multiplier:
            return "multipliers"
        return "mixed attention" if self.final_softcapping else "dense"

    def read(self, config, quirk: str):
        """The value in ``config`` of the attribute this record names for ``quirk`` (a field of the record, such as
        ``"logits_scaling"``); None when the family has no such attribute or the config leaves it unset."""
        name = getattr(self, quirk)
        return None if name is None else getattr(config, name, None)

    def layer_types(self, config, depth: int) -> list[str]:
        """The attention type (``full_attention`` / ``sliding_attention``) of each of the ``depth`` layers."""
        types = getattr(config, "layer_types", None) if self.sliding == "layer_types" else None
        if types:
            return list(types)[:depth]
        window = getattr(config, "sliding_window", None) if self.sliding else None
        return ["sliding_attention" if window is not None else "full_attention"] * depth


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llama"),
    Family("mistral", sliding="sliding_window", tiny=dict(sliding_window=5)),
    Family("qwen2", sliding="layer_types"),
    Family("qwen3", sliding="layer_types", tiny=dict(head_dim=16)),
    Family("olmo2"),
    Family("gemma2", final_softcapping="final_logit_softcapping", attention_softcapping="attn_logit_softcapping",
           sliding="layer_types",
           tiny=dict(head_dim=16, sliding_window=5, final_logit_softcapping=30.0, attn_logit_softcapping=20.0,
                     query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention"] * 3)),
    Family("gemma3_text", final_softcapping="final_logit_softcapping", attention_softcapping="attn_logit_softcapping",
           sliding="layer_types",
           tiny=dict(head_dim=16, sliding_window=5, final_logit_softcapping=30.0,
                     layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2)),
    Family("phi3", sliding="sliding_window"),
    Family("granite", embedding_multiplier="embedding_multiplier", logits_scaling="logits_scaling", tiny=_GRANITE),
    Family("olmoe", moe_blocks=("mlp",), experts=("num_experts",), tiny=dict(num_experts=4, **_MOE)),
    Family("mixtral", sliding="sliding_window", moe_blocks=("mlp", "block_sparse_moe"), experts=("num_local_experts",),
           tiny=dict(num_local_experts=4, **_MOE)),
    Family("qwen2_moe", sliding="layer_types", moe_blocks=("mlp",), experts=("num_experts",),
           dense_layers="mlp_only_layers",
           tiny=dict(num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=48, mlp_only_layers=[0, 3],
                     **_MOE)),
    Family("qwen3_moe", sliding="sliding_window", moe_blocks=("mlp",), experts=("num_experts",),
           dense_layers="mlp_only_layers",
           tiny=dict(head_dim=16, num_experts=4, moe_intermediate_size=32, mlp_only_layers=[1], **_MOE)),
    Family("granitemoe", embedding_multiplier="embedding_multiplier", logits_scaling="logits_scaling",
           moe_blocks=("block_sparse_moe", "mlp"), experts=("num_local_experts",),
           tiny=dict(num_local_experts=4, **_GRANITE, **_MOE)),
)}

# An untested family (loaded with allow_untested) is read for every quirk any record names; the load-time check
# (cola.core.executor.check_exact) then refuses it if its full chain differs from its own forward.
UNTESTED = Family(
    "untested", tested=False, embedding_multiplier="embedding_multiplier", logits_scaling="logits_scaling",
    final_softcapping="final_logit_softcapping", attention_softcapping="attn_logit_softcapping",
    sliding="layer_types", moe_blocks=("mlp", "block_sparse_moe"), experts=("num_experts", "num_local_experts"),
    dense_layers="mlp_only_layers")


def family(config) -> Family:
    """The record of ``config``'s ``model_type``, or :data:`UNTESTED`."""
    return FAMILIES.get(getattr(config, "model_type", None), UNTESTED)


def tested_families() -> tuple[str, ...]:
    """The ``model_type`` of every family the executor is tested to run exactly."""
    return tuple(name for name, record in FAMILIES.items() if record.tested)


def tiny_config(model_type: str):
    """The config of ``model_type``'s tiny random-weight test model (6 layers, 96-token vocabulary)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **TINY_COMMON, **FAMILIES[model_type].tiny)
