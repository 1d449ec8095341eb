"""The one-line errors of a lost server, as any command shows them."""

from __future__ import annotations

import psycopg
import pytest

from pmq_core.db import translated
from pmq_core.errors import DatabaseUnavailableError

URL = "postgresql://pmq:s3cret@db.example:5432/pmq"


def test_a_lost_connection_names_the_server_hides_the_password_and_claims_nothing_about_writes():
    with pytest.raises(DatabaseUnavailableError) as caught, translated(URL):
        raise psycopg.OperationalError(f"server closed the connection unexpectedly ({URL})\nmore detail")
    message = str(caught.value)
    assert message == ("PostgreSQL at postgresql://pmq:***@db.example:5432/pmq is unavailable: "
                       "server closed the connection unexpectedly (postgresql://pmq:***@db.example:5432/pmq)")
    # A read has nothing to write, and a commit cut off midway may have
    # happened: "nothing was written" would be true of neither.
    assert "written" not in message
