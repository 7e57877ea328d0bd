"""Reading the files users hand to the CLI (proofs, certificates, policies, baselines, notes, keys) with one-line
errors: a missing file, a folder, unreadable bytes, text that is not UTF-8 or not JSON, nesting too deep to
parse, an integer no JSON peer can hold exactly, or a document of the wrong type each name the file and what is
wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, TorchWitnessError

# I-JSON (RFC 7493): integers beyond +-(2**53 - 1) lose precision in most JSON peers, and RFC 8785 (which signs
# and digests these documents) refuses them; such a document is refused when read, not deep inside a digest.
MAX_SAFE_INT = 2**53 - 1


class _UnsafeInteger(ValueError):
    pass


def _safe_int(text: str) -> int:
    # Refused by length before int() runs: Python's own limit (4,300 digits) would name its own knob instead.
    value = int(text) if len(text) <= 20 else MAX_SAFE_INT + 1
    if abs(value) > MAX_SAFE_INT:
        raise _UnsafeInteger(f"the integer {text[:24]}{'...' if len(text) > 24 else ''} is beyond +-(2**53 - 1), "
                         "which JSON cannot carry exactly (RFC 7493, RFC 8785)")
    return value


class _DuplicateKey(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _DuplicateKey(f"the key {twice[:60]!r} appears twice in one object (readers disagree on which "
                            "one counts)")
    return doc


def parse_json(text: str | bytes, where: str, invalid: type[TorchWitnessError] = InputError) -> Any:
    """``text`` parsed as I-JSON (RFC 7493: UTF-8 without a byte order mark, unique keys, exact integers);
    anything else raises ``invalid`` naming ``where``."""
    try:
        if isinstance(text, bytes):  # json.loads would also take UTF-16 and UTF-32 bytes, and a BOM
            text = text.decode()
        if text.startswith("\ufeff"):
            raise invalid(f"{where} starts with a byte order mark: I-JSON is UTF-8 without one")
        return json.loads(text, parse_int=_safe_int, object_pairs_hook=_unique)
    except UnicodeDecodeError as e:
        raise invalid(f"{where} is not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise invalid(f"{where} is nested too deeply to read") from None
    except (_UnsafeInteger, _DuplicateKey) as e:
        raise invalid(f"{where}: {e}") from None
    except ValueError as e:
        raise invalid(f"{where} is not JSON: {e}") from None


MAX_DOCUMENT_BYTES = 256 << 20  # far above any proof, certificate or policy; /dev/zero is not one


def read_bytes(path: str | Path, what: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of the file ``what`` at ``path``; a missing file, a folder, something that is not a regular
    file (a device, a pipe), a file over ``limit`` bytes or an unreadable file is an :class:`InputError`
    naming it."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise InputError(f"{what} {path} is not a regular file")
        with path.open("rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"{what} {path} is larger than {limit >> 20} MiB: not a document this tool reads")
        return data
    except FileNotFoundError:
        raise InputError(f"no such {what}: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_text(path: str | Path, what: str, invalid: type[TorchWitnessError] = InputError) -> str:
    """The UTF-8 text of the file ``what`` at ``path`` (as :func:`read_bytes`); other bytes raise ``invalid``."""
    try:
        return read_bytes(path, what).decode()
    except UnicodeDecodeError as e:
        raise invalid(f"{what} {path} is not UTF-8 text (byte {e.start})") from None


def read_json(path: str | Path, what: str, invalid: type[TorchWitnessError] = InputError,
              expect: type | None = dict) -> Any:
    """The parsed document at ``path``; a missing or unreadable file is an :class:`InputError` naming ``what``,
    and a file that is not JSON (or not a JSON object, or whatever ``expect`` says) raises ``invalid`` (a
    certificate that is not JSON is a bad certificate, not bad input)."""
    doc = parse_json(read_bytes(path, what), f"{what} {path}", invalid)
    if expect is not None and not isinstance(doc, expect):
        raise invalid(f"{what} {path} is a JSON {_kind(doc)}, not a JSON {_kind(expect())}")
    return doc


def check_output(path: str | Path, what: str = "output file") -> Path:
    """``path`` if a file can be written there: a folder, or a file in a folder that does not exist, is an
    :class:`InputError` naming it (said before any long work, rather than after it)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder: name a file")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {what} {path}: the folder {path.parent} does not exist")
    return path


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")
