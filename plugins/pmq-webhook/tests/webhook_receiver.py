"""A real HTTP receiver on 127.0.0.1 for the webhook tests, answering from a
script and recording every request it gets. (A module name of its own, so
that it cannot clash with other test suites' helpers.)"""

from __future__ import annotations

import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

SECRET = "test-secret-4f1c9a"
#: A scripted answer that never comes: the handler waits until the test ends.
STALL = "stall"


@attrs.frozen
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers requests in the order scripted with :meth:`script` (then 200),
    and records them."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._answers: deque[Any] = deque()
        self._lock = threading.Lock()
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)

    def script(self, *answers: Any) -> None:
        """Queue answers: ``(status, headers, body)`` tuples, a bare status,
        or :data:`STALL`."""
        with self._lock:
            self._answers.extend(answers)

    def _next(self, received: Received) -> Any:
        with self._lock:
            self.requests.append(received)
            return self._answers.popleft() if self._answers else 200

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                answer = receiver._next(Received(self.path, dict(self.headers.items()), body))
                if answer == STALL:
                    receiver.release.wait(30)
                    return
                status, headers, content = answer if isinstance(answer, tuple) else (answer, {}, b"")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
