"""The house reads as the pipeline, and stays that way: import-linter's contracts from
pyproject.toml (stages import only downward, the ground floor imports no stage, the library
never imports the command line, install's steps sit below the orchestrator), no import cycle
anywhere, and nothing inside the package imports its root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from _paths import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(config: Path, src: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        capture_output=True, text=True, env=env, cwd=config.parent, timeout=300, check=False,
    )  # fmt: skip


def test_import_contracts_are_kept() -> None:
    proc = _lint_imports(ROOT / "pyproject.toml", ROOT / "src")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The contracts really bite: a copy of the package where detection imports the command
    line breaks two of them, and lint-imports says which import did it."""
    shutil.copytree(ROOT / "src" / "treeboot", tmp_path / "src" / "treeboot")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    osinfo = tmp_path / "src" / "treeboot" / "detect" / "osinfo.py"
    osinfo.write_text(osinfo.read_text() + "\nfrom treeboot.cli.output import emit_json\n")
    proc = _lint_imports(tmp_path / "pyproject.toml", tmp_path / "src")
    assert proc.returncode != 0
    assert "Stages import only downward BROKEN" in proc.stdout
    assert "The library never imports the command line BROKEN" in proc.stdout
    assert "treeboot.detect.osinfo -> treeboot.cli.output" in proc.stdout


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("treeboot", include_external_packages=False)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    g = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        g.add_import(importer=a, imported=b)
    assert _cycles(g) == [["p.a", "p.b", "p.c"]]


def test_nothing_imports_the_package_root(graph: grimp.ImportGraph) -> None:
    assert graph.find_modules_that_directly_import("treeboot") == set()


def test_only_the_cli_parses_arguments_and_exits() -> None:
    offenders = []
    for path in (ROOT / "src" / "treeboot").rglob("*.py"):
        rel = path.relative_to(ROOT / "src" / "treeboot")
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        text = path.read_text()
        for needle in ("import argparse", "sys.exit(", "raise SystemExit"):
            if needle in text and not _script_entry(text, needle):
                offenders.append(f"{rel}: {needle}")
    assert offenders == []


def _script_entry(text: str, needle: str) -> bool:
    """Helper programs run with ``python -m`` (the guestfwd relay, the detached watcher,
    devtree) parse their own few arguments and exit in their ``__main__`` block."""
    return 'if __name__ == "__main__":' in text
