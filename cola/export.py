"""A chain as a standard Hugging Face checkpoint: the layer list physically rebuilt in chain order.

``export_chain`` writes a folder that plain ``transformers`` loads with ``AutoModelForCausalLM.from_pretrained`` (no
CoLa, no remote code) and that gives the logits and greedy tokens of the chain run through CoLa: the config has
``num_hidden_layers = len(chain)`` and every per-layer setting reordered to the chain (attention types and hence
sliding windows; which layers are dense in a mixture-of-experts stack), each chain position holds its own copy of its
layer's weights (safetensors), and the tokenizer, chat template and generation config come along, with a model card
naming the source model and the chain.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from .chain import Chain
from .errors import UsageError
from .models import ColaModel, moe_block, stack_config
from .store import check_folder

CARD = """---
base_model: {source}
tags: [cola, chain-of-layers]
---
# {source}, chain of layers `{chain}`

This checkpoint is the decoder of `{source}` with its layer list rebuilt in the order of the chain
`{chain}` ({length} layers from a stack of {depth}; layer `i` of this model is layer `chain[i]` of the source, weights
unchanged), written by CoLa `cola export`. It loads with `AutoModelForCausalLM.from_pretrained` and no remote code, and
gives the same logits and greedy tokens as running the chain through CoLa (`cola generate --chain {chain}`).
"""


def chain_layer_config(cm: ColaModel, chain: Chain):
    """The source config rewritten for a stack whose layer ``p`` is source layer ``chain[p]``: its depth, the
    attention type of each position, and which positions are dense in a mixture-of-experts stack."""
    config = stack_config(cm.config, [cm.layer_types[i] for i in chain])
    if hasattr(config, "mlp_only_layers"):  # Qwen2-MoE / Qwen3-MoE: which positions keep a dense MLP
        config.mlp_only_layers = [p for p, i in enumerate(chain) if moe_block(cm.layers[i]) is None]
        config.decoder_sparse_step = 1
    return config


def rebuilt_model(cm: ColaModel, chain: Chain) -> torch.nn.Module:
    """A copy of the model whose decoder holds one copy of its layer per chain position, with the chain's config."""
    config = chain_layer_config(cm, chain)
    layers = cm.decoder.layers
    cm.decoder.layers = torch.nn.ModuleList()  # do not copy the source layers along with the rest
    try:
        model = copy.deepcopy(cm.model)
    finally:
        cm.decoder.layers = layers
    positions = []
    for p, i in enumerate(chain):
        layer = copy.deepcopy(layers[i])
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = p
        positions.append(layer)
    model.model.layers = torch.nn.ModuleList(positions)
    for module in model.modules():
        if hasattr(module, "config") and module.config is cm.config:
            module.config = config
    model.config = config
    return model


def check_export_folder(out: str | Path) -> Path:
    """``out`` as a folder to export into: new, or empty; else a one-line error (checked before a model loads)."""
    out = check_folder(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; pass a new folder")
    return out


def export_chain(cm: ColaModel, chain: Chain, out: str | Path) -> Path:
    """Write ``chain`` of ``cm`` as a standard Hugging Face model folder (see the module's docstring)."""
    out = check_export_folder(out)
    model = rebuilt_model(cm, chain)
    model.save_pretrained(out, safe_serialization=True)
    cm.tokenizer.save_pretrained(out)
    (out / "README.md").write_text(CARD.format(source=cm.name, chain=str(chain), length=len(chain), depth=cm.depth))
    return out
