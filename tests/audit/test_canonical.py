"""The canonical form a record's hash covers: exactly what `json.dumps` with the chain's options
writes, though built with an encoder made once (see `chain._fast_dumps`)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.audit.chain import canonical, parse_line, seal


def reference(record: Any) -> bytes:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), values, max_size=12))
def test_canonical_is_what_json_dumps_writes(record: dict[str, Any]) -> None:
    assert canonical(record) == reference(record)


@given(st.dictionaries(st.text(), values, max_size=12).filter(lambda r: set(r) - {"hash"}))
def test_a_sealed_line_reads_back_as_its_record(record: dict[str, Any]) -> None:
    """(A record always has fields: seq, ts, kind and prev at least.)"""
    record.pop("hash", None)
    line, value = seal(record)
    assert parse_line(line.rstrip(b"\n")) == {**record, "hash": value}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_as_json_dumps_refuses_them(bad: float) -> None:
    with pytest.raises(ValueError, match="Out of range float values"):
        canonical({"x": bad})


def test_what_json_cannot_hold_is_refused_as_json_dumps_refuses_it() -> None:
    with pytest.raises(TypeError, match="Object of type bytes is not JSON serializable"):
        canonical({"x": b"raw"})
    with pytest.raises(TypeError, match="Object of type bytes is not JSON serializable"):
        reference({"x": b"raw"})


def test_a_line_that_is_not_utf8_is_no_record() -> None:
    """Bytes that cannot be UTF-8 (overwritten, or torn mid-character) read as unparsable."""
    assert parse_line(b'{"seq":1,"x":"\xff"}') is None
    assert parse_line(b'{"seq":1}') == {"seq": 1}
