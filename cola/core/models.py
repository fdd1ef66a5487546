"""The model as CoLa sees it: a pretrained causal LM with its tokenizer, a stack of separately callable decoder
layers (:class:`ColaModel`). Loading one is :mod:`cola.core.loading`."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import UsageError
from .families import Family, family
from .invariant import make_batch_invariant


class ContextTooLong(UsageError):
    """An input longer than the positions the model was trained on."""


@dataclass
class ColaModel:
    """A pretrained causal LM with its tokenizer, seen as a stack of separately callable decoder layers."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    weights: Path | str | None = None  # where the weights came from: a GGUF file, a folder or a hub id
    loaded_weights: str | None = None  # sha256 of the files actually loaded, where verified (a GGUF's conversion)
    chain_configs: dict = field(default_factory=dict, repr=False)  # memo for cola.core.executor.chain_config
    packed_attention: str = "auto"  # how packed rows attend (cola.core.packing.PACKED_MODES; auto: one call on CUDA)
    batch_invariant: bool | None = None  # rows' linear products kept apart (cola.core.invariant); None: on a CPU only

    def __post_init__(self) -> None:
        if self.model is None:  # a stand-in that only names its weights
            return
        if self.batch_invariant is None:
            self.batch_invariant = self.device.type == "cpu"
        make_batch_invariant(self.model, self.batch_invariant)

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
    def family(self) -> Family:
        """The record of the model's family (:mod:`cola.core.families`): the config attributes CoLa reads."""
        return family(self.config)

    @property
    def layer_types(self) -> list[str]:
        """Attention type of each layer (``full_attention`` / ``sliding_attention``)."""
        return self.family.layer_types(self.config, self.depth)

    def moe_block(self, index: int) -> torch.nn.Module | None:
        """Layer ``index``'s mixture-of-experts block (experts and their router are part of the layer), or None."""
        for name in self.family.moe_blocks:
            block = getattr(self.layers[index], name, None)
            if block is not None and hasattr(block, "experts"):
                return block
        return None

    def experts(self, index: int) -> int | None:
        """The number of experts of layer ``index`` when its feed-forward is a mixture of experts, else None."""
        moe = self.moe_block(index)
        if moe is None:
            return None
        experts = moe.experts
        if isinstance(experts, torch.nn.ModuleList):
            return len(experts)
        configured = (getattr(self.config, name, None) for name in self.family.experts)
        return getattr(experts, "num_experts", next((n for n in configured if n is not None), None))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def context_limit(self) -> int | None:
        """The most positions the model was trained on (``max_position_embeddings``), if its config says."""
        return getattr(self.config, "max_position_embeddings", None)

    def context_drop(self, length: int, reserve: int = 0, truncate: bool = False, what: str = "the prompt") -> int:
        """How many tokens to drop from the left of an input of ``length`` tokens that needs ``reserve`` more
        positions (tokens to generate, or an option's continuation) to stay within :attr:`context_limit`: 0 when it
        fits; with ``truncate``, the excess, with a warning; else a :class:`ContextTooLong` error."""
        limit = self.context_limit
        if limit is None or length + reserve <= limit:
            return 0
        need = f"{length} tokens" + (f" + {reserve}" if reserve else "")
        if not truncate or reserve >= limit:
            raise ContextTooLong(f"{what} needs {need} positions, more than the {limit} that {self.name} was trained "
                                 "on; shorten it, or pass --truncate to keep its last tokens")
        drop = length + reserve - limit
        warnings.warn(f"{what} needs {need} positions, more than {self.name}'s {limit}: its first {drop} tokens are "
                      "dropped (--truncate)", stacklevel=2)
        return drop

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


def stack_config(config, layer_types: Sequence[str]):
    """A copy of ``config`` describing a stack of ``len(layer_types)`` layers with these attention types: the config
    of a model whose layer list is a chain (masks, caches and :func:`cola.core.export.export_chain` are built from
    it)."""
    config = copy.deepcopy(config)
    config.num_hidden_layers = len(layer_types)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(layer_types)
    return config

