"""CoLa: test-time depth adaptation of pretrained LLMs through chains of layers."""

from ._version import __version__
from .core.chain import Chain, as_chain
from .core.loading import DEFAULT_MODEL, load_model
from .core.models import ColaModel
from .errors import ChainError, ColaError, ModelLoadError

__all__ = ["Chain", "ChainError", "ColaError", "ColaModel", "DEFAULT_MODEL", "ModelLoadError", "as_chain", "load_model", "__version__"]
