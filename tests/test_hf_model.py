"""A chain as a Hugging Face model (`as_hf(cm, chain)`): the source's own class with the layer list in chain order,
every weight shared; its logits, greedy, sampled and beam-search tokens equal the physically rebuilt model's, and a
text-generation pipeline runs on it."""

from __future__ import annotations

import pytest
import torch
from helpers import EOS, PAD, reference_model, tiny_model
from transformers import pipeline

from cola import Chain
from cola.core.export import as_hf
from cola.errors import ChainError

IDS = torch.tensor([[1, 7, 9, 11, 13, 17, 19, 23, 29]])


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_a_chain_as_a_hf_model_equals_the_rebuilt_model_and_copies_no_weight(family):
    cm = tiny_model(family)
    before = {name: p.data_ptr() for name, p in cm.model.named_parameters()}
    indices = [m.layer_idx for m in cm.model.modules() if hasattr(m, "layer_idx")]
    for chain in (Chain.parse("0-2,2,4-5"), Chain.parse("5,4,3,2,1,0,0")):
        hf, ref = as_hf(cm, chain), reference_model(cm.model, chain)
        assert type(hf) is type(cm.model) and hf.config.cola_chain == str(chain)
        assert hf.config.num_hidden_layers == len(chain) and cm.config.num_hidden_layers == 6  # source untouched
        with torch.inference_mode():
            assert torch.equal(hf(IDS).logits, ref(IDS).logits), str(chain)
        common = dict(max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD)
        assert torch.equal(hf.generate(IDS, do_sample=False, **common), ref.generate(IDS, do_sample=False, **common))
        torch.manual_seed(3)
        sampled = hf.generate(IDS, do_sample=True, top_k=0, **common)
        torch.manual_seed(3)
        assert torch.equal(sampled, ref.generate(IDS, do_sample=True, top_k=0, **common))
        assert torch.equal(hf.generate(IDS, num_beams=3, do_sample=False, **common),
                           ref.generate(IDS, num_beams=3, do_sample=False, **common))
        params = {p.data_ptr() for p in hf.parameters()}
        assert params <= set(before.values())  # every parameter is the source's: nothing copied
    assert {name: p.data_ptr() for name, p in cm.model.named_parameters()} == before
    assert [m.layer_idx for m in cm.model.modules() if hasattr(m, "layer_idx")] == indices  # cache slots untouched


def test_a_pipeline_runs_on_it_and_a_chain_out_of_range_is_one_clear_error():
    cm = tiny_model("llama")
    generator = pipeline("text-generation", model=as_hf(cm, "0-3,3,4-5"), tokenizer=cm.tokenizer, device="cpu")
    out = generator("t5 t6 t7", max_new_tokens=4, do_sample=False)
    assert out[0]["generated_text"].startswith("t5 t6 t7")
    with pytest.raises(ChainError, match="out of range"):
        as_hf(cm, "0-6")
