"""The fast canonicaliser gives exactly the bytes of the reference rfc8785 implementation."""

from __future__ import annotations

import math

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from torchwitness.ledger.canonical import canonical_json

safe_ints = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | finite | text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(json_values)
def test_matches_rfc8785(value) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_float_edge_cases() -> None:
    for x in (1e-7, 1e-6, 9.999e-5, 1e-4, 0.1, 1.5, 1e15 + 0.5, 1e16, 1e20, 1e21, 1e300, 5e-324, -0.0, 2.0**53,
              math.pi, -1 / 3):
        assert canonical_json({"x": x, "l": [x, -x]}) == rfc8785.dumps({"x": x, "l": [x, -x]}), x


def test_key_order_by_utf16_code_units() -> None:
    value = {"\U0001f600": 1, "\ue000": 2, "a": 3, "é": 4}
    assert canonical_json(value) == rfc8785.dumps(value)


def test_long_strings_and_non_json_types() -> None:
    value = {"packed": "QUJD" * 20000, "ids": list(range(300)), "t": ("x", 1)}
    assert canonical_json(value) == rfc8785.dumps(value)
    for bad in ({"b": b"raw"}, {"s": {1, 2}}, [object()]):
        try:
            rfc8785.dumps(bad)
        except Exception as expected:
            kind = type(expected)
        else:
            raise AssertionError(f"rfc8785 accepted {bad!r}")
        try:
            canonical_json(bad)
        except Exception as got:
            assert type(got) is kind, (bad, got)
        else:
            raise AssertionError(f"canonical_json accepted {bad!r}")
