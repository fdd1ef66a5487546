"""Shared fixtures: the embedded real model and Gemma 3 270M (each loaded once per session, and only by tests marked
``slow``), the benchmark data and a tiny model folder. Helpers that tests import live in ``helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; set before transformers reads it
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per test worker (and its commands): workers share the cores
    os.environ["OMP_NUM_THREADS"] = "1"

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cola import ColaModel

_PACKAGED: dict[tuple, ColaModel] = {}


def _load_once(spec="smollm2-135m", device=None, dtype=None, attn_implementation=None, allow_untested=False):
    """``load_model``, with each packaged model (an alias: the real weights) loaded once per test session and handed
    to every later caller, in-process CLI commands included; other models (tiny folders) load each time."""
    import cola.core.loading
    from cola.core.aliases import ALIASES

    cola.core.loading.resolve_dtype(dtype, cola.core.loading.parse_device(device or "cpu"))  # checked first, as there
    if spec in ALIASES and _CURRENT and _CURRENT[-1].get_closest_marker("slow") is None:
        pytest.fail(f"{_CURRENT[-1].nodeid} loads the real model {spec}: mark it `@pytest.mark.slow`, so that "
                    "`pytest -m 'not slow'` stays a fast loop", pytrace=False)
    key = (spec, str(device or "cpu"), str(dtype).removeprefix("torch.") if dtype else "float32",
           attn_implementation, allow_untested)
    if spec not in ALIASES:
        return _load_model(spec, device, dtype, attn_implementation, allow_untested)
    if key not in _PACKAGED:
        _PACKAGED[key] = _load_model(spec, device, dtype, attn_implementation, allow_untested)
    return _PACKAGED[key]


_CURRENT: list[pytest.Item] = []  # the test running now


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes a real-model fixture is a slow test; then the files go longest first.

    The two test processes take a whole file at a time (``--dist loadfile``) in collection order
    (``--no-loadscope-reorder``), so the long files start first and the short ones fill in at the end: ordered by
    their number of tests instead (xdist's default), the few long tests of a file such as test_ray.py ran last, on one
    process, while the other waited."""
    for item in items:
        if {"smol", "gemma"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    cost: dict[Path, float] = {}
    for item in items:  # a rough guess at each file's seconds: a slow test takes about ten, another a fraction of one
        cost[item.path] = cost.get(item.path, 0.0) + (10.0 if item.get_closest_marker("slow") else 0.3)
    items.sort(key=lambda item: -cost[item.path])  # stable: a file's tests keep their order


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    _CURRENT.append(item)
    try:
        return (yield)
    finally:
        _CURRENT.pop()


def pytest_configure(config: pytest.Config) -> None:
    """Every model a test loads goes through ``_load_once``: the library and the CLI look ``load_model`` up in
    cola.core.loading when they load. Not in xdist's controller, which runs no test: importing torch, transformers and
    cola there took seconds before the test processes started."""
    global _load_model
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None) \
            and config.getoption("dist", "no") != "no":
        return
    import cola.core.loading

    _load_model = cola.core.loading.load_model
    cola.core.loading.load_model = _load_once


_load_model = None  # cola.core.loading's own, set by pytest_configure


@pytest.fixture(scope="session")
def smol() -> ColaModel:
    """The embedded default model (SmolLM2-135M-Instruct), loaded once per test session."""
    return _load_once("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma() -> ColaModel:
    """The second real model (Gemma 3 270M base: 18 layers, five sliding to one global), loaded once per test
    session; installed by the test set-up (`bash dev/setup.sh --test`)."""
    return _load_once("gemma3-270m", device="cpu")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from helpers import DATA_DIR

    if not DATA_DIR.is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny random-weight Llama saved as a model folder, for commands run in a subprocess."""
    from helpers import tiny_model

    folder = tmp_path_factory.mktemp("tiny-llama")
    cm = tiny_model("llama")
    cm.model.save_pretrained(folder)
    cm.tokenizer.save_pretrained(folder)
    return folder
