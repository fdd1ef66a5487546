"""CoLa: test-time depth adaptation of pretrained LLMs through chains of layers."""

from ._version import __version__
from .chain import Chain, as_chain
from .errors import ChainError, ColaError, ModelLoadError
from .loading import DEFAULT_MODEL, load_model
from .models import ColaModel

__all__ = ["Chain", "ChainError", "ColaError", "ColaModel", "DEFAULT_MODEL", "ModelLoadError", "as_chain", "load_model", "__version__"]
