"""The chain value type: notation round-trips, the paper's edits, one clear error per bad chain."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cola import Chain, ChainError, as_chain


@given(st.lists(st.integers(0, 40), min_size=1, max_size=80))
def test_notation_round_trips(layers):
    chain = Chain(tuple(layers))
    assert Chain.parse(str(chain)) == chain


def test_notation_examples():
    assert Chain.parse("0-3,3,4-5").layers == (0, 1, 2, 3, 3, 4, 5)
    assert str(Chain((0, 1, 2, 3, 3, 4, 5))) == "0-3,3-5"
    assert str(Chain((5, 4, 4, 9))) == "5,4,4,9"
    assert Chain.parse("full", depth=4) == Chain.full(4) == Chain.parse(" 0 - 3 ")  # spaces around any part
    assert Chain.parse("0-3, 3,4 -5 ") == Chain.parse("0-3,3,4-5")
    assert Chain.full(30).is_full(30) and not Chain.parse("0-28").is_full(30)


def test_edits():
    full = Chain.full(8)
    assert full.skip(2, 3).layers == (0, 1, 5, 6, 7)
    assert full.repeat(2, 2, r=2).layers == (0, 1, 2, 3, 2, 3, 2, 3, 4, 5, 6, 7)
    assert full.repeat(7, 1).layers == (0, 1, 2, 3, 4, 5, 6, 7, 7)


@pytest.mark.parametrize(
    "text, depth, message",
    [
        ("", 30, "empty chain"),
        ("0-3,x", 30, "malformed chain token 'x'"),
        ("5-2", 30, "descending range '5-2'"),
        ("0-30", 30, "layer index 30 out of range for a model with 30 layers"),
        ("full", None, "'full' needs the model depth"),
        ("0--1", 30, "malformed chain token"),
    ],
)
def test_bad_notation(text, depth, message):
    with pytest.raises(ChainError, match=message.replace("(", r"\(")):
        Chain.parse(text, depth)


def test_bad_chains():
    with pytest.raises(ChainError, match="empty chain"):
        Chain(())
    with pytest.raises(ChainError, match="negative layer index -1"):
        Chain((0, -1))
    with pytest.raises(ChainError, match="longer than the maximum 8"):
        as_chain("0-3,0-3,0", depth=4)
    assert len(as_chain("0-3,0-3,0", depth=4, max_len=9)) == 9
    with pytest.raises(ChainError, match="empty chain"):
        Chain.full(3).skip(0, 3)
    with pytest.raises(ChainError, match="does not fit"):
        Chain.full(3).repeat(2, 2)
    with pytest.raises(ChainError, match="repeat count"):
        Chain.full(3).repeat(0, 1, r=0)
