"""Redact personal data from free text before any of it is retained.

Built-in detectors are regular expressions with a validity check where one exists (Luhn for card numbers,
ISO 13616 mod-97 for IBANs), so a random 16-digit order number is not counted as a card. An optional
`presidio <https://microsoft.github.io/presidio/>`_ pass can be added for names and addresses.

>>> r = redact("mail bob@example.org or call +44 20 7946 0958, card 4111 1111 1111 1111")
>>> r.text
'mail [EMAIL] or call [PHONE], card [CARD]'
>>> r.counts
{'email': 1, 'card': 1, 'phone': 1}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torchwitness.errors import InputError


@dataclass(frozen=True)
class Redacted:
    """Redacted text and how many spans of each kind were replaced."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check digits (mod 97 == 1).

    >>> iban_valid("GB82 WEST 1234 5698 7654 32"), iban_valid("GB83 WEST 1234 5698 7654 32")
    (True, False)
    """
    s = re.sub(r"\s", "", candidate).upper()
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


# Calendar dates have the digit groups of a phone number ("2026-11-24", "24.11.2026") and are not one.
_DATE = re.compile(r"(?:\d{4}[-. ](?:0?[1-9]|1[0-2])[-. ](?:0?[1-9]|[12]\d|3[01])"
                   r"|(?:0?[1-9]|[12]\d|3[01])[-. ](?:0?[1-9]|1[0-2])[-. ]\d{4})")


def _phone_valid(s: str) -> bool:
    return 7 <= len(_digits(s)) <= 15 and not _DATE.fullmatch(s)


# Order matters: the longest, most specific patterns run first so a card number is not also counted as a phone.
_DETECTORS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool] | None], ...] = (
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), None),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b"), iban_valid),
    ("card", re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"), lambda s: luhn_valid(_digits(s))),
    ("phone", re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)"),
     _phone_valid),
)


def redact(text: str, *, presidio: bool = False, language: str = "en") -> Redacted:
    """Replace e-mail addresses, IBANs, card numbers and phone numbers in ``text`` with ``[KIND]`` markers.

    ``presidio=True`` also runs presidio-analyzer's recognisers (names, locations, ...) afterwards; it needs
    ``pip install presidio-analyzer`` and a spaCy model.
    """
    counts: dict[str, int] = {}
    for kind, pattern, valid in _DETECTORS:
        def replace(m: re.Match[str], kind: str = kind, valid: Callable[[str], bool] | None = valid) -> str:
            if valid is not None and not valid(m.group(0)):
                return m.group(0)
            counts[kind] = counts.get(kind, 0) + 1
            return f"[{kind.upper()}]"

        text = pattern.sub(replace, text)
    if presidio:
        text = _presidio(text, counts, language)
    return Redacted(text, counts)


def _presidio(text: str, counts: dict[str, int], language: str) -> str:
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError as e:
        raise InputError("presidio redaction needs presidio-analyzer: pip install presidio-analyzer") from e
    results = AnalyzerEngine().analyze(text=text, language=language)
    # Replace from the end so earlier offsets stay valid; skip spans overlapping our own markers.
    for r in sorted(results, key=lambda r: r.start, reverse=True):
        span = text[r.start:r.end]
        if "[" in span:
            continue
        kind = r.entity_type.lower()
        counts[kind] = counts.get(kind, 0) + 1
        text = text[:r.start] + f"[{r.entity_type}]" + text[r.end:]
    return text
