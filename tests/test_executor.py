"""The executor on tiny random-weight models of every family: the full chain is the model itself, any chain is the
model physically rebuilt in chain order, cached decoding is recomputation, padding changes nothing."""

import pytest
import torch
from helpers import EOS, FAMILIES, PAD, random_chains, reference_model, tiny_model
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from cola import Chain
from cola.core.executor import AppendLayer, chain_config, chain_layer_types, forward, new_cache
from cola.inference.generation import generate

FIXED_CHAINS = ["0-5", "0,0,1-5", "0-2,2,2,3-5", "5,4,3,2,1,0", "0,1,4,5", "2", "0-5,0-5"]


def _ids(seed: int, batch: int = 2, length: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 96, (batch, length), generator=g)


def _chains(depth: int) -> list[Chain]:
    return [Chain.parse(c) for c in FIXED_CHAINS] + random_chains(depth, 5, seed=7)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny(request):
    return tiny_model(request.param)


def test_full_chain_is_the_model(tiny):
    ids = _ids(0)
    with torch.inference_mode():
        expected = tiny.model(ids).logits
    got = forward(tiny, Chain.full(tiny.depth), ids)
    assert (got - expected).abs().max().item() <= 1e-4


def test_full_chain_generate_is_model_generate(tiny):
    from cola.inference.generation import generate

    ids = _ids(1, batch=1)
    expected = tiny.model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    got = generate(tiny, Chain.full(tiny.depth), ids, max_new_tokens=12)[0].tokens
    assert got == expected[0, ids.shape[1] :].tolist()[: len(got)]
    assert len(got) == expected.shape[1] - ids.shape[1]


def test_chain_equals_physically_rebuilt_model(tiny):
    ids = _ids(2)
    for chain in _chains(tiny.depth):
        ref = reference_model(tiny.model, chain)
        with torch.inference_mode():
            expected = ref(ids).logits
        got = forward(tiny, chain, ids)
        assert (got - expected).abs().max().item() <= 1e-4, str(chain)
        expected_tokens = ref.generate(ids[:1], max_new_tokens=8, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
        got_tokens = generate(tiny, chain, ids[:1], max_new_tokens=8)[0].tokens
        assert got_tokens == expected_tokens[0, ids.shape[1] :].tolist(), str(chain)


def test_cached_decoding_equals_recompute(tiny):
    ids = _ids(3, batch=1, length=14)
    for chain in [Chain.parse("0-2,2,2,3-5"), Chain.parse("5,4,3,2,1,0,0")]:
        full = forward(tiny, chain, ids)
        cache = new_cache(tiny, chain)
        steps = [forward(tiny, chain, ids[:, :6], cache=cache)]
        for t in range(6, ids.shape[1]):
            steps.append(forward(tiny, chain, ids[:, t : t + 1], cache=cache))
        assert len(cache.layers) == len(chain)  # one slot per chain position, not per distinct layer
        assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-4


def test_padded_batch_equals_each_sample_alone(tiny):
    chain = Chain.parse("0-3,3,1,4-5")
    short, long_ = _ids(4, 1, 6)[0].tolist(), _ids(5, 1, 10)[0].tolist()
    ids = torch.tensor([[PAD] * 4 + short, long_])
    mask = torch.tensor([[0] * 4 + [1] * 6, [1] * 10])
    batched = forward(tiny, chain, ids, mask)
    alone_short = forward(tiny, chain, torch.tensor([short]))
    alone_long = forward(tiny, chain, torch.tensor([long_]))
    assert (batched[0, 4:] - alone_short[0]).abs().max().item() <= 1e-4
    assert (batched[1] - alone_long[0]).abs().max().item() <= 1e-4
    gen = generate(tiny, chain, ids, mask, max_new_tokens=6)
    assert gen[0].tokens == generate(tiny, chain, torch.tensor([short]), max_new_tokens=6)[0].tokens
    assert gen[1].tokens == generate(tiny, chain, torch.tensor([long_]), max_new_tokens=6)[0].tokens


def test_repeated_layer_owns_its_cache_slot():
    """The published code's trap: a repeated layer sharing one slot attends to its own first pass's keys. The
    executor must not: decoding with a shared slot would differ from the rebuilt model, ours must not."""
    tiny = tiny_model("llama")
    chain = Chain.parse("0-2,2,2,3-5")
    ids = _ids(6, batch=1, length=9)
    ref = reference_model(tiny.model, chain)
    expected = ref.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    assert generate(tiny, chain, ids, max_new_tokens=10)[0].tokens == expected[0, 9:].tolist()
    # the buggy variant: same modules in chain order, shared layer_idx (what patching the layer list does)
    import copy

    buggy = copy.deepcopy(tiny.model)
    buggy.model.layers = torch.nn.ModuleList([buggy.model.layers[i] for i in chain])
    buggy.config.num_hidden_layers = len(chain)
    with torch.inference_mode():
        cache_ref, cache_bug = ref(ids[:, :5], use_cache=True).cache, buggy(ids[:, :5], use_cache=True).cache
        step_ref = ref(ids[:, 5:6], cache=cache_ref).logits
        step_bug = buggy(ids[:, 5:6], cache=cache_bug).logits
    cache = new_cache(tiny, chain)
    forward(tiny, chain, ids[:, :5], cache=cache)
    ours = forward(tiny, chain, ids[:, 5:6], cache=cache)
    assert (ours - step_ref).abs().max().item() <= 1e-4
    assert (step_bug - step_ref).abs().max().item() > 1e-2  # the trap is real, so the test above can fail


def test_in_place_cache_equals_concatenation(tiny):
    """The executor's cache slots append in place (:class:`AppendLayer`); transformers' own concatenate. Decoding
    as the buffer grows, after a crop (writes resume there) and after repeating the batch (a
    tensor the slot does not own) gives bitwise the logits of transformers' cache."""
    chain = Chain.parse("0-2,2,2,3-5")
    ids = _ids(5, batch=1, length=60)
    types = chain_layer_types(tiny, chain)
    croppable = set(types) == {"full_attention"}

    def decode(cache):
        out = [forward(tiny, chain, ids, cache=cache, logits_to_keep=1)]
        for t in range(12):  # the first token after the prompt finds the buffer full: it doubles
            out.append(forward(tiny, chain, out[-1][:, -1].argmax(-1, keepdim=True), cache=cache, logits_to_keep=1))
        if croppable:  # transformers' sliding slots cannot crop once their window is full
            cache.crop(-5)
        out.append(forward(tiny, chain, ids[:, :3], cache=cache, logits_to_keep=1))
        for layer in cache.layers:
            layer.batch_repeat_interleave(2)
        out.append(forward(tiny, chain, ids[:, :2].repeat(2, 1), cache=cache, logits_to_keep=1).sum(0, keepdim=True))
        return torch.cat(out, dim=1), cache

    got, ours = decode(new_cache(tiny, chain))
    expected, theirs = decode(DynamicCache(config=chain_config(tiny, types)))
    assert torch.equal(got, expected)
    full = [p for p, kind in enumerate(types) if kind == "full_attention"]  # none in Mistral: all slide
    assert all(type(ours.layers[p]) is AppendLayer and type(theirs.layers[p]) is DynamicLayer for p in full)
    assert all(type(ours.layers[p]) is type(theirs.layers[p]) for p in range(len(chain)) if p not in full)
    length = 60 + 12 - 5 * croppable + 3 + 2
    assert all(ours.layers[p].get_seq_length() == theirs.layers[p].get_seq_length() == length for p in full)
