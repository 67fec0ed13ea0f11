"""Lines of the audit files one at a time: the same lines `bytes.splitlines` gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.audit.chain import lines_newest_first, lines_of

# Newlines and carriage returns in every arrangement, among record-like text.
chunks = st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b'{"seq":1}', b"x", b""]), max_size=30)


@given(chunks)
def test_lines_of_is_splitlines(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert list(lines_of(data)) == data.splitlines()


@given(chunks)
def test_lines_newest_first_is_splitlines_reversed(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert list(lines_newest_first(data)) == data.splitlines()[::-1]
