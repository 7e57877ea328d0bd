from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchwitness.errors import InputError
from torchwitness.rules.static import scan_paths

BAD = "import torch\nsd = torch.load('m.pt', weights_only=False){comment}\n"


def test_suppression_comments(tmp_path):
    (tmp_path / "a.py").write_text(BAD.format(comment=""))
    (tmp_path / "b.py").write_text(BAD.format(comment="  # torchwitness: ignore[TW602]"))
    (tmp_path / "c.py").write_text(BAD.format(comment="  # torchwitness: ignore"))
    (tmp_path / "d.py").write_text(BAD.format(comment="  # torchwitness: ignore[TW603]"))
    result = scan_paths([tmp_path])
    assert sorted(f.details["path"] for f in result.findings) == ["a.py", "d.py"]
    assert result.suppressed == 2


def test_syntax_errors_are_reported_not_raised(tmp_path):
    (tmp_path / "ok.py").write_text(BAD.format(comment=""))
    (tmp_path / "broken.py").write_text("def f(:\n    torch.load(p)\n")  # parsed: a rule trigger occurs
    result = scan_paths([tmp_path])
    assert [e.path for e in result.errors] == ["broken.py"] and result.counts == {"TW602": 1}


def test_every_syntax_form_is_traversed(tmp_path):
    # match statements hold bare bools/None in their patterns; f-strings, walrus, async, lambdas, decorators
    (tmp_path / "forms.py").write_text(
        "import torch\n"
        "match x:\n    case True | None:\n        y = torch.load(p)\n    case {'k': [1, *rest]}:\n        pass\n"
        "async def f():\n    async for a in b:\n        await torch.load(f'{a!r:>4}')\n"
        "g = lambda: (z := torch.load(p))\n"
        "@torch.no_grad()\ndef h(*, k=torch.load(p)):\n    return [torch.load(q) for q in ps if q]\n")
    assert scan_paths([tmp_path]).counts == {"TW602": 5}


def test_hidden_and_venv_folders_are_skipped(tmp_path):
    for sub in (".venv", "__pycache__", "pkg"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "m.py").write_text(BAD.format(comment=""))
    assert [f.details["path"] for f in scan_paths([tmp_path]).findings] == ["pkg/m.py"]


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        scan_paths([tmp_path / "nope"])


def test_parallel_and_serial_scans_agree(tmp_path):
    for i in range(70):  # above the parallel threshold
        (tmp_path / f"m{i:02d}.py").write_text(BAD.format(comment="") if i % 3 else "x = 1\n")
    serial = scan_paths([tmp_path], jobs=1)
    parallel = scan_paths([tmp_path], jobs=2)
    assert [f.to_dict() for f in serial.findings] == [f.to_dict() for f in parallel.findings]
    assert serial.counts == {"TW602": 46}


def test_scans_a_real_tree_without_importing_it():
    # torch/utils/data: real library code, small enough for CI; the full package is benchmarks/scan.py
    tree = Path(torch.__file__).parent / "utils" / "data"
    result = scan_paths([tree], facts=True)
    assert len(result.files) > 30 and not result.errors
    assert any(u.name.startswith("torch.") for r in result.files for u in r.api_uses)
    assert all(f.rule_id.startswith("TW6") for f in result.findings)
