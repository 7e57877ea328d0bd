"""Zero retention by default; with retention on, seeded PII is redacted first; retention periods and erase."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from torchwitness.controls.content import ContentPolicy, expire
from torchwitness.controls.redaction import iban_valid, luhn_valid, redact
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run
from torchwitness.probes.agent import AgentTracer
from torchwitness.run import Run

PII = {
    "email": "jane.doe+bank@example-mail.co.uk",
    "phone": "+33 6 12 34 56 78",
    "iban": "DE89 3704 0044 0532 0130 00",
    "card": "4532 0151 1283 0366",
}
PROMPT = (f"Hi, I am Jane. Mail me at {PII['email']} or call {PII['phone']}. Refund to {PII['iban']}, "
          f"not to my card {PII['card']}. Order 1234567812345678 is not a card number.")


def _run_folder_bytes(run_dir) -> bytes:
    return b"".join(p.read_bytes() for p in run_dir.rglob("*") if p.is_file())


def test_redaction_finds_each_kind_and_validates_checksums():
    r = redact(PROMPT)
    assert r.counts == {"email": 1, "phone": 1, "iban": 1, "card": 1}
    for value in PII.values():
        assert value not in r.text
    assert "1234567812345678" in r.text  # fails the Luhn check, so it is not a card
    assert luhn_valid("4532015112830366") and not luhn_valid("1234567812345678")
    assert iban_valid(PII["iban"]) and not iban_valid("DE89 3704 0044 0532 0130 01")
    assert redact("nothing personal here").counts == {}


def test_dates_are_not_phone_numbers():
    r = redact("Shipped 2026-11-24, due 24.11.2026 or 1 12 2026; questions to 030 1234 5678 or 0171-555-1234.")
    assert r.counts == {"phone": 2}
    assert "2026-11-24" in r.text and "24.11.2026" in r.text and "1 12 2026" in r.text


def test_default_keeps_no_text_anywhere(tmp_path):
    with Run(tmp_path / "run") as run:
        fields = ContentPolicy().commit(run, prompt=PROMPT, completion="Refund issued to Jane Doe")
        run.record("llm.note", fields)
        store = run.ledger.personal
        assert store.lookup(PROMPT) == fields["prompt"]["$personal"]
    blob = _run_folder_bytes(tmp_path / "run")
    for needle in [PROMPT, "Refund issued", *PII.values()]:
        assert needle.encode() not in blob
    assert "prompt_redactions" not in fields


def test_retention_on_redacts_seeded_pii_and_counts(tmp_path):
    policy = ContentPolicy(retain=True)
    with Run(tmp_path / "run", retain_personal=True) as run:
        tracer = AgentTracer(run, content=policy)
        with tracer.agent("support", input=PROMPT) as step:
            step.output = f"I will call {PII['phone']}"
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"agent.step"})]
    assert record["input_redactions"] == {"card": 1, "email": 1, "iban": 1, "phone": 1}
    assert record["output_redactions"] == {"phone": 1}
    blob = _run_folder_bytes(tmp_path / "run")
    for value in PII.values():
        assert value.encode() not in blob, value
    db = sqlite3.connect(tmp_path / "run" / "private" / "personal.sqlite")
    kept = {row[0] for row in db.execute("SELECT cleartext FROM personal WHERE cleartext IS NOT NULL")}
    db.close()
    assert any("[EMAIL]" in text and "[IBAN]" in text and "Hi, I am Jane." in text for text in kept)


def test_retention_policy_must_match_the_run(tmp_path):
    with Run(tmp_path / "a", retain_personal=True) as run, pytest.raises(InputError, match="unredacted"):
        ContentPolicy().commit(run, prompt="x")
    with Run(tmp_path / "b") as run, pytest.raises(InputError, match="retain_personal=True"):
        ContentPolicy(retain=True).commit(run, prompt="x")
    with pytest.raises(InputError, match="positive"):
        ContentPolicy(retention={"prompt": 0})


def test_per_field_retention_periods_expire_through_erasure(tmp_path):
    policy = ContentPolicy(retention={"prompt": dt.timedelta(days=30), "completion": 180 * 86400})
    with Run(tmp_path / "run") as run:
        fields = policy.commit(run, prompt="p1", completion="c1")
        run.record("llm.note", fields)
        now = dt.datetime.now(dt.timezone.utc)
        assert expire(run, now=now) == 0
        assert expire(run, now=now + dt.timedelta(days=31)) == 1
        assert run.ledger.personal.lookup("p1") is None and run.ledger.personal.lookup("c1") is not None
        assert expire(run, now=now + dt.timedelta(days=181)) == 1
        assert run.ledger.personal.lookup("c1") is None
    result = verify_run(tmp_path / "run")
    assert result.erased_payloads == 2
    reasons = [r["data"]["reason"] for r in iter_records(tmp_path / "run", kinds={"erasure"})]
    assert reasons == ["retention period of 'prompt' elapsed", "retention period of 'completion' elapsed"]


def test_erase_content_by_its_text(tmp_path):
    policy = ContentPolicy(retain=True)
    with Run(tmp_path / "run", retain_personal=True) as run:
        run.record("llm.note", policy.commit(run, prompt=PROMPT))
        assert policy.erase(run, PROMPT) == 1
        assert run.ledger.personal.lookup(redact(PROMPT).text) is None
    assert verify_run(tmp_path / "run").erased_payloads == 1
    assert b"Hi, I am Jane." not in (tmp_path / "run" / "private" / "personal.sqlite").read_bytes()


def test_presidio_hook_names_its_package_when_missing():
    import importlib.util

    if importlib.util.find_spec("presidio_analyzer") is not None:
        r = redact("Call Jane Doe tomorrow.", presidio=True)
        assert "Jane Doe" not in r.text and r.total >= 1
    else:
        with pytest.raises(InputError, match="pip install presidio-analyzer"):
            redact("Call Jane Doe tomorrow.", presidio=True)
