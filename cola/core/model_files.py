"""Reading model files whole or not at all: a GGUF file's header, read once for all of transformers' reads of it and
checked against the file's size, and a folder's safetensors headers, each checked before any weight is read.

A damaged download (empty, cut short in its header or its tensor data, or another kind of file) is one
:class:`~cola.errors.ModelLoadError` naming the file, what is wrong and what to do, never a reader's traceback.
The libraries that read these files say what they found (``gguf``'s reader, ``safetensors``' header check); these
checks call them and translate what they raise.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..errors import ModelLoadError

GGUF_MAGIC = b"GGUF"


class _GGUFTooShort(Exception):
    def __init__(self, expected: int) -> None:
        self.expected = expected


@contextlib.contextmanager
def one_gguf_reader():
    """Within it, transformers' reads of one GGUF file (for its config, its weights, its tokenizer: three, each parsing
    every header field, a large vocabulary's tokens one by one) share one ``gguf.GGUFReader``; a reader only maps the
    file and parses its header, so sharing it changes nothing read. A third of a conversion's time (Gemma 3 270M).
    The reader refuses a file shorter than its header says before it maps any tensor (:func:`check_gguf`)."""
    import gguf
    import numpy as np

    original, readers = gguf.GGUFReader, {}

    class PlainArrayReader(original):
        """A reader that parses the header from a plain array over the file's mapping: the same bytes, but slicing
        it skips ``np.memmap``'s per-slice hooks, which a header of ~800,000 small fields (a 262k vocabulary's
        tokens, scores and types) pays once each (Gemma 3's header: 11 s -> 4 s)."""

        def _build_fields(self, offs: int, count: int) -> int:
            self.data = self.data.view(np.ndarray)
            return super()._build_fields(offs, count)

        def _build_tensors(self, start_offs: int, fields: list) -> None:
            end = start_offs
            for field in fields:  # the parts of a tensor's header entry: name, dims, type, offset
                _, _, _, dims, raw_type, offset = field.parts
                block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(raw_type[0]))]
                end = max(end, start_offs + int(offset[0]) + int(np.prod(dims)) * size // block)
            if end > len(self.data):
                raise _GGUFTooShort(end)
            super()._build_tensors(start_offs, fields)

    def shared(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = PlainArrayReader(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def check_gguf(path: Path, remedy: str) -> None:
    """Read ``path``'s GGUF header (within :func:`one_gguf_reader`, so transformers' reads reuse it) and check that
    the file holds every tensor it lists; else a :class:`~cola.errors.ModelLoadError` naming the file, what is wrong
    (empty; not a GGUF; ends at byte N where its header says M) and ``remedy``."""
    import gguf

    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes): {remedy}")
    with open(path, "rb") as f:
        start = f.read(len(GGUF_MAGIC))
    if start != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it starts with {start!r}, not the GGUF magic bytes "
                             f"{GGUF_MAGIC!r}): {remedy}")
    try:
        gguf.GGUFReader(path)
    except _GGUFTooShort as short:
        raise ModelLoadError(f"{path} is cut short: it ends at byte {size:,} where its header says "
                             f"{short.expected:,}: {remedy}") from None
    except (ValueError, IndexError, KeyError, OverflowError) as err:  # the header itself is cut or garbled
        raise ModelLoadError(f"{path} is cut short or damaged in its header (the file ends at byte {size:,}; the "
                             f"gguf reader says: {err}): {remedy}") from None


def check_safetensors(folder: Path, remedy: str = "download the model again") -> None:
    """Open the header of every ``*.safetensors`` file in ``folder`` (``safetensors`` checks that the file holds all
    the data its header lists); a file it refuses is a :class:`~cola.errors.ModelLoadError` naming it, where it ends
    and where its header says it should, and ``remedy``."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except SafetensorError as err:
            size, expected = path.stat().st_size, _safetensors_end(path)
            says = f" where its header says {expected:,}" if expected is not None and expected > size else ""
            raise ModelLoadError(f"{path} is cut short or damaged: it ends at byte {size:,}{says} (safetensors: "
                                 f"{err}): {remedy}") from None


def _safetensors_end(path: Path) -> int | None:
    """Where the header of a safetensors file says its data ends (8-byte header length, the JSON header, the data), or
    None when the header itself cannot be read."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(min(length, 100 << 20)))
            return 8 + length + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                                    default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            return None
