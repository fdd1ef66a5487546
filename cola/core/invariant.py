"""Batch-invariant matrix products: a sample's numbers do not depend on which other samples share its batch.

CoLa runs the rows of many chains in one layer call, their tokens packed end to end (:mod:`cola.core.packing`), so every
``nn.Linear`` multiplies a matrix of M rows, M the tokens of every row in the call. A CPU GEMM library picks its
kernel, its blocking and its split among threads by shape, and these sum the products in different orders. Measured
on the project's machine (torch 2.13, one thread): a float32 row differs between M < 16 and M >= 16; a bfloat16 row
differs between M <= 36 and larger M, and again between some larger M (a 576 -> 192 product at M = 150 and 200);
with two threads the float32 regimes move too (up to M = 150). A row's result never depended on its neighbours at
one shape, nor on its place among them. So a prompt's logits alone and inside a batch of 8 can differ in the last
bits, and a verdict can flip.

:class:`InvariantLinear` removes the dependence by construction. In a packed call it multiplies each row's tokens in
a call of their own (the shape the row has alone), and gathers the rows of one token (decoding, or the last tokens
the LM head reads) into tiles of exactly :data:`TILE` rows, zero-padded: a one-token row is computed at the same
shape whatever else runs. Outside a packed call, an input of one token per sequence is tiled the same way, and any
other input is one product, as before. The price (per-row calls for prefills, padded tiles for few decoding rows) is
measured in ``bench/batch_agreement.py``. Experts of a mixture of experts see the tokens routed to them, a number
that depends on the batch: they are not covered (dense families only), nor is CUDA's one-call attention.

On a CPU whose oneDNN runs bfloat16 natively, a bfloat16 product reads its weight pre-packed (:func:`packed_weight`):
a plain bfloat16 ``F.linear`` reorders the whole weight into oneDNN's blocked layout on every call, which at the few
rows a search multiplies costs as much as the product itself. The packed product is the same kernel on the same
blocks, so its result is bitwise the plain one's (checked on every weight when it is packed; measured on the project's
machine for every product of both models, 1-200 rows, 1 and 2 threads) and faster at the few rows a search multiplies
(``bench/gemm_regimes.py --speed``), at the price of a second copy of the weights in memory. float32 products stay
plain: MKL's packed float32 GEMM is no faster there.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import warnings
import weakref
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

TILE = 16  # rows of one token are multiplied in tiles of exactly this many rows

_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # linear module -> (weight key, packed weight)
_SPANS: contextvars.ContextVar[Sequence[tuple[int, int]] | None] = contextvars.ContextVar("cola_spans", default=None)


@contextlib.contextmanager
def packed_rows(spans: Sequence[tuple[int, int]]) -> Iterator[None]:
    """While a packed layer call runs: the token spans ``[a, b)`` of its rows, which :class:`InvariantLinear` keeps
    apart."""
    token = _SPANS.set(spans)
    try:
        yield
    finally:
        _SPANS.reset(token)


@functools.cache
def onednn_bf16() -> bool:
    """Whether this torch's oneDNN multiplies bfloat16 natively on this CPU (AVX512-BF16, AMX or Arm BF16)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def packed_weight(linear: torch.nn.Linear) -> torch.Tensor | None:
    """``linear``'s weight pre-packed for oneDNN (module doc), kept beside the module while its weight is unchanged; None
    where the product stays plain: not bfloat16 on a CPU with native bf16, a weight that autograd tracks, or a
    packed product that differs from the plain one on a probe (warned once per weight)."""
    weight = linear.weight
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or not onednn_bf16():
        return None
    if torch.is_grad_enabled() and weight.requires_grad:
        return None
    key = (weight.data_ptr(), weight.shape, weight._version if not weight.is_inference() else None)
    cached = _PACKED.get(linear)
    if cached is not None and cached[0] == key:
        return cached[1]
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), TILE)
    probe = torch.randn(TILE + 3, linear.in_features, generator=torch.Generator().manual_seed(0)).to(weight.dtype)
    for rows in (probe, probe[:TILE], probe[:1]):
        if not torch.equal(packed_linear(rows, packed, linear.bias), F.linear(rows, weight, linear.bias)):
            warnings.warn(f"oneDNN's pre-packed bfloat16 product differs from the plain one for a "
                          f"{linear.out_features} x {linear.in_features} weight on this machine: it stays plain "
                          f"(slower)", stacklevel=2)
            packed = None
            break
    _PACKED[linear] = (key, packed)
    return packed


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` with a weight from :func:`packed_weight` (oneDNN's product on pre-packed blocks)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class InvariantLinear(torch.nn.Linear):
    """``nn.Linear`` whose result for a row does not depend on the other rows of the call (module doc)."""

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, weight, bias)``, through the pre-packed weight where there is one (:func:`packed_weight`)."""
        return self._multiply(x, packed_weight(self))

    def _multiply(self, x: torch.Tensor, packed: torch.Tensor | None) -> torch.Tensor:
        """:meth:`product` with the packed weight (or None: plain) looked up once for all products of a call."""
        if packed is None:
            return F.linear(x, self.weight, self.bias)
        return packed_linear(x, packed, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.numel() == 0:
            return F.linear(x, self.weight, self.bias)
        spans = _SPANS.get()
        if spans is not None and (x.dim() != 3 or x.shape[0] != 1 or spans[-1][1] != x.shape[1]):
            spans = None  # not the packed token stream (the tokens routed to an expert, say)
        if spans is None:
            if x.shape[-2] != 1:
                return self.product(x)
            spans = [(i, i + 1) for i in range(x.numel() // x.shape[-1])]  # one token per sequence: tile them
        flat = x.reshape(-1, x.shape[-1])
        out = flat.new_empty(flat.shape[0], self.out_features)
        packed = packed_weight(self)
        singles = [a for a, b in spans if b - a == 1]
        for a, b in spans:
            if b - a > 1:
                out[a:b] = self._multiply(flat[a:b], packed)
        for start in range(0, len(singles), TILE):
            index = torch.tensor(singles[start : start + TILE], device=x.device)
            tile = flat.new_zeros(TILE, flat.shape[1])
            tile[: len(index)] = flat[index]
            out[index] = self._multiply(tile, packed)[: len(index)]
        return out.reshape(*x.shape[:-1], self.out_features)


def make_batch_invariant(model: torch.nn.Module, on: bool = True) -> int:
    """Make every plain ``nn.Linear`` of ``model`` an :class:`InvariantLinear` (``on=False``: back); returns how many
    it changed. The weights are untouched: the modules change class, not state."""
    count = 0
    for module in model.modules():
        if type(module) in (torch.nn.Linear, InvariantLinear):
            module.__class__ = InvariantLinear if on else torch.nn.Linear
            _PACKED.pop(module, None)
            count += 1
    return count
