"""The documentation: the site builds with ``mkdocs build --strict``, and every ```python block in README.md and
docs/**/*.md runs, each in a fresh namespace in its own temporary working directory.

A block runs in this process (torch is imported once for all of them) with its own signing-key folder (the
autouse fixture in conftest.py). The README's quick start is followed by the shell commands printed under it,
run through the CLI in the same folder, with the signer the script printed standing in for ``sha256:...``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
# Blocks whose imports take long on a shared 2-core machine (Lightning alone imports in ~10 s there)
SLOW = ("import lightning", "transformers.Trainer(")
# A block written for `torchrun` (it trains only when launched by it) runs under torchrun with two processes.
TORCHRUN = "dist.is_torchelastic_launched()"


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, language, code) of every fenced block in a Markdown text."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Quick start"):text.index("## Verifying a run")]


def _python_blocks() -> list:
    params = []
    for path in _doc_files():
        for line, lang, code in fenced_blocks(path.read_text()):
            if lang == "python" and not (path.name == "README.md" and code in _quick_start()):  # tested below
                marks = [pytest.mark.slow] if any(s in code for s in (*SLOW, TORCHRUN)) else []
                params.append(pytest.param(path, code, id=f"{path.relative_to(ROOT)}:{line}", marks=marks))
    return params


def _run_block(code: str, path: Path, namespace: dict | None = None) -> dict:
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    exec(compile(code, str(path), "exec"), namespace)  # the docs' own examples
    return namespace


@pytest.mark.parametrize(("path", "code"), _python_blocks())
def test_python_block_runs(path: Path, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if TORCHRUN not in code:
        _run_block(code, path)
        return
    (tmp_path / "train.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    # --standalone: a free rendezvous port; on the default 29500 another torchrun of the suite (xdist) could meet it
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "train.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    # The first rank to fail prints first; the others' "connection closed" tracebacks follow it.
    first = [line for line in done.stderr.splitlines() if "[rank" in line][:60]
    assert done.returncode == 0, done.stdout[-2000:] + "\n".join(first) + done.stderr[-2000:]
    import torchwitness as tw

    runs = tmp_path / "runs"
    shards = sorted(p.name for p in next(runs.iterdir()).iterdir() if p.name.startswith("rank-"))
    assert shards == ["rank-0", "rank-1"]
    tw.verify_run(next(runs.iterdir()))


def test_readme_quick_start_then_its_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchwitness.cli import main

    blocks = fenced_blocks(_quick_start())
    code = next(c for _, lang, c in blocks if lang == "python")
    shell = next(c for _, lang, c in blocks if lang == "bash")
    assert len(code.splitlines()) <= 45, "the quick start is meant to stay about 40 lines"
    monkeypatch.chdir(tmp_path)
    namespace = _run_block(code, ROOT / "README.md")
    commands = [line.split("  #")[0] for line in shell.splitlines() if line.startswith("torchwitness ")]
    assert [c.split()[1] for c in commands] == ["verify", "report", "card"]
    for command in commands:
        args = [namespace["signer"] if a == "sha256:..." else a for a in shlex.split(command)[1:]]
        try:
            main(args)
        except SystemExit as e:
            assert e.code in (0, None), f"{command!r} exited {e.code}"
    assert "tw-evidence" in (tmp_path / "dossier.html").read_text()
    assert (tmp_path / "MODEL_CARD.md").read_text().startswith("---")


def test_rule_catalogue_page_matches_the_rules() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import rules_page

    assert rules_page.PAGE.read_text() == rules_page.render(), "run `python scripts/rules_page.py`"
    from torchwitness.rules.catalogue import all_rules

    assert all(f"## {r.id}\n" in rules_page.render() for r in all_rules() if r.id.startswith("TW"))


def test_fenced_blocks_are_found() -> None:
    text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n"
    assert fenced_blocks(text) == [(2, "python", "x = 1\n"), (6, "bash", "ls\n")]
    assert len(_python_blocks()) >= 10


@pytest.mark.slow
def test_site_builds_strict_with_the_cli_reference(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    from typer.main import get_command

    from torchwitness.cli import app

    for name in get_command(app).commands:
        assert f"torchwitness {name}" in cli, name
    assert "&lt;bool&gt;" not in cli
