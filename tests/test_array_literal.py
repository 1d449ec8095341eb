"""The worker's round sends its arrays as PostgreSQL array text
(:func:`pmq_core.store.array_literal`): whatever an element holds, the
server reads back exactly the values given."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from pmq_core.config import Settings
from pmq_core.store import array_literal

#: Text PostgreSQL can hold: any character but NUL.
TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)))


def test_hostile_text_and_nulls_come_back_as_given(pmq_settings: Settings) -> None:
    values = ['a"b', "c\\d", "x,y", "{z}", "NULL", None, "é ü 日本", "", " lead ", "it's", '\\"', "line\nbreak"]
    with psycopg.connect(pmq_settings.database_url) as conn:
        assert conn.execute("SELECT %s::text[]", (array_literal(values),)).fetchone() == (values,)


def test_the_round_s_types_come_back_as_given(pmq_settings: Settings) -> None:
    now, job = datetime.now(UTC), uuid.uuid4()
    with psycopg.connect(pmq_settings.database_url) as conn:
        row = conn.execute("SELECT %s::timestamptz[], %s::uuid[], %s::int[], %s::varchar[]",
                           (array_literal([now, None]), array_literal([job]), array_literal([1, -2]),
                            array_literal([]))).fetchone()
    assert row == ([now, None], [job], [1, -2], [])


def test_any_text_comes_back_as_given(pmq_settings: Settings) -> None:
    with psycopg.connect(pmq_settings.database_url) as conn:

        @settings(max_examples=200, deadline=None)
        @given(st.lists(st.one_of(st.none(), TEXT), max_size=8))
        def round_trip(values: list[str | None]) -> None:
            assert conn.execute("SELECT %s::text[]", (array_literal(values),)).fetchone() == (values,)

        round_trip()
