"""Block influence (ShortGPT) equals a direct computation from each layer's input and output; the pruned chains
drop the least influential layers; `cola prune` prints and writes them."""

import json

import pytest
import torch
from helpers import tiny_model

from cola import Chain
from cola.cli import main
from cola.search.prune import block_influence, most_dropped, pruned_chains


def test_block_influence_equals_a_direct_computation_from_hidden_states():
    cm = tiny_model("gemma3_text")  # sliding and global layers, a scaled embedding
    prompts = [torch.randint(3, 96, (1, n), generator=torch.Generator().manual_seed(n)) for n in (7, 12, 5)]
    seen: dict[int, list] = {i: [] for i in range(cm.depth)}
    hooks = [layer.register_forward_hook(lambda module, args, kwargs, out, i=i: seen[i].append(
        (args[0] if args else kwargs["hidden_states"], out[0] if isinstance(out, tuple) else out)), with_kwargs=True)
        for i, layer in enumerate(cm.layers)]
    with torch.inference_mode():
        for ids in prompts:
            cm.model(ids)
    for hook in hooks:
        hook.remove()
    expected = []
    for i in range(cm.depth):
        cosines = torch.cat([torch.nn.functional.cosine_similarity(a[0].double(), b[0].double(), dim=-1)
                             for a, b in seen[i]])
        expected.append(1 - cosines.mean().item())
    got = block_influence(cm, prompts)
    assert max(abs(a - b) for a, b in zip(got, expected)) <= 1e-6


def test_pruned_chains_drop_the_least_influential_layers():
    chains = pruned_chains([0.5, 0.1, 0.3, 0.05, 0.1, 0.9], most=3)
    assert chains == {1: Chain((0, 1, 2, 4, 5)), 2: Chain((0, 1, 2, 5)), 3: Chain((0, 2, 5))}


@pytest.mark.parametrize("depth, most", [(1, 0), (2, 1), (3, 1), (4, 1), (8, 2), (30, 7), (36, 9)])
def test_static_chains_drop_a_quarter_of_the_layers_and_one_of_a_shallow_model(depth, most):
    assert most_dropped(depth) == most


def test_cli_prune_on_the_train_split(smol, data_dir, tmp_path, capsys):
    out = tmp_path / "bi.json"
    assert main(["prune", "--task", "arc_easy", "--split", "train", "--n", "4", "--mode", "score",
                 "--data-dir", str(data_dir), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["split"] == "train" and len(result["block_influence"]) == smol.depth
    assert sorted(result["chains"]) == [str(m) for m in range(1, smol.depth // 4 + 1)]
    least = min(range(smol.depth), key=lambda i: (result["block_influence"][i], -i))
    assert f"   1. layer {least:3d}" in printed
    assert least not in Chain.parse(result["chains"]["1"]).layers and len(Chain.parse(result["chains"]["7"])) == 23
