"""Fixtures of the webhook tests: a real receiver, a refusing port, and the
workers' configuration."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from webhook_receiver import SECRET, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL whose port is bound but not listening: connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hooks"
    sock.close()


@pytest.fixture
def webhook_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """The workers' configuration: the signing secret and a short request timeout."""
    monkeypatch.setenv("PMQ_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PMQ_WEBHOOK_TIMEOUT", "0.5")
    return SECRET
