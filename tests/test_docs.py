"""Every command shown in the README and docs/ runs as written: each `cola` line parses with the CLI's own parser,
each benchmark line names a script that exists and options it defines, each Python block compiles; the README stays
short and the documents hold no history."""

import ast
import re
import shlex
from pathlib import Path

import pytest

from cola.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def _commands(path: Path) -> list[str]:
    lines = []
    for block in _blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.extend(part.strip() for part in line.split("&&"))
    return lines


def test_the_documents_show_commands():
    assert sum(len(_commands(p)) for p in DOCS) > 40


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_runs_as_written(path):
    for command in _commands(path):
        words = shlex.split(command)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # an environment assignment
            words = words[1:]
        if words[0] in (".venv/bin/cola", "cola"):
            try:
                parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"{path.name}: `{command}` does not parse")
        elif words[0].endswith("python") and len(words) > 1 and words[1].startswith("bench/"):
            script = ROOT / words[1]
            assert script.is_file(), f"{path.name}: {words[1]} does not exist"
            source = script.read_text()
            for option in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                assert f'"{option}"' in source, f"{path.name}: {words[1]} has no option {option}"
        elif words[0] == "bash":
            assert (ROOT / words[1]).is_file(), f"{path.name}: {words[1]} does not exist"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_compile(path):
    for block in _blocks(path, "python"):
        ast.parse(block)


def test_the_readme_is_short_and_the_documents_hold_no_history():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    history = re.compile(r"last (time|session)|before this change|was not available then|earlier session|"
                         r"this session|the issue's", re.I)
    for path in DOCS:
        found = history.search(path.read_text())
        assert found is None, f"{path.name}: {found.group(0)!r}"


def test_every_results_table_names_its_commit():
    for path in sorted((ROOT / "docs" / "results").glob("*.md")):
        if path.name != "README.md":
            assert re.search(r"commit [0-9a-f]{7}", path.read_text(), re.I), path.name
