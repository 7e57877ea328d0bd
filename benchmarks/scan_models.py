"""scan-model against live payloads and benign checkpoints, beside picklescan and modelscan.

Builds, in a temporary folder, a corpus of payloads of different gadget styles and formats, each of which only
creates its own marker file when loaded, and of benign real checkpoints (state dicts, a whole pickled module, an
HF-style ``pytorch_model.bin`` from a tiny transformers model built from a config, optimizer state, legacy
``torch.save``, safetensors, numpy and joblib files). Then:

1. scans everything with ``scan_model`` and checks that no marker appeared (nothing executed);
2. scans everything with picklescan and modelscan, installed by this script into a throwaway venv in the temporary
   folder (a column is skipped, with a note, when the install fails; they never become our dependencies);
3. proves each payload live: loads it in its own throwaway subprocess (``pickle.load``, ``torch.load(
   weights_only=False)``, ``numpy.load(allow_pickle=True)``, ``joblib.load``) and checks that its marker appeared;
4. prints the table and the totals. Exit 1 if a live payload is not ERROR or a benign file is.

    python benchmarks/scan_models.py              # everything (a few minutes: installs two scanners)
    python benchmarks/scan_models.py --no-others  # our scanner and the live proof only
"""

from __future__ import annotations

import argparse
import io
import marshal
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOADERS = {
    "pickle": "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
    "torch": "import torch, sys; torch.load(sys.argv[1], weights_only=False)",
    "numpy": "import numpy, sys; d = numpy.load(sys.argv[1], allow_pickle=True); "
             "[d[k] for k in d.files] if hasattr(d, 'files') else d",
    "joblib": "import joblib, sys; joblib.load(sys.argv[1])",
}


class Call:
    """Pickles as ``REDUCE(f, args)``; nest them to chain calls (``getattr(import_module('os'), 'system')``)."""

    def __init__(self, f: Any, *args: Any) -> None:
        self.f, self.args = f, args

    def __call__(self, *args: Any) -> Any:  # the pickler insists that a reduce callable is callable
        raise RuntimeError("only ever pickled")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.f, self.args


@dataclass
class Sample:
    name: str
    style: str
    loader: str
    path: Path
    marker: Path | None  # None: benign
    verdicts: dict[str, str]
    live: bool | None = None


@dataclass(frozen=True)
class G:
    """An import by name, for :func:`assemble` (``G("types", "FunctionType")`` pickles as that GLOBAL)."""

    module: str
    name: str


def assemble(tree: Any) -> bytes:
    """A protocol-3 pickle of ``tree``: :class:`Call` nodes become REDUCE, :class:`G` GLOBAL, and str, bytes,
    int, list and dict literals; so any gadget chain can be written, whatever its objects pickle as."""
    out = bytearray(b"\x80\x03")

    def emit(x: Any) -> None:
        if isinstance(x, Call):
            emit(x.f)
            out.extend(b"(")
            for a in x.args:
                emit(a)
            out.extend(b"tR")
        elif isinstance(x, G):
            out.extend(f"c{x.module}\n{x.name}\n".encode())
        elif isinstance(x, str):
            raw = x.encode()
            out.extend(b"X" + len(raw).to_bytes(4, "little") + raw)
        elif isinstance(x, bytes):
            out.extend(b"B" + len(x).to_bytes(4, "little") + x)
        elif isinstance(x, int):
            out.extend(b"J" + x.to_bytes(4, "little", signed=True))
        elif isinstance(x, list):
            out.extend(b"](")
            for a in x:
                emit(a)
            out.extend(b"e")
        elif isinstance(x, dict) and not x:
            out.extend(b"}")
        else:
            raise TypeError(f"cannot assemble {x!r}")

    emit(tree)
    return bytes(out + b".")


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def _stack_global_call(module: str, name: str, arg: str, *, memo_tricks: bool = False) -> bytes:
    """PROTO 4, STACK_GLOBAL(module, name)(arg). With ``memo_tricks`` the strings are memoised, dropped and
    fetched back in the order STACK_GLOBAL wants, as obfuscated payloads do."""
    if memo_tricks:
        head = _s(name) + b"\x94" + _s("decoy") + b"\x94" + _s(module) + b"\x94" + b"000" + b"h\x02h\x00"
    else:
        head = _s(module) + b"\x94" + _s(name) + b"\x94"
    return b"\x80\x04" + head + b"\x93\x94" + _s(arg) + b"\x85R."


def payload_objects(marker: Path) -> dict[str, tuple[str, bytes]]:
    """Pickles whose loading creates ``marker``: style -> (description, pickle bytes)."""
    m = str(marker)
    sh = f"touch {m}"
    py = f"open({m!r}, 'w').close()"
    os_mod = Call(G("importlib", "import_module"), "os")
    getattr_ = G("builtins", "getattr")
    inner = assemble(Call(G("os", "system"), sh))
    code_obj = marshal.dumps(compile(py, "<payload>", "exec"))
    trees = {
        "os.system": ("REDUCE os.system", Call(G("os", "system"), sh)),
        "subprocess": ("REDUCE subprocess.call", Call(G("subprocess", "call"), ["touch", m])),
        "builtins.eval": ("REDUCE builtins.eval", Call(G("builtins", "eval"), py)),
        "builtins.exec": ("REDUCE builtins.exec", Call(G("builtins", "exec"), py)),
        "cProfile.run": ("REDUCE cProfile.run", Call(G("cProfile", "run"), py)),
        "profile.run": ("REDUCE profile.run", Call(G("profile", "run"), py)),
        "pydoc.pipepager": ("REDUCE pydoc.pipepager(text, cmd)", Call(G("pydoc", "pipepager"), "x", sh)),
        "_io.open": ("REDUCE _io.open(path, 'w') (creates the file)", Call(G("_io", "open"), m, "w")),
        "runpy": ("REDUCE runpy._run_code(src, {})", Call(G("runpy", "_run_code"), py, {})),
        "importlib+getattr": ("getattr(importlib.import_module('os'), 'system')(cmd)",
                              Call(Call(getattr_, os_mod, "system"), sh)),
        "types+marshal": ("types.FunctionType(marshal.loads(code), {})()",
                          Call(Call(G("types", "FunctionType"), Call(G("marshal", "loads"), code_obj), {}))),
        "operator.attrgetter": ("operator.attrgetter('system')(os)(cmd)",
                                Call(Call(Call(G("operator", "attrgetter"), "system"), os_mod), sh)),
        "operator.methodcaller": ("operator.methodcaller('system', cmd)(os)",
                                  Call(Call(G("operator", "methodcaller"), "system", sh), os_mod)),
        "functools.partial": ("functools.partial(os.system, cmd)()",
                              Call(Call(G("functools", "partial"), G("os", "system"), sh))),
        "timeit": ("timeit.timeit(src, 'pass', time.perf_counter, 1)",
                   Call(G("timeit", "timeit"), py, "pass", G("time", "perf_counter"), 1)),
        "pdb": ("pdb.Pdb('tab', StringIO('continue'), StringIO()).run(src)",
                Call(Call(getattr_, Call(G("pdb", "Pdb"), "tab", Call(G("io", "StringIO"), "continue\n"),
                                         Call(G("io", "StringIO"))), "run"), py)),
        "bdb": ("bdb.Bdb().run(src) (the debugger's runner)", Call(Call(getattr_, Call(G("bdb", "Bdb")), "run"), py)),
        "webbrowser": ("webbrowser.GenericBrowser('touch').open(path)",
                       Call(Call(getattr_, Call(G("webbrowser", "GenericBrowser"), "touch"), "open"), m)),
        "code.interp": ("code.InteractiveInterpreter().runsource(src)",
                        Call(Call(getattr_, Call(G("code", "InteractiveInterpreter")), "runsource"), py)),
        "nested-pickle": ("pickle.loads(<pickle calling os.system>)", Call(G("pickle", "loads"), inner)),
    }
    raw = {
        "dotted-builtins": ("builtins + 'eval.__call__' (protocol 4 attribute chain)",
                            _stack_global_call("builtins", "eval.__call__", py)),
        "dotted-torch-os": ("torch + 'os.system' (module attribute chain)",
                            _stack_global_call("torch", "os.system", sh)),
        "memo-stack-global": ("STACK_GLOBAL of memoised strings, reordered",
                              _stack_global_call("os", "system", sh, memo_tricks=True)),
        "py2-builtin": ("protocol 0 __builtin__.eval (renamed on load)",
                        b"c__builtin__\neval\n(V" + py.encode() + b"\ntR."),
        "inst-opcode": ("INST os system (protocol 0)", b"(V" + sh.encode() + b"\nios\nsystem\n."),
    }
    return {**{k: (d, assemble(t)) for k, (d, t) in trees.items()}, **raw}


def _legacy_tar(path: Path, extra: Any = None) -> None:
    """A pre-1.4 tar-format torch checkpoint, written as ``torch.serialization._legacy_load`` reads it."""
    import struct

    import torch

    weights = torch.arange(6, dtype=torch.float32)

    def pickled(*objs: Any) -> bytes:
        return b"".join(pickle.dumps(o, protocol=2) for o in objs)

    class Main(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return 1 if obj is weights else None

    main = io.BytesIO()
    Main(main, protocol=2).dump({"weight": weights, **({"extra": extra} if extra is not None else {})})
    members = {
        "sys_info": pickled({"protocol_version": 1001, "little_endian": True}),
        "storages": pickled(1, (0, "cpu", torch.FloatStorage)) + struct.pack("<q", 6)
        + weights.numpy().tobytes() + pickled([]),
        "tensors": pickled(1, (1, 0, torch.FloatTensor)) + struct.pack("<i", 1) + bytes(4)
        + struct.pack("<qqq", 6, 1, 0),
        "pickle": main.getvalue(),
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def format_payloads(root: Path, marker: Callable[[str], Path]) -> list[tuple[str, str, str, Path, Path]]:
    """Payloads carried by each container format: (name, style, loader, path, marker)."""
    import joblib
    import numpy as np
    import torch

    out = []

    def evil(name: str) -> tuple[Path, Any]:
        mk = marker(name)
        return mk, Call(os.system, f"touch {mk}")

    mk, p = evil("torch-zip")
    torch.save({"w": torch.ones(2), "hook": p}, root / "evil-zip.pt")
    out.append(("torch-zip", "torch.save zip archive", "torch", root / "evil-zip.pt", mk))
    mk, p = evil("torch-in-bytes")
    buf = io.BytesIO()
    torch.save({"hook": p}, buf)
    (root / "evil-in-bytes.pkl").write_bytes(assemble(Call(G("torch.storage", "_load_from_bytes"), buf.getvalue())))
    out.append(("torch-in-bytes", "pickle loading a torch file from bytes (as pickle.dumps(tensor) does)",
                "pickle", root / "evil-in-bytes.pkl", mk))
    mk, p = evil("torch-legacy")
    torch.save({"w": torch.ones(2), "hook": p}, root / "evil-legacy.pt", _use_new_zipfile_serialization=False)
    out.append(("torch-legacy", "pre-zip torch.save stream", "torch", root / "evil-legacy.pt", mk))
    mk, p = evil("torch-tar")
    _legacy_tar(root / "evil-tar.pt", p)
    out.append(("torch-tar", "legacy tar-format torch file", "torch", root / "evil-tar.pt", mk))
    for name, fn in (("npy", "evil.npy"), ("npz", "evil.npz")):
        mk, p = evil(name)
        arr = np.empty(2, dtype=object)
        arr[0], arr[1] = 1.0, p
        (np.save if name == "npy" else lambda f, a: np.savez(f, a=a))(root / fn, arr)
        out.append((name, f".{name} object array", "numpy", root / fn, mk))
    mk, p = evil("joblib")
    joblib.dump({"w": np.arange(16.0), "hook": p}, root / "evil.joblib")
    out.append(("joblib", "joblib file, payload beside an array", "joblib", root / "evil.joblib", mk))
    mk, p = evil("joblib-zlib")
    joblib.dump({"w": np.arange(16.0), "hook": p}, root / "evil.joblib.z", compress=("zlib", 3))
    out.append(("joblib-zlib", "zlib-compressed joblib file", "joblib", root / "evil.joblib.z", mk))
    mk, p = evil("joblib-object-array")
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = 1.0, p
    joblib.dump({"w": np.arange(4.0), "objs": arr}, root / "evil-objarr.joblib")
    out.append(("joblib-object-array", "joblib object array (nested pickle)", "joblib",
                root / "evil-objarr.joblib", mk))
    return out


def build_payloads(root: Path, styles: set[str] | None = None) -> list[Sample]:
    """Every payload (or only ``styles``), written under ``root``, each with its own marker under
    ``root/markers``."""
    markers = root / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    samples = []
    for style in payload_objects(markers / "x"):
        if styles is not None and style not in styles:
            continue
        mk = markers / style
        desc, data = payload_objects(mk)[style]
        path = root / f"payload-{style}.pkl"
        path.write_bytes(data)
        samples.append(Sample(style, desc, "pickle", path, mk, {}))
    if styles is None or styles & {"torch-zip", "torch-in-bytes", "torch-legacy", "torch-tar", "npy", "npz",
                                   "joblib", "joblib-zlib", "joblib-object-array"}:
        for name, desc, loader, path, mk in format_payloads(root, lambda n: markers / n):
            if styles is None or name in styles:
                samples.append(Sample(name, desc, loader, path, mk, {}))
    return samples


def build_benign(root: Path, *, hf: bool = True) -> list[Sample]:
    """Real, harmless checkpoints of the kinds people exchange (``hf``: also the transformers ones, slower)."""
    import joblib
    import numpy as np
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    files: list[tuple[str, str, str, Callable[[Path], None]]] = [
        ("state-dict", "state_dict (zip)", "torch", lambda p: torch.save(net.state_dict(), p)),
        ("whole-module", "whole pickled nn.Module", "torch", lambda p: torch.save(net, p)),
        ("optimizer", "Adam optimizer state_dict", "torch", lambda p: torch.save(opt.state_dict(), p)),
        ("lightning-style", "checkpoint dict: epoch, state, optimizer, hparams", "torch",
         lambda p: torch.save({"epoch": 3, "global_step": 120, "state_dict": net.state_dict(),
                               "optimizer_states": [opt.state_dict()], "hyper_parameters": {"lr": 1e-3}}, p)),
        ("legacy-state-dict", "state_dict, _use_new_zipfile_serialization=False", "torch",
         lambda p: torch.save(net.state_dict(), p, _use_new_zipfile_serialization=False)),
        ("legacy-tar", "legacy tar-format torch file", "torch", lambda p: _legacy_tar(p)),
        ("torchscript", "TorchScript archive", "torch", lambda p: torch.jit.script(net).save(str(p))),
        ("safetensors", "safetensors", "none", lambda p: save_file(net.state_dict(), p)),
        ("npz", "numeric .npz", "numpy", lambda p: np.savez(p, a=np.arange(10.0), b=np.eye(3))),
        ("npy", "numeric .npy", "numpy", lambda p: np.save(p, np.arange(12).reshape(3, 4))),
        ("tensor-pickle", "pickle.dumps of tensors (storages as torch files in bytes)", "pickle",
         lambda p: p.write_bytes(pickle.dumps({"w": torch.ones(3), "sd": net.state_dict()}))),
        ("numpy-pickle", "pickle of numpy arrays (protocol 2 and 5)", "pickle",
         lambda p: p.write_bytes(pickle.dumps({"a": np.arange(5.0), "s": np.float32(2)}, protocol=2)
                                 + pickle.dumps([np.ones((2, 2))], protocol=5))),
        ("joblib-arrays", "joblib dump of arrays", "joblib",
         lambda p: joblib.dump({"x": np.arange(100.0), "y": np.arange(7)}, p)),
    ]
    suffix = {"safetensors": ".safetensors", "npz": ".npz", "npy": ".npy", "numpy-pickle": ".pkl",
              "tensor-pickle": ".pkl", "joblib-arrays": ".joblib"}
    samples = []
    for name, desc, loader, write in files:
        path = root / f"benign-{name}{suffix.get(name, '.pt')}"
        write(path)
        samples.append(Sample(name, desc, loader, path, None, {}))
    if hf:
        samples.extend(_hf_samples(root))
    return samples


def _hf_samples(root: Path) -> list[Sample]:
    """An HF ``pytorch_model.bin`` (and its safetensors twin) from a tiny BERT built from a config, offline."""
    import torch

    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        return []
    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    model = BertModel(cfg)
    out = root / "hf"
    model.save_pretrained(out)  # config.json + model.safetensors
    # transformers >= 5 only writes safetensors; pytorch_model.bin is what 4.x wrote with safe_serialization=False
    # (torch.save of the state dict), still the bulk of the files on model hubs
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    torch.save({"config": cfg, "state_dict": model.state_dict()}, root / "benign-hf-config.pt")
    return [Sample("hf-pytorch_model.bin", "HF pytorch_model.bin (tiny BERT)", "torch",
                   out / "pytorch_model.bin", None, {}),
            Sample("hf-safetensors", "HF model.safetensors (tiny BERT)", "none",
                   out / "model.safetensors", None, {}),
            Sample("hf-config-pickled", "state dict + pickled transformers config", "torch",
                   root / "benign-hf-config.pt", None, {})]


def ours(path: Path) -> str:
    from torchwitness.rules.artifact import scan_model

    return scan_model(path).verdict.upper()


def install_others(venv_dir: Path) -> dict[str, Path]:
    """picklescan and modelscan in a throwaway venv: name -> its CLI, for each that installed."""
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True, capture_output=True)
    tools = {}
    for name in ("picklescan", "modelscan"):
        r = subprocess.run([str(venv_dir / "bin" / "pip"), "install", "-q", name], capture_output=True, text=True)
        if r.returncode == 0 and (venv_dir / "bin" / name).exists():
            tools[name] = venv_dir / "bin" / name
            version = subprocess.run([str(venv_dir / "bin" / "python"), "-c", "import importlib.metadata as m, sys; "
                                      "print(m.version(sys.argv[1]))", name], capture_output=True, text=True)
            print(f"{name} {version.stdout.strip()} installed in a throwaway venv")
        else:
            print(f"note: {name} could not be installed ({r.stderr.strip().splitlines()[-1:]}); column skipped")
    return tools


def other_verdict(tool: str, cli: Path, path: Path) -> str:
    args = [str(cli), "--path", str(path)] if tool == "picklescan" else [str(cli), "-p", str(path)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if tool == "picklescan":
        return {0: "clean", 1: "FLAGGED"}.get(r.returncode, f"error({r.returncode})")
    return {0: "clean", 1: "FLAGGED", 3: "unsupported"}.get(r.returncode, f"error({r.returncode})")


def prove_live(s: Sample) -> bool:
    assert s.marker is not None
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-c", LOADERS[s.loader], str(s.path)], capture_output=True, timeout=120,
                   cwd=s.path.parent, env=env, stdin=subprocess.DEVNULL)
    return s.marker.exists()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-others", action="store_true", help="skip picklescan and modelscan")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tw-scan-models-") as tmp:
        root = Path(tmp)
        payloads, benign = build_payloads(root / "payloads"), build_benign(root / "benign")
        start = time.perf_counter()
        for s in payloads + benign:
            s.verdicts["torchwitness"] = ours(s.path)
        took = time.perf_counter() - start
        executed = [s.name for s in payloads if s.marker is not None and s.marker.exists()]
        tools = {} if args.no_others else install_others(root / "venv")
        for tool, cli in tools.items():
            for s in payloads + benign:
                s.verdicts[tool] = other_verdict(tool, cli, s.path)
        executed += [s.name for s in payloads if s.marker is not None and s.marker.exists()
                     and s.name not in executed]
        for s in payloads:
            s.live = prove_live(s)
        columns = ["torchwitness", *tools]
        print(f"| kind | sample | how | live | {' | '.join(columns)} |")
        print(f"|---|---|---|---|{'---|' * len(columns)}")
        for s in payloads + benign:
            live = "n/a" if s.marker is None else "yes" if s.live else "NO"
            print(f"| {'payload' if s.marker else 'benign'} | {s.name} | {s.style} | {live} | "
                  + " | ".join(s.verdicts.get(c, "") for c in columns) + " |")
        live_payloads = [s for s in payloads if s.live]
        print(f"\n{len(payloads)} payloads ({len(live_payloads)} proven live), {len(benign)} benign files; "
              f"torchwitness scanned all {len(payloads) + len(benign)} in {took:.2f} s")
        for c in columns:
            caught = sum(s.verdicts[c] in ("ERROR", "FLAGGED") for s in live_payloads)
            false = sum(s.verdicts[c] in ("ERROR", "FLAGGED") for s in benign)
            print(f"{c}: {caught}/{len(live_payloads)} live payloads flagged, {false}/{len(benign)} benign flagged")
        print(f"markers created while scanning (must be none): {executed or 'none'}")
        ok = (not executed and all(s.verdicts["torchwitness"] == "ERROR" for s in live_payloads)
              and not any(s.verdicts["torchwitness"] == "ERROR" for s in benign)
              and len(live_payloads) == len(payloads))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
