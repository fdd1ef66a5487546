"""Every family of the study and its follow-ups, refusals of what cannot run exactly, and chains exported as standard
checkpoints that plain transformers loads with the chain's logits and tokens."""

import json
import re
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import EOS, FAMILIES, PAD, tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM, CohereConfig, CohereForCausalLM, StableLmConfig, StableLmForCausalLM

from cola import Chain, ModelLoadError, load_model
from cola.cli import main
from cola.core.executor import forward
from cola.core.export import export_chain
from cola.core.families import FAMILIES as RECORDS
from cola.core.families import TINY_COMMON, UNTESTED, family, tiny_config
from cola.inference.generation import generate

CHAIN = Chain.parse("0-2,2,2,3,5")  # a repeat, a skip: the chain the issue tried


@pytest.mark.parametrize("model_type", FAMILIES)
def test_each_family_record_builds_a_tiny_model_that_sets_every_quirk_it_names(model_type):
    """A record's tiny model is of its family and sets every config attribute the record names, so the tests built
    from it (chains against the rebuilt model, export, packing) run each quirk the executor reads."""
    record, config = RECORDS[model_type], tiny_config(model_type)
    assert family(config) is record and record.tested and config.model_type == model_type
    for quirk in ("embedding_multiplier", "logits_scaling", "final_softcapping", "dense_layers"):
        assert getattr(record, quirk) is None or getattr(config, getattr(record, quirk)) is not None, quirk
    assert record.sliding is None or hasattr(config, record.sliding)
    cm = tiny_model(model_type)
    slides = record.sliding is not None and record.tiny.get("sliding_window") is not None  # the record's own window
    assert ("sliding_attention" in cm.layer_types) == slides
    assert (cm.experts(5) == 4) == bool(record.moe_blocks)


def test_the_readme_lists_every_tested_family_in_the_row_of_its_kind():
    """The README's family table is checked against the records: each row lists exactly the families of its kind."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    start = readme.index("| kind | families (`model_type`) | what the executor does for them |")
    rows = {}
    for line in readme[start + 2:]:
        if not line.startswith("|"):
            break
        kind, families, _ = (cell.strip() for cell in line.strip("|").split("|"))
        rows[kind] = set(re.findall(r"`(\w+)`", families))
    want = {}
    for name, record in RECORDS.items():
        want.setdefault(record.kind, set()).add(name)
    assert rows == want, "README.md's family table should read:\n" + "\n".join(
        f"| {kind} | {', '.join(f'`{n}`' for n in names)} | ... |" for kind, names in want.items())


def test_an_unknown_family_reads_every_quirk_a_record_names():
    assert family(object()) is UNTESTED and not UNTESTED.tested
    for quirk in ("embedding_multiplier", "logits_scaling", "final_softcapping", "attention_softcapping",
                  "dense_layers"):
        assert getattr(UNTESTED, quirk) in {getattr(r, quirk) for r in RECORDS.values()} - {None}, quirk


def _save(model, folder):
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_an_untested_family_is_refused_unless_allowed(tmp_path):
    folder = _save(StableLmForCausalLM(StableLmConfig(**TINY_COMMON)), tmp_path / "stablelm")
    with pytest.raises(ModelLoadError, match="'stablelm' model, a family CoLa is not tested.*--allow-untested"):
        load_model(str(folder), device="cpu")
    cm = load_model(str(folder), device="cpu", allow_untested=True)  # exact, so the check lets it through
    assert cm.config.model_type == "stablelm"


def test_a_forward_the_executor_does_not_reproduce_is_refused(tmp_path, capsys):
    """Cohere multiplies its logits by ``logit_scale`` in its forward; CoLa's head does not, so the self-check must
    refuse it, naming the difference."""
    folder = _save(CohereForCausalLM(CohereConfig(**TINY_COMMON, logit_scale=0.5)), tmp_path / "cohere")
    with pytest.raises(ModelLoadError, match=r"differs from the model's own forward by up to [0-9.]+ in the logits"):
        load_model(str(folder), device="cpu", allow_untested=True)
    assert main(["layers", "--model", str(folder), "--device", "cpu"]) == 2
    assert "'cohere' model" in capsys.readouterr().err
    assert main(["layers", "--model", str(folder), "--device", "cpu", "--allow-untested"]) == 2
    assert "differs from the model's own forward" in capsys.readouterr().err


def test_a_changed_forward_of_a_tested_family_is_refused(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    folder = _save(tiny_model("llama").model, tmp_path / "llama")
    assert load_model(str(folder), device="cpu").config.model_type == "llama"
    original = LlamaForCausalLM.forward

    def scaled(self, *args, **kwargs):  # what Granite's forward did to CoLa before it knew the multiplier
        out = original(self, *args, **kwargs)
        out.logits = out.logits * 1.01
        return out

    monkeypatch.setattr(LlamaForCausalLM, "forward", scaled)
    with pytest.raises(ModelLoadError, match="differs from the model's own forward"):
        load_model(str(folder), device="cpu")


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "qwen3_moe", "mixtral", "granitemoe", "llama"])
def test_cola_layers_names_experts(family, tmp_path, capsys):
    cm = tiny_model(family)
    folder = _save(cm.model, tmp_path / family)
    assert main(["layers", "--model", str(folder), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == cm.depth
    for i, line in enumerate(lines):
        moe = cm.experts(i) is not None
        assert ("mixture of 4 experts" in line) == moe and ("dense" in line) == (not moe)
    if family == "qwen2_moe":
        assert [cm.experts(i) for i in range(6)] == [None, 4, 4, None, 4, 4]


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_chain_loads_with_transformers_and_gives_the_chain(family, tmp_path):
    cm = tiny_model(family)
    out = export_chain(cm, CHAIN, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == len(CHAIN)
    if getattr(cm.config, "layer_types", None) is not None:
        assert config["layer_types"] == [cm.layer_types[i] for i in CHAIN]
    if "mlp_only_layers" in config:
        assert config["mlp_only_layers"] == [p for p, i in enumerate(CHAIN) if cm.experts(i) is None]
    assert sorted(p.suffix for p in out.iterdir() if "model" in p.name and p.suffix in (".safetensors", ".bin")) == \
        [".safetensors"]
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert len(model.model.layers) == len(CHAIN)
    ids = torch.randint(3, 96, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert (model(ids).logits - forward(cm, CHAIN, ids)).abs().max().item() <= 1e-4
        tokens = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    assert tokens[0, 9:].tolist() == generate(cm, CHAIN, ids, max_new_tokens=8)[0].tokens


def test_exporting_the_full_chain_round_trips_the_model(tmp_path):
    cm = tiny_model("qwen2_moe")
    model = AutoModelForCausalLM.from_pretrained(export_chain(cm, Chain.full(cm.depth), tmp_path / "full"))
    source = cm.model.state_dict()
    exported = model.state_dict()
    assert exported.keys() == source.keys()
    assert all(torch.equal(exported[k], source[k]) for k in source)
    written = {k: v for k, v in model.config.to_diff_dict().items() if k not in ("architectures", "dtype")}
    assert written.pop("cola_chain") == "0-5"
    assert written == {k: v for k, v in cm.config.to_diff_dict().items() if k not in ("architectures", "dtype")}


def test_an_export_carries_its_chain_a_hub_model_card_and_a_mergekit_recipe(tmp_path):
    cm = tiny_model("llama")
    cm.name = "HuggingFaceTB/SmolLM2-135M-Instruct"  # as if loaded by hub id
    out = export_chain(cm, Chain.parse("0-3,3,4,1"), tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["cola_chain"] == "0-3,3-4,1"
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-generation"
    assert front["base_model"] == cm.name and front["base_model_relation"] == "merge"
    assert front["cola_chain"] == "0-3,3-4,1" and front["cola_source_weights"].startswith("sha256:")
    recipe = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert recipe["merge_method"] == "passthrough"
    assert [s["sources"][0]["layer_range"] for s in recipe["slices"]] == [[0, 4], [3, 5], [1, 2]]
    assert all(s["sources"][0]["model"] == cm.name for s in recipe["slices"])


def test_export_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        export_chain(tiny_model("llama"), CHAIN, tmp_path / "out")


PLAIN = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
out = model.generate(ids, max_new_tokens=12, do_sample=False)
print(json.dumps({"tokens": out[0, ids.shape[1]:].tolist(), "layers": len(model.model.layers),
                  "cola_imported": any(m == "cola" or m.startswith("cola.") for m in sys.modules)}))
"""


def test_embedded_skip_chain_exported_runs_in_plain_transformers(smol, tmp_path, capsys):
    chain, prompt = "0-9,12-29", "What is the capital of France? Answer in one word."
    out = tmp_path / "smol-skip"
    assert main(["export", "--chain", chain, "--out", str(out)]) == 0
    assert "0-9,12-29 (28 layers)" in capsys.readouterr().out
    assert "`0-9,12-29`" in (out / "README.md").read_text() and "smollm2-135m" in (out / "README.md").read_text()
    assert main(["generate", "--chain", chain, "--prompt", prompt, "--chat", "--json", "--max-new-tokens", "12"]) == 0
    expected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tokens"]
    result = subprocess.run([sys.executable, "-c", PLAIN, str(out), prompt], capture_output=True, text=True,
                            check=True, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    plain = json.loads(result.stdout.strip().splitlines()[-1])
    assert plain == {"tokens": expected, "layers": 28, "cola_imported": False}
