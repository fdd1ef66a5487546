"""Where a policy's chains come from: a kind named on the command line with its chains, or another command's output
(:func:`chains_from`), and which router kind a folder holds (:func:`router_kind`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.chain import Chain
from ..errors import MissingFileError, UsageError
from .spec import KINDS, PolicySpec, policy


def router_kind(folder: str | Path) -> str:
    """The policy kind a router folder is read by: the kind its config names (``program``: PoLar's predictor or a
    control of it), ``router`` for a ``cola router fit`` folder (a library router, with its predictor), else
    ``layer-router`` (``cola router fit-layers`` routers or a control of them; reading them checks the folder)."""
    from ..storage import read_json
    from .library_router import CONFIG, PREDICTOR

    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"router folder not found: {folder}")
    named = read_json(folder / CONFIG).get("router") if (folder / CONFIG).is_file() else None
    if named in KINDS:
        return named
    return "router" if (folder / PREDICTOR).is_file() else "layer-router"


def chains_from(path: str | Path, depth: int, top: int | None = None) -> list[str]:
    """Chains (notation) from a file or folder another command wrote, in its own order of preference, at most
    ``top`` of them: a ``cola prune --out`` JSON (m = 1, 2, ...), a ``cola search --static`` run (highest accuracy
    first), a ``cola router fit`` folder (its library) or a per-sample search run (the fixed menu's ranking: the
    chains right on the most samples first). The full chain is left out; a policy adds it where it belongs."""
    from ..search.menu import ranked, right_samples
    from ..search.prune import load_pruned
    from ..search.static import ranked_static
    from ..storage import read_config, read_json, read_records
    from .library_router import CONFIG, PREDICTOR

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"chain source not found: {path}")
    if path.is_file():
        chains = list(load_pruned(path).values())
    elif (path / PREDICTOR).exists():
        chains = read_json(path / CONFIG)["library"]
    else:
        config = read_config(path)
        records = read_records(path)
        if config.get("static"):
            chains = [r["chain"] for r in ranked_static(records)]
        else:
            chains = [str(c) for c in ranked(right_samples(records), sample_id="")]
        if config.get("depth") not in (None, depth):
            raise UsageError(f"{path} is a run of a {config['depth']}-layer model; this one has {depth}")
    full = str(Chain.full(depth))
    chains = [c for c in (str(Chain.parse(c, depth)) for c in chains) if c != full]
    return chains[:top] if top else chains


def make_spec(kind_or_file: str, depth: int, chains: Sequence[str] = (), source: str | None = None,
              top: int | None = None, thresholds: Sequence[float] = (), calibrating: bool = False,
              **settings) -> PolicySpec:
    """The spec ``cola eval --policy`` names: a JSON file (a spec, or an earlier evaluation's summary), or a kind
    with its chains: those given, then ``top`` of ``source``'s (:func:`chains_from`). A cascade's chains run
    cheapest first: a source's are sorted by length, and the full chain ends it when it is not last; while
    ``calibrating``, its thresholds are left to the calibration (1 until then). ``settings``: signal, norm, rule, k,
    temperature, seed, router."""
    if kind_or_file.endswith(".json"):
        if chains or source:
            raise UsageError("--policy FILE.json holds its chains; do not add --chain or --chains-from")
        return PolicySpec.load(kind_or_file)
    if kind_or_file not in KINDS:
        raise UsageError(f"unknown policy {kind_or_file!r}; policies: {', '.join(KINDS)}, or a spec FILE.json")
    named = [str(Chain.parse(c, depth)) for c in chains]
    found = chains_from(source, depth, top) if source else []
    settings = {k: v for k, v in settings.items() if v is not None}
    if thresholds:
        settings["thresholds"] = tuple(float(t) for t in thresholds)
    chains, settings = KINDS[kind_or_file].arrange(named, found, str(Chain.full(depth)), calibrating, settings)
    return policy(kind_or_file, chains=tuple(chains), **settings)
