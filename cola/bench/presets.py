"""The sizes of ``cola bench``'s presets (no torch: the command line reads them here). Each stage's samples and
search budget; the measured time of each preset on 2 cores is in docs/bench.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preset:
    """How much of the task each stage reads: ``test`` samples every method is reported on; ``dev`` samples to choose
    on (the static chain's search, calibrations, the routers' selection); ``train`` samples the learned methods'
    supervision searches read and ``prune`` the block influence's calibration prompts; ``search`` test samples the
    oracle searches run on, ``sims`` chains each, ``train_sims`` the budget of the study's and PoLar's supervision
    searches; ``bi`` and ``drop``: the static chains without the m least influential / the k last layers, m, k =
    1..bi / drop; ``top_k``: PoLar's best-of-k; ``polar_train``, ``library_train`` (with ``library_sims``) and
    ``static_dev``: PoLar's and the library router's supervision and the static search's samples where they are not
    ``train`` / ``dev``; ``static_sims`` and ``drllm_sims``: the static search's and Dr.LLM's supervision searches'
    budgets; ``vote_top``, ``vote_ks``, ``vote_rules``: what the vote over chains chooses among on dev;
    ``transfer``: the samples of each ``--transfer`` task's reported split."""

    test: int
    dev: int
    train: int
    prune: int
    search: int
    sims: int
    train_sims: int
    bi: int
    drop: int
    top_k: int = 5
    polar_train: int | None = None  # PoLar's supervision samples (None: ``train``)
    library_train: int | None = None  # the library router's supervision samples (None: ``train``)
    library_sims: int | None = None  # and their search budget (None: ``train_sims``)
    static_dev: int | None = None  # the dev samples the static search reads (None: ``dev``)
    static_sims: int = 30
    drllm_sims: int = 50  # Dr.LLM's budget (its early stops end most searches sooner)
    vote_top: int | None = None  # the vote's chains besides full depth, from the library's ranking (None: 2)
    vote_ks: tuple[int, ...] | None = None  # the vote's sizes calibrated over (None: 3)
    vote_rules: tuple[str, ...] | None = None  # and its rules (None: majority)
    transfer: int | None = None  # each --transfer task's samples (None: ``test``)

    def to_dict(self) -> dict:
        """The sizes for plan.json (the optional ones only where set, so that a bench made before they existed
        resumes)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}


PRESETS = {
    # offline, minutes: what the suite runs (on a tiny model there), every family present
    "smoke": Preset(test=12, dev=8, train=12, prune=4, search=4, sims=6, train_sims=6, bi=2, drop=2, top_k=3,
                    static_sims=4, drllm_sims=6),
    # the default: 300 test samples, every family at a budget meant for hours, not days, on 2 cores
    "quick": Preset(test=300, dev=60, train=60, prune=100, search=30, sims=50, train_sims=30, bi=3, drop=3),
    # the committed study's sizes
    "study": Preset(test=1000, dev=200, train=2251, prune=100, search=100, sims=200, train_sims=100, bi=7, drop=7,
                    polar_train=1000, library_train=40, library_sims=50, static_dev=100, static_sims=30,
                    vote_top=8, vote_ks=(3, 5, 9), vote_rules=("majority", "confident", "weighted"), transfer=500),
}
