"""Model loading errors: each says what is wrong and what to do."""

import pytest

from cola import ModelLoadError, load_model
from cola.core.aliases import ALIASES
from cola.core.loading import alias_gguf_path


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found: .*missing.gguf"):
        load_model(str(tmp_path / "missing.gguf"))


def test_missing_local_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        load_model(str(tmp_path / "no-such-model"))


def test_unknown_alias_offline():
    with pytest.raises(ModelLoadError, match="(?s)cannot load model 'smollm9-1m'.*smollm2-135m"):
        load_model("smollm9-1m")


def test_alias_needs_its_package(monkeypatch):
    monkeypatch.setitem(ALIASES, "nothing-1m", ("cola-no-such-dist", "pip install cola-no-such-dist"))
    with pytest.raises(ModelLoadError, match="needs the package 'cola-no-such-dist': run `pip install"):
        alias_gguf_path("nothing-1m")


def test_default_alias_is_found_through_the_installed_package():
    path = alias_gguf_path("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


def test_cache_lock_lets_one_process_at_a_time_prepare_a_model(tmp_path, monkeypatch):
    """Two runs started at once on an alias once assembled Gemma's GGUF file side by side and one failed on its
    hash: the cache lock serialises them (flock: separate opens conflict, in threads as in processes)."""
    import threading
    import time

    from cola.core.loading import cache_lock

    monkeypatch.setenv("COLA_CACHE", str(tmp_path))
    inside, overlaps = [], []

    def work() -> None:
        with cache_lock("model"):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1, 1, 1]
    assert (tmp_path / "locks" / "model.lock").exists()
