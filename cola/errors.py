"""The errors CoLa raises on purpose: a bad input or a state the user can fix, each with what to do about it.

The ``cola`` command prints these as one line (``cola: error: ...``) and exits with status 2; any other exception is
a bug and shows its traceback. Each class also derives from the built-in exception a Python caller would expect
(``ValueError`` for a bad value, ``FileNotFoundError`` for a missing file, ...), so ``except ValueError`` keeps
working.
"""

from __future__ import annotations


class ColaError(Exception):
    """Base of the errors CoLa raises on purpose."""

    def __str__(self) -> str:  # KeyError would quote its message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class UsageError(ColaError, ValueError):
    """Options or arguments that do not go together, or a value out of range."""


class ChainError(ColaError, ValueError):
    """A chain that cannot be parsed or does not fit the model."""


class DataError(ColaError, ValueError):
    """A data row or file that cannot be read or graded correctly, named by file and line."""


class MissingFileError(ColaError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class UnknownNameError(ColaError, KeyError):
    """A name (a task, a device) that is not registered."""


class ModelLoadError(ColaError, RuntimeError):
    """A model that cannot be found or loaded, with what to do about it."""


class CorruptCache(ModelLoadError):
    """A cached model conversion whose files differ from what was written."""


class NonFiniteError(ColaError, ArithmeticError):
    """A forward gave NaN or infinite logits (corrupt weights, or an overflow in a 16-bit dtype)."""


class DiskFullError(ColaError, OSError):
    """A durable write that found the disk full (or the user's quota reached): nothing torn is left, what was written
    before is kept, and the same command resumes once space is freed."""


class ConfigMismatch(ColaError, ValueError):
    """The run folder holds results of another configuration."""


class RunLockedError(ColaError, BlockingIOError):
    """Another process is writing the run folder."""


class RouterError(ColaError, ValueError):
    """A router folder that cannot be used."""


class RayMissing(ColaError, ImportError):
    """Ray is needed for --workers / --ray-address and is not installed."""
