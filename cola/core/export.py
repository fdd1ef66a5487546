"""A chain as a standard Hugging Face checkpoint: the layer list physically rebuilt in chain order.

``export_chain`` writes a folder that plain ``transformers`` loads with ``AutoModelForCausalLM.from_pretrained`` (no
CoLa, no remote code) and that gives the logits and greedy tokens of the chain run through CoLa: the config has
``num_hidden_layers = len(chain)`` and every per-layer setting reordered to the chain (attention types and hence
sliding windows; which layers are dense in a mixture-of-experts stack), each chain position holds its own copy of its
layer's weights (safetensors), the chain is in the config (``cola_chain``), and the tokenizer, chat template and
generation config come along, with a model card for the hub (``library_name``, ``pipeline_tag``, the source as
``base_model``, the chain and the source weights' hash) and the same stack as a mergekit passthrough merge
(``mergekit.yaml``).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
import yaml

from ..errors import UsageError
from ..storage import check_folder, disk_full
from .chain import Chain
from .models import ColaModel, stack_config

CARD = """---
{front}---
# {source}, chain of layers `{chain}`

This checkpoint is the decoder of `{source}` with its layer list rebuilt in the order of the chain
`{chain}` ({length} layers from a stack of {depth}; layer `i` of this model is layer `chain[i]` of the source, weights
unchanged; source weights {weights}), written by CoLa `cola export`. It loads with `AutoModelForCausalLM.from_pretrained`
and no remote code, and gives the same logits and greedy tokens as running the chain through CoLa (`cola generate
--chain {chain}`). The chain is in `config.json` (`cola_chain`); `mergekit.yaml` is the same stack as a mergekit
passthrough merge.
"""


def card(cm: ColaModel, chain: Chain) -> str:
    """The model card of an exported chain: hub metadata (``library_name``, ``pipeline_tag``, the source as
    ``base_model`` with ``base_model_relation: merge`` where the source is a hub model) and what the checkpoint is."""
    from .hashes import weights_hash
    from .aliases import ALIAS_HUB_IDS

    source = ALIAS_HUB_IDS.get(cm.name, cm.name)
    on_hub = not Path(source).expanduser().exists() and source.count("/") == 1 and not source.endswith(".gguf")
    front = {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": ["cola", "chain-of-layers"],
             **({"base_model": source, "base_model_relation": "merge"} if on_hub else {}),
             "cola_chain": str(chain), "cola_source_weights": weights_hash(cm)}
    return CARD.format(front=yaml.safe_dump(front, sort_keys=False), source=cm.name, chain=str(chain),
                       length=len(chain), depth=cm.depth, weights=front["cola_source_weights"])


def mergekit_yaml(source: str, chain: Chain, dtype: str = "float32") -> str:
    """The chain as a mergekit passthrough merge of ``source``: one slice per run of consecutive layers, in order."""
    runs: list[list[int]] = []
    for layer in chain:
        if runs and layer == runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([layer, layer + 1])
    slices = [{"sources": [{"model": source, "layer_range": run}]} for run in runs]
    return yaml.safe_dump({"slices": slices, "merge_method": "passthrough", "dtype": dtype}, sort_keys=False)


def chain_layer_config(cm: ColaModel, chain: Chain):
    """The source config rewritten for a stack whose layer ``p`` is source layer ``chain[p]``: its depth, the
    attention type of each position, and which positions are dense in a mixture-of-experts stack."""
    config = stack_config(cm.config, [cm.layer_types[i] for i in chain])
    dense = cm.family.dense_layers
    if dense is not None and hasattr(config, dense):  # Qwen2-MoE / Qwen3-MoE: which positions keep a dense MLP
        setattr(config, dense, [p for p, i in enumerate(chain) if cm.moe_block(i) is None])
        config.decoder_sparse_step = 1
    return config


def rebuilt_model(cm: ColaModel, chain: Chain, share: bool = False) -> torch.nn.Module:
    """The model with its decoder's layer list rebuilt in chain order, with the chain's config: position ``p`` is
    layer ``chain[p]`` and owns cache slot ``p``. With ``share`` the result holds no weights of its own (every module
    refers to the source's parameters; only the modules that carry a layer index are shallow copies), so it costs no
    memory and is what :meth:`ColaModel.as_hf` hands out; otherwise every position holds its own copy of its layer's
    weights (what :func:`export_chain` writes)."""
    chain = Chain.parse(str(chain), cm.depth)  # a chain out of range is one clear error
    config = chain_layer_config(cm, chain)
    layers = cm.decoder.layers
    if share:
        model, decoder = _shallow(cm.model), _shallow(cm.decoder)
        model._modules["model"] = decoder
        positions = [_reindexed(layers[i], p) for p, i in enumerate(chain)]
        decoder._modules["layers"] = torch.nn.ModuleList(positions)
        renamed = [model, decoder] + [m for layer in positions for m in layer.modules()]
    else:
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
        renamed = list(model.modules())
    for module in renamed:
        if getattr(module, "config", None) is cm.config:
            module.config = config
    model.config = config
    return model


def as_hf(cm: ColaModel, chain: Chain | str) -> torch.nn.Module:
    """``chain`` (or its notation) as a Hugging Face model of the source's own class (a ``PreTrainedModel`` with
    ``generate``): its layer list in chain order, each position with its own cache slot, every weight shared with
    ``cm`` (no copy). ``model.generate`` (greedy, sampling, beam search), ``pipeline("text-generation", model=...,
    tokenizer=cm.tokenizer)`` and lm-eval's ``HFLM(pretrained=...)`` take it; its config records the chain
    (``cola_chain``)."""
    chain = Chain.parse(str(chain), cm.depth)
    model = rebuilt_model(cm, chain, share=True)
    model.config.cola_chain = str(chain)
    return model


def _shallow(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` sharing its parameters, buffers and submodules (its own submodule dict, to replace some)."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def _reindexed(module: torch.nn.Module, position: int) -> torch.nn.Module:
    """``module`` with every submodule that carries a ``layer_idx`` replaced by a shallow copy set to ``position``
    (the cache slot it writes), all weights shared."""
    if not any(hasattr(m, "layer_idx") for m in module.modules()):
        return module
    clone = _shallow(module)
    if hasattr(clone, "layer_idx"):
        clone.layer_idx = position
    for name, child in module._modules.items():
        if child is not None:
            clone._modules[name] = _reindexed(child, position)
    return clone


def check_export_folder(out: str | Path) -> Path:
    """``out`` as a folder to export into: new, or empty; else a one-line error (checked before a model loads)."""
    out = check_folder(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; pass a new folder")
    return out


def export_chain(cm: ColaModel, chain: Chain, out: str | Path) -> Path:
    """Write ``chain`` of ``cm`` as a standard Hugging Face model folder (see the module's docstring)."""
    out = check_export_folder(out)
    from .aliases import ALIAS_HUB_IDS

    model = rebuilt_model(cm, chain)
    model.config.cola_chain = str(chain)
    with disk_full(out):
        try:
            model.save_pretrained(out, safe_serialization=True)
            cm.tokenizer.save_pretrained(out)
            (out / "README.md").write_text(card(cm, chain))
            (out / "mergekit.yaml").write_text(mergekit_yaml(ALIAS_HUB_IDS.get(cm.name, cm.name), chain,
                                                             str(cm.dtype).removeprefix("torch.")))
        except BaseException:  # a full disk or Ctrl-C: no half export is left (the folder was new or empty)
            shutil.rmtree(out, ignore_errors=True)
            raise
    return out
