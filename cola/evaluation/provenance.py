"""Provenance: what a result was computed with, recorded beside it (a run's ``config.json``, an eval's summary, a
router's config): a content hash of the weights (:func:`cola.core.hashes.weights_hash`), the dtype, the software and
the device."""

from __future__ import annotations

import torch

from .._version import __version__
from ..core.hashes import weights_hash
from ..core.loading import processor
from ..core.models import ColaModel
from .evaluator import Evaluator


def environment(cm: ColaModel) -> dict:
    """The software and device a result was computed with: CoLa, Python, torch, transformers, the device (a GPU's
    name; on a CPU its :func:`~cola.core.loading.processor`, whose kernels decide bf16's last bits)."""
    import platform

    import transformers

    device = str(cm.device)
    if cm.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(cm.device)})"
    found = {"processor": processor()} if cm.device.type == "cpu" else {}
    return {"cola": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device, **found}


def fit_environment(cm: ColaModel) -> dict:
    """:func:`environment`, and the thread count: a fit's gradients are sums whose order the thread count decides,
    so the same fit on 1 and on 2 threads ends in other weights (forward passes do not depend on it)."""
    return {**environment(cm), "threads": torch.get_num_threads()}


def evaluator_header(evaluator: Evaluator) -> dict:
    """What decides an evaluator's outcomes, with its provenance: the model (:func:`model_header`), the task and how
    it is asked, the CoLa version and the environment (software and device)."""
    return {**model_header(evaluator.cm), "task": evaluator.task.name, "mode": evaluator.config.mode,
            "chat": evaluator.config.chat, "score_style": evaluator.config.score_style,
            "max_new_tokens": evaluator.config.max_new_tokens or evaluator.task.max_new_tokens, "version": __version__,
            "environment": environment(evaluator.cm)}


def model_header(cm: ColaModel) -> dict:
    """What identifies the model a result was computed with: its name, a content hash of its weights as given (the
    GGUF file, a folder's files), of the weights actually loaded where they are others (a GGUF's verified
    conversion), its dtype, whether its products are batch-invariant (:mod:`cola.core.invariant`) and its depth. A
    resume under other weights, loaded weights, dtype or invariance is refused."""
    weights = weights_hash(cm)
    loaded = {"loaded_weights": cm.loaded_weights} if cm.loaded_weights not in (None, weights) else {}
    return {"model": cm.name, "weights": weights, **loaded, "dtype": str(cm.dtype).removeprefix("torch."),
            "batch_invariant": cm.batch_invariant, "depth": cm.depth}


