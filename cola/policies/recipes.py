"""The training settings of the routers learned from search labels, each a flag of its fit (no torch: the command
line reads its defaults here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Dr.LLM's training settings (each a flag of the fit)."""

    epochs: int = 25
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05  # share of the steps spent warming up
    gamma: float = 2.0  # focal loss
    beta: float = 0.999  # effective-number class weights
    batch: int = 32
    seed: int = 0


@dataclass(frozen=True)
class ProgramRecipe:
    """PoLar's predictor, its training (the released command: ``run_polar.py`` with ``--num_epochs 10 --batch_size 128
    --learning_rate 5e-4 --max_paths_per_sample 50 --per_sample_weight_normalize
    --reweight_original_path_if_shorter_valid --original_path_weight 0.30 --seed 42 --lr_scheduler cosine
    --warmup_steps 10``) and its decoding (threshold 0.5, segments of at most 4 layers, beam 5, 2 ops a segment).
    ``val_share``: the samples held out of train to choose the epoch on (PoLar: 250 of 1,500)."""

    epochs: int = 10
    batch: int = 128
    lr: float = 5e-4
    warmup: int = 10  # steps
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_paths: int = 50  # right programs per sample, drawn with the seed beyond that
    full_weight: float = 0.30  # the full program's weight where a shorter right program exists
    val_share: float = 1 / 6
    seed: int = 42
    d_model: int = 256
    heads: int = 4
    blocks: int = 2
    max_tokens: int = 512  # of the question, for its encoder
    threshold: float = 0.5
    max_pack: int = 4
    beam: int = 5
    top_ops: int = 2
