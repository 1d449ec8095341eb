"""Reading stored headers: anything but text entries is left out, never an error."""

from __future__ import annotations

import pytest

from pmq_core.headers import from_stored, to_json
from pmq_core.payloads import loads


@pytest.mark.parametrize(("stored", "expected"), [
    (None, {}), ([1, 2], {}), ("text", {}), (42, {}), ({"a": "b", "n": 1, "x": None, "d": {}}, {"a": "b"}),
    (loads("[" * 100_000 + "]" * 100_000), {}),  # unreadable: nests deeper than Python's decoder follows
])
def test_stored_headers_keep_only_text_entries(stored, expected):
    assert dict(from_stored(stored)) == expected


def test_no_headers_store_nothing():
    assert to_json({}) is None
    assert to_json({"traceparent": "00-1-2-01"}) == '{"traceparent":"00-1-2-01"}'
