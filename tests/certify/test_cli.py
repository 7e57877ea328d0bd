"""The certify / verify-cert / doctor / cert-schema commands, driven through the real entry point."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_model

from torchwitness.certify.edits import apply_edit, weights_digest
from torchwitness.ledger import iter_records, verify_run

FACTORY = "tiny_factory:build"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def tw(capsys):
    """Run the console entry point in-process (a subprocess would re-import torch for every call)."""
    from torchwitness.cli import main

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return invoke


@pytest.fixture(scope="module")
def files(tiny_lm, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    save_model(tiny_lm.model, str(d / "base.safetensors"))
    bad = tiny_lm.copy()
    with torch.no_grad():
        bad.transformer.h[0].attn.c_attn.weight.zero_()
    save_model(bad, str(d / "zeroed.safetensors"))
    text = tiny_lm.text_path.read_text()
    (d / "held.txt").write_text(text[int(len(text) * 0.9):])
    return d


def test_certify_edits_then_verify_cert_with_replay(files, tiny_lm, tmp_path, tw):
    run = tmp_path / "run"
    out = tmp_path / "certs"
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--data",
           str(files / "held.txt"), "--edit", "quant-int8", "--edit", "quant-int4-g16", "--run", str(run),
           "--out", str(out), "--windows", "120")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "PASS" in r.stdout and "ppl_ratio" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["quant-int4-g16.json", "quant-int8.json"]
    verify_run(run)
    records = list(iter_records(run, kinds={"edit.certificate"}))
    assert [rec["data"]["edit"] for rec in records] == ["quant-int8", "quant-int4-g16"]
    v = tw("verify-cert", str(out / "quant-int8.json"), "--run", str(run))
    assert v.returncode == 0 and v.stdout.startswith("OK certificate verifies"), v.stderr
    # replay needs the subject's weights: rebuild the int8 edit and save it
    subject = tiny_lm.copy()
    apply_edit(subject, "quant-int8")
    save_model(subject, str(tmp_path / "int8.safetensors"))
    v = tw("verify-cert", str(out / "quant-int8.json"), "--baseline", str(files / "base.safetensors"),
           "--subject", str(tmp_path / "int8.safetensors"), "--factory", FACTORY, "--data",
           str(files / "held.txt"), "--replay", "5", "--seed", "3")
    assert v.returncode == 0, v.stderr
    assert "replay of 5 windows" in v.stdout


def test_failing_subject_exits_1_and_tampered_certificate_exits_3(files, tmp_path, tw):
    cert = tmp_path / "zeroed.json"
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--subject", str(files / "zeroed.safetensors"),
           "--factory", FACTORY, "--data", str(files / "held.txt"), "--run", str(tmp_path / "run"), "-o", str(cert))
    assert r.returncode == 1, r.stderr
    assert "FAIL" in r.stdout and "transformer.h.0.attn.c_attn.weight (weight error 1)" in r.stdout
    doc = json.loads(cert.read_text())
    doc["decision"]["verdict"] = "pass"
    cert.write_text(json.dumps(doc))
    v = tw("verify-cert", str(cert))
    assert v.returncode == 3
    assert "stated verdict 'pass' does not follow" in v.stderr


def test_apply_save_keeps_a_passing_edit(files, tmp_path, tw):
    saved = tmp_path / "edited.safetensors"
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--data",
           str(files / "held.txt"), "--edit", "quant-int8", "--apply", "--save", str(saved), "--run",
           str(tmp_path / "run"), "--windows", "100")
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file

    record = next(iter_records(tmp_path / "run", kinds={"edit.certificate"}))
    assert record["data"]["action"] == "kept"
    assert weights_digest(load_file(str(saved))) != record["data"]["baseline_weights"]


def test_doctor_reports_stable_codes(files, tmp_path, tw):
    ok = tw("doctor", "--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--edit", "quant-int8",
            "--data", str(files / "held.txt"), "--json")
    assert ok.returncode == 0, ok.stderr
    codes = {c["code"]: c["level"] for c in json.loads(ok.stdout)}
    assert codes["TWD099"] == "ok" and codes["TWD010"] == "ok" and codes["TWD001"] == "ok"
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be " * 20)
    bad = tw("doctor", "--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--edit", "quant-int9",
             "--data", str(short), "--policy", "nope", "--json")
    assert bad.returncode == 2  # doctor's findings are input errors
    codes = {c["code"] for c in json.loads(bad.stdout) if c["level"] == "error"}
    assert codes == {"TWD004", "TWD010"}  # without a policy there is no data requirement to check
    bad = tw("doctor", "--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--subject",
             str(tmp_path / "missing.pt"), "--data", str(short), "--json")
    codes = {c["code"] for c in json.loads(bad.stdout) if c["level"] == "error"}
    assert codes == {"TWD002", "TWD022"}


def test_bad_input_is_one_line_and_exit_2(files, tw):
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--edit", "quant-int8", "--data",
           str(files / "held.txt"))
    assert r.returncode == 2 and "--factory" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cert_schema_is_json_schema(tw):
    r = tw("cert-schema")
    schema = json.loads(r.stdout)
    assert "Certificate" in json.dumps(schema) and r.returncode == 0


def test_hugging_face_folder_with_token_ids(tiny_lm, tmp_path, tw):
    import numpy as np

    tiny_lm.model.save_pretrained(tmp_path / "hf")
    np.save(tmp_path / "ids.npy", tiny_lm.held_out)
    r = tw("certify", "--baseline", str(tmp_path / "hf"), "--edit", "prune-50", "--data", str(tmp_path / "ids.npy"),
           "--policy", "lenient", "--run", str(tmp_path / "run"), "-o", str(tmp_path / "c.json"))
    assert r.returncode in (0, 1), r.stderr
    cert = json.loads((tmp_path / "c.json").read_text())
    assert cert["baseline"]["source"] == "hf:hf" and cert["baseline"]["weights"] == weights_digest(tiny_lm.model)
    assert tw("verify-cert", str(tmp_path / "c.json"), "--baseline", str(tmp_path / "hf"), "--subject",
              str(tmp_path / "hf")).returncode == 3  # the subject is the pruned model, not the baseline


def _one_line_error(r: Result) -> bool:
    return "Traceback" not in r.stderr + r.stdout and len(r.stderr.strip().splitlines()) == 1


def test_out_folder_with_one_subject_is_created_and_named_after_the_subject(files, tmp_path, tw):
    out = tmp_path / "certs"
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--subject", str(files / "zeroed.safetensors"),
           "--factory", FACTORY, "--data", str(files / "held.txt"), "--run", str(tmp_path / "run"), "-o",
           f"{out}/", "--windows", "100", "--threads", "1")
    assert r.returncode == 1, r.stderr  # the zeroed layer fails
    assert "zeroed: FAIL" in r.stdout and "subject" not in r.stdout.split("\n")[0]
    cert = json.loads((out / "zeroed.json").read_text())
    assert cert["environment"]["torch_threads"] == 1 and cert["environment"]["choice"] == "requested"
    changed = r.stdout.split("most changed layers: ")[1].splitlines()[0]
    assert changed == "transformer.h.0.attn.c_attn.weight (weight error 1)"  # unchanged layers are not listed
    again = tw("certify", "--baseline", str(files / "base.safetensors"), "--edit", "quant-int8", "--factory",
               FACTORY, "--data", str(files / "held.txt"), "--run", str(tmp_path / "run2"), "-o", str(out),
               "--windows", "100")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["quant-int8.json", "zeroed.json"]  # existing folder


def test_verify_cert_rejects_malformed_certificates_in_one_line(files, tmp_path, tw):
    cert = tmp_path / "c.json"
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--edit", "quant-int8", "--factory", FACTORY,
           "--data", str(files / "held.txt"), "--run", str(tmp_path / "run"), "-o", str(cert), "--windows", "100")
    assert r.returncode == 0, r.stderr
    good = json.loads(cert.read_text())
    huge = json.loads(cert.read_text())
    huge["statistics"]["rows"][3]["agree"] = 2**60  # beyond what JSON numbers hold exactly
    bad_rows = json.loads(cert.read_text())
    bad_rows["statistics"]["rows"] = [1, 2, 3]
    no_diag = json.loads(cert.read_text())
    no_diag["diagnostics"] = {}
    cases = {"huge": huge, "bad-rows": bad_rows, "no-diagnostics": no_diag, "list": [good], "created": {
        **good, "created_us": 2**70}}
    for name, doc in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        v = tw("verify-cert", str(path))
        assert v.returncode == 3 and _one_line_error(v), (name, v.stderr)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert tw("verify-cert", str(tmp_path / "deep.json")).returncode == 3
    assert tw("verify-cert", str(tmp_path / "missing.json")).returncode == 2
    assert tw("verify-cert", str(tmp_path)).returncode == 2


def test_data_without_a_full_window_says_so(files, tmp_path, tw):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be")
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--edit", "quant-int8", "--factory", FACTORY,
           "--data", str(short), "--run", str(tmp_path / "run"))
    assert r.returncode == 2 and _one_line_error(r)
    assert "the data holds 19 tokens: 0 window(s) of 128 tokens plus one target fit" in r.stderr


def test_doctor_reads_hugging_face_folders_without_torch_or_transformers(tiny_lm, tmp_path):
    """Doctor checks inputs and evaluates nothing: on HF folders with token ids it imports neither torch nor
    transformers (the CLI's preflight finished in 0.6-1.7 s on a loaded 2-core machine)."""
    import subprocess
    import sys

    import numpy as np

    tiny_lm.model.save_pretrained(tmp_path / "base")
    subject = tiny_lm.copy()
    apply_edit(subject, "quant-int8")
    subject.save_pretrained(tmp_path / "int8")
    np.save(tmp_path / "ids.npy", tiny_lm.held_out)
    script = ("import sys, json; from torchwitness.certify.doctor import preflight; "
              f"c = preflight({str(tmp_path / 'base')!r}, {str(tmp_path / 'int8')!r}, "
              f"data={str(tmp_path / 'ids.npy')!r}, key_dir={str(tmp_path / 'keys')!r}); "
              "print(json.dumps([[x.code, x.level] for x in c])); "
              "print('torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    checks, imported = done.stdout.strip().splitlines()
    assert ["TWD099", "ok"] in json.loads(checks), done.stdout + done.stderr
    assert imported == "False False"


def test_token_ids_the_model_cannot_look_up_are_named_before_any_work(files, tiny_lm, tmp_path, tw):
    import numpy as np

    ids = tiny_lm.held_out.copy()
    ids[5] = 10_000  # in the first window, beyond the 65-character vocabulary: the embedding lookup raises inside torch
    np.save(tmp_path / "ids.npy", ids)
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--edit", "quant-int8", "--factory", FACTORY,
           "--data", str(tmp_path / "ids.npy"), "--run", str(tmp_path / "run"), "--windows", "100")
    assert r.returncode == 2 and _one_line_error(r) and "token ids span [0, 10000], outside the model's " \
        "vocabulary [0, 64]" in r.stderr and "ids.npy" in r.stderr, r.stderr


def test_loading_folders_from_the_command_line_hides_what_plain_lms_never_use(tiny_lm, tmp_path):
    """A command-line certify of Hugging Face folders keeps transformers from importing torchao and scipy (~0.5
    s of a ~5 s run); both import normally afterwards, and a state dict's factory (user code) sees nothing
    hidden."""
    import subprocess
    import sys

    tiny_lm.model.save_pretrained(tmp_path / "base")
    script = (
        "import sys\n"
        "from torchwitness.certify.sources import lean_transformers_import, load_source\n"
        f"with lean_transformers_import([{str(tmp_path / 'base')!r}, None]):\n"
        f"    load_source({str(tmp_path / 'base')!r})\n"
        "during = 'torchao' in sys.modules and sys.modules['torchao'] is not None, 'scipy.optimize' in sys.modules\n"
        "import scipy, torchao\n"
        "print(during, sys.modules['scipy'] is not None, sys.modules['torchao'] is not None)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "(False, False) True True", done.stdout + done.stderr
    factory = ("import sys\n"
               "from torchwitness.certify.sources import lean_transformers_import\n"
               f"with lean_transformers_import([{str(tmp_path / 'base' / 'config.json')!r}]):\n"
               "    print(sys.modules.get('scipy', 0) is None)\n")
    done = subprocess.run([sys.executable, "-c", factory], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stdout + done.stderr


def test_verify_cert_exit_codes_hold_against_a_team_that_certified_its_own_model(files, tmp_path, tw):
    """A failed edit's true certificate verifies and exits 1 (a CI gate stops); a forged 'pass' hidden behind a
    duplicate key, a byte order mark, a policy that borrows a built-in tier's name, or the wrong required policy
    each fail (3); malformed arguments are usage errors (2)."""
    cert = tmp_path / "zeroed.json"
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--subject", str(files / "zeroed.safetensors"),
           "--factory", FACTORY, "--data", str(files / "held.txt"), "--run", str(tmp_path / "run"), "-o", str(cert))
    assert r.returncode == 1, r.stderr
    v = tw("verify-cert", str(cert))
    assert v.returncode == 1 and v.stdout.startswith("OK certificate verifies: verdict fail"), v.stderr
    assert tw("verify-cert", str(cert), "--policy", "balanced").returncode == 1
    wrong = tw("verify-cert", str(cert), "--policy", "lenient")
    assert wrong.returncode == 3 and "not the required policy 'lenient'" in wrong.stderr
    text = cert.read_text()
    dup = tmp_path / "dup.json"
    dup.write_text('{"decision": {"verdict": "pass"}, ' + text.lstrip()[1:])
    v = tw("verify-cert", str(dup))
    assert v.returncode == 3 and "appears twice" in v.stderr
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert tw("verify-cert", str(bom)).returncode == 3
    for args in (["--key", "garbage"], ["--replay", "-3"], ["--seed", "-1"]):
        bad = tw("verify-cert", str(cert), *args)
        assert bad.returncode == 2 and _one_line_error(bad), (args, bad.stderr)
    from torchwitness.certify.policy import load_policy

    doc = load_policy("balanced").document
    doc["metrics"]["ppl_ratio"]["max"] = 100.0
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(doc))
    r = tw("certify", "--baseline", str(files / "base.safetensors"), "--subject", str(files / "zeroed.safetensors"),
           "--factory", FACTORY, "--data", str(files / "held.txt"), "--policy", str(evil))
    assert r.returncode == 2 and "named 'balanced' but differs" in r.stderr


def test_verify_cert_names_a_model_it_cannot_load_as_bad_input(files, tmp_path, tw):
    cert = tmp_path / "c.json"
    assert tw("certify", "--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--data",
              str(files / "held.txt"), "--edit", "quant-int8", "--run", str(tmp_path / "run"), "--windows", "100",
              "-o", str(cert)).returncode == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    v = tw("verify-cert", str(cert), "--baseline", str(broken), "--subject", str(broken))
    assert v.returncode == 2 and str(broken) in v.stderr and _one_line_error(v), v.stderr
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes((files / "base.safetensors").read_bytes()[:100])
    v = tw("verify-cert", str(cert), "--baseline", str(truncated), "--subject", str(truncated), "--factory", FACTORY)
    assert v.returncode == 2 and "cannot read these weights" in v.stderr and _one_line_error(v), v.stderr


def test_doctor_turns_every_bad_input_into_a_coded_row(files, tiny_lm, tmp_path, tw):
    import numpy as np

    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes((files / "base.safetensors").read_bytes()[:100])
    tiny_lm.model.save_pretrained(tmp_path / "quantized")
    config = json.loads((tmp_path / "quantized" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (tmp_path / "quantized" / "config.json").write_text(json.dumps(config))
    ids = tiny_lm.held_out.copy()
    ids[3] = -1
    np.save(tmp_path / "neg.npy", ids)
    (tmp_path / "folder").mkdir()
    cases = [(["--baseline", str(truncated), "--factory", FACTORY, "--edit", "quant-int8"], "TWD001"),
             (["--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--edit", "quant-int8",
               "--data", str(tmp_path / "neg.npy")], "TWD024"),
             (["--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--edit", "quant-int8",
               "--data", str(tmp_path / "folder")], "TWD020")]
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        cases.append((["--baseline", str(tmp_path / "quantized"), "--edit", "quant-int8"], "TWD050"))
    for args, code in cases:
        r = tw("doctor", *args, "--json")
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        errors = {c["code"] for c in json.loads(r.stdout) if c["level"] == "error"}
        assert code in errors, (args, r.stdout)


def test_a_built_in_edit_is_rebuilt_from_the_baseline_to_check_and_replay_its_certificate(files, tmp_path, tw):
    cert = tmp_path / "int4.json"
    assert tw("certify", "--baseline", str(files / "base.safetensors"), "--factory", FACTORY, "--data",
              str(files / "held.txt"), "--edit", "quant-int4-g16", "--run", str(tmp_path / "run"), "--windows",
              "100", "-o", str(cert)).returncode in (0, 1)
    v = tw("verify-cert", str(cert), "--baseline", str(files / "base.safetensors"), "--factory", FACTORY,
           "--data", str(files / "held.txt"), "--replay", "4")
    assert v.returncode in (0, 1) and "subject rebuilt by quant-int4-g16" in v.stdout, v.stderr
    assert "replay of 4 windows" in v.stdout
    other = tw("verify-cert", str(cert), "--baseline", str(files / "zeroed.safetensors"), "--factory", FACTORY)
    assert other.returncode == 3 and "baseline model's weights do not match" in other.stderr
