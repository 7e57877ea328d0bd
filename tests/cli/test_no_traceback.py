"""No input ends in a Python traceback: every verb that reads a file turns a bad one into one line naming what is
wrong, and a non-zero exit.

The verbs and their file parameters are read off the typer app (a parameter annotated ``Path``), so a new verb is
driven too; a file parameter whose role is unknown, or a verb whose required options are not listed below, fails
the test until it is added here. Each case runs in process through typer's ``CliRunner``; the read-only run
folder is made unwritable by mode bits, or with the immutable attribute when the tests run as root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.writer import Ledger

pytestmark = pytest.mark.slow

# What a Path parameter holds, by its name: every file parameter of every verb must be listed.
ROLES = {"run": "run", "run_a": "run", "run_b": "run", "run_dir": "run", "output": "output", "out": "output",
         "demo.out": "output folder",
         "write_baseline": "output", "save": "output", "rdf": "output", "proof": "json", "cert": "json",
         "policy": "json", "baseline": "json", "since": "text", "key_dir": "folder", "data": "folder",
         "paths": "source", "files": "source", "state": "state", "witness verify-timestamp.root": "text"}
# Required (or needed) options that are not files, per verb: enough for the verb to reach its files.
OPTIONS = {
    "audit": ["no_such_module:factory"], "certify": ["--baseline", "no-such-model.pt"],
    "doctor": ["--baseline", "no-such-model.pt"], "prove": ["--seq", "0"], "erase": ["--subject", "user-1"],
    "explain-decision": ["--decision", "r-1-0", "--factory", "no_such_module:factory"],
    "provenance": ["--subject", "user-1"], "export": ["--to", "rdf", "--target", "{tmp}/export.ttl"],
    "retention": ["--days", "200"], "replay-record": ["--factory", "no_such_module:factory"],
    "incident add": ["--id", "inc-1"], "incident report": ["--id", "inc-1", "--authority", "AI Office"],
    "review decide": ["--decision", "r-1-0", "--action", "approve", "--reviewer", "r"],
    "review stop": ["--who", "a", "--reason", "b"], "review resume": ["--who", "a", "--reason", "b"],
    "explain": ["TW001"], "consistency": ["--from", "1"], "witness add-log": ["name+00000000+AAAA"],
    "witness submit": ["--witness", "http://127.0.0.1:9", "--timeout", "1"],
    "witness timestamp": ["--tsa", "http://127.0.0.1:9", "--timeout", "1"],
}
REQUIRED_FILES: set[tuple[str, str]] = set()  # (verb, parameter) of required file options, filled below
DEEP = "[" * 200_000 + "]" * 200_000
BIG = '{"format": "x", "n": 123456789012345678901234567890}'
CONTENTS = {"empty": b"", "binary": bytes(range(256)) * 4, "wrong type": b"[1]", "string": b'"text"',
            "deep": DEEP.encode(), "big integer": BIG.encode(), "null": b"null"}


def _verbs() -> list[tuple[str, list[tuple[str, str, bool]]]]:
    """(verb, [(parameter name, its first option or '' for an argument, role)]) for every verb with a file."""
    out = []

    def walk(command: typing.Any, prefix: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*prefix, name))
            return
        hints = typing.get_type_hints(command.callback)
        files = []
        for p in command.params:
            if "Path" in str(hints.get(p.name)):
                role = ROLES.get(f"{' '.join(prefix)}.{p.name}", ROLES.get(p.name))
                assert role, f"{' '.join(prefix)}: say what its file parameter {p.name!r} holds in ROLES"
                option = "" if type(p).__name__.endswith("Argument") else p.opts[0]
                files.append((p.name, option, role))
                if option and getattr(p, "required", False):
                    REQUIRED_FILES.add((" ".join(prefix), p.name))
            elif getattr(p, "required", False):
                assert " ".join(prefix) in OPTIONS, f"{' '.join(prefix)}: give its required {p.name!r} in OPTIONS"
        if files:
            out.append((" ".join(prefix), files))

    walk(typer.main.get_command(app), ())
    return out


VERBS = _verbs()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed run with personal values and a proof of its first record; its key is in ``../keys``."""
    root = tmp_path_factory.mktemp("template") / "run"
    with Ledger.open(root, key_dir=root.parent / "keys") as ledger:
        for i in range(5):
            ledger.append("note", {"who": Personal(f"user-{i}"), "i": i})
    result = CliRunner().invoke(app, ["prove", str(root), "--seq", "0", "-o", str(root.parent / "proof.json")])
    assert result.exit_code == 0, result.output
    return root


def _mutations(role: str) -> list[str]:
    if role == "run":
        files = ["ledger.json", "records/000000.jsonl", "records/leaves.idx", "checkpoints/{note}",
                 "keys/signer.vkey", "private/personal.sqlite"]
        return (["missing", "a file", "records a file", "checkpoints a file", "keys a file", "private a file"]
                + [f"{f}: {c}" for f in files for c in [*CONTENTS, "folder"]]
                + [f"record line: {c}" for c in CONTENTS if c != "empty"]
                + [f"run.json: {c}" for c in ("binary", "deep", "wrong type", "big integer")])  # distributed
    if role in ("json", "text"):
        return ["missing", "folder", "truncated", *CONTENTS,
                *(["record a number", "record a JSON string"] if role == "json" else [])]
    if role == "output":
        return ["missing folder", "a folder"]
    if role == "output folder":  # made if missing, with its parents
        return ["a file"]
    if role == "state":  # a witness's state folder: made if missing (and served from, which never returns)
        return ["a file"]
    if role == "folder":
        return ["missing", "a file", "binary keys"]
    return ["missing", "binary", "deep", "empty", "folder of binary"]  # sources


def _write(path: Path, content: bytes | str) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def _make(role: str, mutation: str, tmp: Path, template: Path) -> Path:
    """The bad value of a parameter of ``role``: a path made according to ``mutation``."""
    if role == "run":
        run = tmp / "run"
        shutil.copytree(template, run)
        if mutation == "missing":
            shutil.rmtree(run)
        elif mutation == "a file":
            shutil.rmtree(run)
            run.write_bytes(CONTENTS["binary"])
        elif mutation.endswith(" a file"):
            _write(run / mutation.split()[0], CONTENTS["binary"])
        elif mutation.startswith("record line: "):  # the signed record seq 2 replaced
            segment = run / "records" / "000000.jsonl"
            lines = segment.read_bytes().split(b"\n")
            lines[2] = CONTENTS[mutation.removeprefix("record line: ")]
            segment.write_bytes(b"\n".join(lines))
        else:
            name, kind = mutation.split(": ")
            name = name.replace("{note}", sorted((run / "checkpoints").iterdir())[0].name)
            if kind == "folder":
                (run / name).unlink()
                (run / name).mkdir()
            else:
                _write(run / name, CONTENTS[kind])
        return run
    path = tmp / "input"
    if mutation == "missing":
        return path
    if role == "output":
        if mutation == "a folder":
            path.mkdir()
            return path
        return tmp / "no-such-folder" / "out.file"
    if mutation in ("folder", "a file", "folder of binary", "binary keys"):  # "a file" where a folder is wanted
        if mutation == "a file":
            _write(path, CONTENTS["binary"])
        else:
            path.mkdir()
            if mutation != "folder":
                for name in ("key.pem", "signer.key", "model.py", "weights.pt"):
                    (path / name).write_bytes(CONTENTS["binary"])
        return path
    if mutation == "truncated":
        proof = (template.parent / "proof.json").read_bytes()
        _write(path, proof[: len(proof) // 2])
    elif mutation.startswith("record a "):  # a proof whose record is not a record
        other = '1' if mutation.endswith("number") else '"\\"text\\""'
        _write(path, (template.parent / "proof.json").read_text().replace('"record": "', f'"record": {other}, "x": "'))
    else:
        _write(path, CONTENTS[mutation])
    if role == "source":
        path = path.rename(path.with_suffix(".py"))
    return path


def _argv(verb: str, files: list[tuple[str, str, str]], target: str, value: Path, tmp: Path,
          template: Path) -> list[str]:
    """The command line: ``value`` for the parameter ``target``, sound values for the other files."""
    args = verb.split()
    for name, option, role in files:
        if name == target:
            chosen = str(value)
        elif role == "run":
            good = tmp / f"good-{name}"
            shutil.copytree(template, good)
            chosen = str(good)
        elif role == "source":
            (tmp / "ok.py").write_text("x = 1\n")
            chosen = str(tmp / "ok.py")
        elif option and (verb, name) not in REQUIRED_FILES:
            continue  # an optional file left out
        elif role == "state":
            chosen = str(tmp / "state")  # a witness's state folder, made on first use
        else:  # a required file argument, e.g. a proof or a certificate
            chosen = str(template.parent / "proof.json")
        args += [option, chosen] if option else [chosen]
    return args + [a.replace("{tmp}", str(tmp)) for a in OPTIONS.get(verb, [])]


def _needed(role: str, option: str, mutation: str) -> bool:
    """Whether every verb given this input must refuse it. A run's index, checkpoints, keys, private stores and
    records are read by some verbs only (``show`` lists records without the index, ``incident add`` appends
    without reading records), so a verb may rightly succeed then; a ``--run`` to record into may be new; and
    an empty or deeply bracketed source file is for the scanner's parser to judge."""
    if role == "source":
        return mutation in ("missing", "binary", "folder of binary")
    if role != "run":
        return True
    if option == "--run" and mutation == "missing":
        return False
    return mutation in ("missing", "a file", "records a file") or mutation.startswith("ledger.json")


def _check(args: list[str], runner: Callable[[list[str], Path], tuple[int, str]], keys: Path,
           needed: bool = True) -> None:
    """No traceback; a non-zero exit when the input is one the verb ``needed``; and a failure says why, in one
    line (or in click's usage message, or in a report such as ``doctor``'s table)."""
    code, output = runner(args, keys)
    assert "Traceback" not in output, (args, output)
    errors = [line for line in output.splitlines() if line.startswith(("error:", "torchwitness: error:"))]
    assert len(errors) <= 1, (args, output)
    if needed:
        assert code != 0, (args, output)
    if code != 0:
        assert output.strip(), args


def _in_process(args: list[str], keys: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env={"TORCHWITNESS_KEY_DIR": str(keys)})
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    return result.exit_code, result.output


CASES = [(verb, files, name, role, mutation) for verb, files in VERBS for name, _, role in files
         for mutation in _mutations(role)]


def test_every_verb_with_a_file_is_driven() -> None:
    verbs = {v for v, _ in VERBS}
    assert {"verify", "verify-proof", "show", "erase", "report", "card", "export", "diff", "retention", "expire",
            "incident add", "verify-cert", "findings", "spans", "provenance", "scan", "scan-model"} <= verbs
    assert len(CASES) > 450


@settings(max_examples=260, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=st.sampled_from(CASES))
def test_a_bad_file_is_one_line_and_a_non_zero_exit(case: tuple, template: Path,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    verb, files, name, role, mutation = case
    tmp = tmp_path_factory.mktemp("case")
    value = _make(role, mutation, tmp, template)
    option = next(o for n, o, _ in files if n == name)
    _check(_argv(verb, files, name, value, tmp, template), _in_process, template.parent / "keys",
           _needed(role, option, mutation))


# Documents the verbs parse: JSON of any shape (integers of any size among it), or arbitrary bytes.
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=4), max_leaves=12)
_DOCUMENTS = [(verb, files, name, role) for verb, files in VERBS for name, _, role in files if role in ("json", "text")]


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=st.sampled_from([*_DOCUMENTS, ("verify", [("run", "", "run")], "run", "ledger.json")]),
       content=st.one_of(st.binary(max_size=64), _JSON.map(lambda v: json.dumps(v).encode())))
def test_any_document_content_is_refused_in_one_line_or_accepted(case: tuple, content: bytes, template: Path,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """Random bytes and random JSON (some of it valid: ``[]`` is an empty baseline) as a document: never a
    traceback, and a refusal is one line."""
    verb, files, name, role = case
    tmp = tmp_path_factory.mktemp("case")
    if role == "ledger.json":  # any manifest but a run's own is refused, whichever verb reads it
        value = Path(shutil.copytree(template, tmp / "run"))
        (value / "ledger.json").write_bytes(content)
    else:
        value = tmp / "input"
        value.write_bytes(content)
    _check(_argv(verb, files, name, value, tmp, template), _in_process, template.parent / "keys", needed=False)


@pytest.mark.parametrize("verb", sorted({v for v, _ in VERBS}))
def test_every_verb_refuses_deep_binary_and_wrong_type_runs_and_documents(verb: str, template: Path,
                                                                        tmp_path_factory: pytest.TempPathFactory
                                                                        ) -> None:
    (files,) = [f for v, f in VERBS if v == verb]
    for name, option, role in files:
        for mutation in {"run": ["ledger.json: deep", "ledger.json: wrong type", "ledger.json: big integer",
                                 "records a file"],
                         "json": ["deep", "wrong type", "big integer", "folder", "record a JSON string"],
                         "text": ["binary", "folder"],
                         "output": ["missing folder"], "folder": ["a file"], "output folder": ["a file"],
                         "state": ["a file"],
                         "source": ["missing", "binary", "deep"]}[role]:
            tmp = tmp_path_factory.mktemp("case")
            _check(_argv(verb, files, name, _make(role, mutation, tmp, template), tmp, template), _in_process,
                   template.parent / "keys", _needed(role, option, mutation))


def test_a_damaged_distributed_run_manifest_is_one_line(template: Path,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    for verb in ("verify", "findings"):
        (files,) = [f for v, f in VERBS if v == verb]
        for content in ("binary", "deep", "wrong type", "big integer", "null"):
            tmp = tmp_path_factory.mktemp("case")
            run = _make("run", f"run.json: {content}", tmp, template)
            _check(_argv(verb, files, "run", run, tmp, template), _in_process, template.parent / "keys")


@pytest.mark.parametrize("verb", ["show", "report", "card", "coverage", "export", "verify --deep"])
def test_a_damaged_record_is_refused_by_the_verbs_that_read_every_record(verb: str, template: Path,
                                                                        tmp_path_factory: pytest.TempPathFactory
                                                                        ) -> None:
    head, *flags = verb.split()
    (files,) = [f for v, f in VERBS if v == head]
    for mutation in ("binary", "wrong type", "deep", "big integer" if flags else "null"):
        tmp = tmp_path_factory.mktemp("case")
        run = _make("run", f"record line: {mutation}", tmp, template)
        _check([*_argv(head, files, "run", run, tmp, template), *flags], _in_process, template.parent / "keys")


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` and everything in it unwritable: by mode bits, or, as root (whom modes do not stop), with
    the immutable attribute (skipped where the file system or the container does not allow it)."""
    paths = [folder, *folder.rglob("*")]
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield
        finally:
            for path in paths:
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True).returncode:
        subprocess.run([chattr or "true", "-i", *map(str, paths)], capture_output=True)
        pytest.skip("cannot make a folder read-only for root here (no chattr +i)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, paths)], check=True)


def _subprocess(args: list[str], keys: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TORCHWITNESS_KEY_DIR": str(keys)}
    env.pop("TORCHWITNESS_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "torchwitness", *args], capture_output=True, text=True, env=env,
                          timeout=60)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("verb", ["erase", "retention", "incident add", "expire", "provenance", "review stop"])
def test_a_read_only_run_folder_is_one_line(verb: str, template: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(template, tmp_path / "read-only"))
    (files,) = [f for v, f in VERBS if v == verb]
    with _read_only(folder):
        _check(_argv(verb, files, "run", folder, tmp_path, template), _in_process, template.parent / "keys")
        if verb == "erase":  # and in a real process, as a user runs it
            _check(_argv(verb, files, "run", folder, tmp_path, template), _subprocess, template.parent / "keys")


def test_real_processes_print_no_traceback(template: Path, tmp_path: Path) -> None:
    """The console entry point itself, for a folder given as a proof and a 200,000-deep ledger.json."""
    bad = Path(shutil.copytree(template, tmp_path / "run"))
    (bad / "ledger.json").write_text(DEEP)
    for args in (["verify-proof", str(tmp_path)], ["verify", str(bad)], ["show", str(bad)]):
        code, output = _subprocess(args, template.parent / "keys")
        assert code == 2 and "Traceback" not in output and output.count("\n") == 1, (args, output)


def test_an_unforeseen_exception_is_one_line_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last resort, for what no reader foresaw: a schema lookup that raises a plain Python error stands in for
    any bug. One line and exit 2; TORCHWITNESS_DEBUG=1 lets the traceback through for a developer."""
    from torchwitness.ledger import schema

    def broken(kind: str | None = None) -> dict:
        raise ValueError("an unforeseen\nmulti-line failure")

    monkeypatch.setattr(schema, "json_schemas", broken)
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.output == "torchwitness: error: ValueError: an unforeseen multi-line failure\n"
    debug = CliRunner().invoke(app, ["schema"], env={"TORCHWITNESS_DEBUG": "1"})
    assert isinstance(debug.exception, ValueError)
