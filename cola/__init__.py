"""CoLa: test-time depth adaptation of pretrained LLMs through chains of layers.

``import cola`` loads no torch: ``load_model`` and ``ColaModel`` are imported when first used."""

from ._version import __version__
from .core.aliases import DEFAULT_MODEL
from .core.chain import Chain, as_chain
from .errors import ChainError, ColaError, ModelLoadError

_LAZY = {"load_model": "cola.core.loading", "ColaModel": "cola.core.models"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cola' has no attribute {name!r}")


__all__ = ["Chain", "ChainError", "ColaError", "ColaModel", "DEFAULT_MODEL", "ModelLoadError", "as_chain", "load_model",
           "__version__"]
