"""``verify-cert``: re-derive a certificate from its committed per-window values and check its signature.

Steps, in order; the first failure raises :class:`~torchwitness.errors.CertificateError` with its reason.
Content checks come before the signature so a failure names *what* changed (a window, a statistic, the
verdict), not only that something did; a certificate verifies only when every step holds.

1. The document follows the published schema (:func:`.certificate.certificate_schema`).
2. The per-window rows reproduce the committed Merkle root.
3. The embedded policy reproduces its digest.
4. Every statistic recomputed from the rows (same seeded bootstrap) equals the stated one.
5. The verdict and reasons recomputed from those statistics and the policy equal the stated ones.
6. The Ed25519 signature verifies with the embedded key (and that key is the pinned one, if pinned).
7. Optional: model weight and tokenizer digests, data digest, ``replay`` of K random windows on the models,
   and the run folder's ledger holding an ``edit.certificate`` record of this exact certificate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from torchwitness.certify.certificate import Certificate, cert_digest, check_signature, rows_root
from torchwitness.certify.policy import Policy, impersonates, policy_from_document
from torchwitness.certify.stats import compute_statistics, decide, delta_tokens
from torchwitness.errors import CertificateError, InputError, TorchWitnessError
from torchwitness.jsonfile import read_json
from torchwitness.ledger.encoding import decode_float, snapshot

_REL_TOL = 1e-9
_REPLAY_REL_TOL = 1e-4


@dataclass
class CertCheck:
    verdict: str
    signer: str
    windows: int
    checks: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"OK certificate verifies: verdict {self.verdict}, {self.windows} windows, signer {self.signer}; "
                f"checked {', '.join(self.checks)}")


def load_certificate(path: str | Path) -> dict[str, Any]:
    try:
        cert = read_json(path, "certificate", CertificateError)
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a certificate file") from None
    except OSError as e:
        raise InputError(f"cannot read the certificate {path}: {e.strerror or e}") from None
    except RecursionError:
        raise CertificateError(f"certificate {path} is nested too deeply to be a certificate") from None
    if not isinstance(cert, dict):
        raise CertificateError(f"certificate {path} is JSON but not an object")
    return cert


def _close(a: Any, b: Any, path: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            raise CertificateError(f"{path}: fields differ from the recomputed ones",
                                   expected=str(sorted(b)), computed=str(sorted(a)))
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
        return
    numeric = (int, float)
    if isinstance(a, (*numeric, dict)) and isinstance(b, (*numeric, dict)) and not isinstance(a, bool):
        try:
            x, y = decode_float(a), decode_float(b)
        except (KeyError, TypeError, ValueError):
            x, y = math.nan, 0.0
        if x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=_REL_TOL, abs_tol=1e-12):
            return
    elif a == b:
        return
    raise CertificateError(f"{path}: stated value does not follow from the per-window statistics",
                           expected=repr(b), computed=repr(a))


def verify_certificate(cert: dict[str, Any] | str | Path, *, key: str | None = None, baseline: Any = None,
                       subject: Any = None, factory: str | None = None, tokens: np.ndarray | None = None,
                       replay: int = 0, seed: int | None = None, run: str | Path | None = None,
                       batch_size: int = 16, policy: Policy | None = None) -> CertCheck:
    """Verify a certificate (a dict or a path); return what was checked or raise ``CertificateError``.

    Anything malformed that the schema lets through (an integer beyond JSON's exact range, a row of the wrong
    shape, a missing diagnostics field) is a failed verification naming what broke, never another exception.
    ``policy`` requires the certificate to have been judged under exactly that policy.
    """
    if replay < 0 or (seed is not None and seed < 0):
        raise InputError("--replay and --seed must be >= 0")
    if not isinstance(cert, dict):
        cert = load_certificate(cert)
    try:
        return _verify(cert, key=key, baseline=baseline, subject=subject, factory=factory, tokens=tokens,
                       replay=replay, seed=seed, run=run, batch_size=batch_size, required_policy=policy)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e).splitlines()[0] if str(e) else ""
        raise CertificateError(f"certificate is malformed: {type(e).__name__}: {detail}"[:300]) from None


def _verify(cert: dict[str, Any], *, key, baseline, subject, factory, tokens, replay, seed, run,
            batch_size, required_policy) -> CertCheck:
    # 1. schema
    try:
        msgspec.convert(cert, Certificate)
    except msgspec.ValidationError as e:
        raise CertificateError(f"certificate does not follow the schema: {e}") from None
    stats, decision = cert["statistics"], cert["decision"]
    rows = stats["rows"]
    checks = ["schema"]
    # 2. Merkle root over the per-window rows
    computed_root = rows_root(rows)
    if computed_root != stats["merkle_root"]:
        raise CertificateError("per-window statistics do not match the committed Merkle root (a per-window "
                               "value was changed, added or removed)", expected=stats["merkle_root"],
                               computed=computed_root)
    if [r.get("i") for r in rows] != list(range(len(rows))):
        raise CertificateError("per-window rows are not numbered 0..n-1 in order")
    checks.append("merkle root")
    # 3. policy digest
    try:
        policy = policy_from_document(cert["policy"]["document"], "embedded policy")
    except InputError as e:
        raise CertificateError(str(e)) from None
    if policy.digest != cert["policy"]["digest"]:
        raise CertificateError("the embedded policy does not match its digest", expected=cert["policy"]["digest"],
                               computed=policy.digest)
    if impersonates(policy):
        raise CertificateError(f"the embedded policy is named {policy.name!r} but is not the built-in "
                               f"{policy.name} policy (its margins differ)")
    if required_policy is not None and policy.digest != required_policy.digest:
        raise CertificateError(f"the certificate's policy {policy.name!r} is not the required policy "
                               f"{required_policy.name!r}", expected=required_policy.digest, computed=policy.digest)
    checks.append("policy digest")
    # 4. statistics
    try:
        recomputed = snapshot(compute_statistics(cert["task"], rows, policy))[0]
    except (InputError, KeyError, ValueError, TypeError) as e:
        raise CertificateError(f"per-window rows cannot be re-analysed: {e}") from None
    for part in ("totals", "metrics", "bootstrap"):
        _close(stats[part], recomputed[part], f"statistics.{part}")
    checks.append("statistics")
    # 5. verdict and reasons
    diag = cert["diagnostics"]
    verdict, reasons, rejected = decide(recomputed, policy, invariants=diag["invariants"]["violations"],
                                        diagnostic_failures=diag["failures"])
    if verdict != decision["verdict"]:
        raise CertificateError(f"the stated verdict {decision['verdict']!r} does not follow from the statistics "
                               f"and the policy, which give {verdict!r}", expected=verdict,
                               computed=decision["verdict"])
    if reasons != decision["reasons"] or rejected != decision["holm"] or decision["alpha"] != policy.alpha:
        raise CertificateError("the stated reasons or Holm decisions differ from the recomputed ones",
                               expected=json.dumps(reasons), computed=json.dumps(decision["reasons"]))
    checks.append("verdict")
    # 6. signature
    try:
        public = check_signature(cert)
    except (ValueError, TorchWitnessError) as e:
        raise CertificateError(f"signature: {e}") from None
    if key is not None:
        from torchwitness.ledger.verify import normalise_fingerprint

        if public.fingerprint != normalise_fingerprint(key):
            raise CertificateError(f"certificate is signed by {public.fingerprint}, not by the pinned key {key}")
    checks.append("signature")
    # 7. optional evidence outside the certificate
    if baseline is not None or subject is not None:
        checks += _check_models(cert, baseline, subject, factory, tokens, replay, seed, batch_size)
    elif replay:
        raise InputError("--replay needs --baseline (and --subject, unless the certificate names a built-in edit)")
    if run is not None:
        _check_run(cert, run)
        checks.append("ledger record")
    return CertCheck(decision["verdict"], public.fingerprint, len(rows), checks)


def _check_models(cert: dict[str, Any], baseline: Any, subject: Any, factory: str | None,
                  tokens: np.ndarray | None, replay: int, seed: int | None, batch_size: int) -> list[str]:
    from torchwitness.certify.edits import weights_digest
    from torchwitness.certify.evaluate import evaluate_lm
    from torchwitness.certify.sources import load_source
    from torchwitness.certify.windows import rebuild_windows, stream_digest

    if baseline is None:
        raise InputError("pass the baseline model (and the subject, unless the certificate names a built-in edit)")
    rebuilt = subject is None
    if rebuilt:
        subject = _edited(cert, baseline, factory)
    done = []
    models = {}
    for role, spec in (("baseline", baseline), ("subject", subject)):
        try:
            src = load_source(spec, factory=factory)
        except TorchWitnessError:
            raise
        except Exception as e:  # a loader's own error (a bad config, a truncated file): bad input, named
            raise InputError(f"--{role} {spec}: cannot load: {type(e).__name__}: {e}"[:300]) from None
        digest = weights_digest(src.model)
        if digest != cert[role]["weights"]:
            raise CertificateError(f"the {role} model's weights do not match the certificate's digest",
                                   expected=cert[role]["weights"], computed=digest)
        stated_tok = cert[role].get("tokenizer")
        if src.tokenizer_digest is not None and stated_tok is not None and src.tokenizer_digest != stated_tok:
            raise CertificateError(f"the {role} tokenizer does not match the certificate's digest",
                                   expected=stated_tok, computed=src.tokenizer_digest)
        models[role] = src.model
    done.append("model digests" + (f" (subject rebuilt by {cert['subject']['edit']['spec']})" if rebuilt else ""))
    if tokens is not None:
        if cert["task"] != "causal-lm":
            raise InputError("token data applies to causal-LM certificates")
        stream = np.asarray(tokens, dtype=np.int64)
        if stream_digest(stream) != cert["data"]["digest"]:
            raise CertificateError("the data given does not match the certificate's data digest",
                                   expected=cert["data"]["digest"], computed=stream_digest(stream))
        done.append("data digest")
    if not replay:
        return done
    if tokens is None:
        raise InputError("--replay needs the data the certificate was made on (--data)")
    rows = cert["statistics"]["rows"]
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(rows), size=min(replay, len(rows)), replace=False))
    length = cert["data"]["windows"]["length"]
    offsets = [rows[i]["offset"] for i in picked]
    for m in models.values():
        m.eval()
    fresh = evaluate_lm(models["baseline"], models["subject"], rebuild_windows(stream, offsets, length),
                        batch_size=batch_size)
    for i, new in zip(picked, fresh, strict=True):
        old = rows[int(i)]
        for k in ("nll_baseline", "nll_subject", "kl"):
            a, b = decode_float(old[k]), decode_float(new[k])
            if not math.isclose(a, b, rel_tol=_REPLAY_REL_TOL, abs_tol=1e-4 * old["tokens"]):
                raise CertificateError(f"replay of window {int(i)} (offset {old['offset']}): {k} differs",
                                       expected=repr(a), computed=repr(b))
        if abs(old["agree"] - new["agree"]) > max(1, old["tokens"] // 100):
            raise CertificateError(f"replay of window {int(i)}: top-1 agreement differs",
                                   expected=str(old["agree"]), computed=str(new["agree"]))
        if not np.allclose(delta_tokens(old), delta_tokens(new), rtol=1e-3, atol=1e-3):
            raise CertificateError(f"replay of window {int(i)}: per-token Δ log-loss differs")
    capped = f" (all the certificate holds; {replay} asked for)" if replay > len(rows) else ""
    done.append(f"replay of {len(picked)} windows{capped}")
    return done


def _edited(cert: dict[str, Any], baseline: Any, factory: str | None) -> Any:
    """The subject of a certificate for a built-in edit, rebuilt by applying that edit to the baseline (its
    weight digest is then checked like a given subject's: the edit must reproduce the certified weights)."""
    import copy

    from torchwitness.certify.edits import apply_edit
    from torchwitness.certify.editspec import Edit
    from torchwitness.certify.sources import Source, load_source

    spec = (cert["subject"].get("edit") or {}).get("spec")
    if not isinstance(spec, str) or spec.startswith(("function:", "lora:")):
        raise InputError("pass the subject model: the certificate's subject is not a built-in edit of the "
                         "baseline that could be re-applied")
    src = load_source(baseline, factory=factory)
    model = copy.deepcopy(src.model)
    apply_edit(model, Edit.parse(spec))
    return Source(model, f"{src.description} + {spec}", src.tokenizer, src.tokenizer_digest)


def _check_run(cert: dict[str, Any], run: str | Path) -> None:
    from torchwitness.ledger.layout import Layout
    from torchwitness.ledger.reader import iter_records
    from torchwitness.ledger.verify import verify_run

    verify_run(run)
    digest = cert_digest(cert)
    if not (Layout(Path(run)).blobs / f"sha256-{digest.split(':', 1)[1]}").is_file():
        raise CertificateError(f"the run {run} holds no blob of this certificate ({digest})")
    if not any(r["data"].get("certificate") == digest for r in iter_records(run, kinds={"edit.certificate"})):
        raise CertificateError(f"the run {run} has no edit.certificate record citing {digest}")
