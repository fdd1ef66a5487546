"""CoLa: test-time depth adaptation of pretrained LLMs through chains of layers."""

from .chain import Chain, ChainError, as_chain
from .models import DEFAULT_MODEL, ColaModel, ModelLoadError, load_model

__version__ = "0.1.0"

__all__ = ["Chain", "ChainError", "ColaModel", "DEFAULT_MODEL", "ModelLoadError", "as_chain", "load_model"]
