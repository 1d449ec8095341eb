"""Where the peer benchmark's harness lives.

The peer harness (``common.py``, ``run.py`` and one ``bench_<lib>.py`` per
peer) is kept outside this repository and read, never written. Its folder is
named by the ``PEER_BENCH_DIR`` environment variable; without it, a
``shared/peer-bench`` folder beside the clone (``../shared/peer-bench`` from
the repository root, or from its parent) is used when there is one.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PEER_BENCH_DIR"
ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = (ROOT.parent / "shared" / "peer-bench", ROOT.parent.parent / "shared" / "peer-bench")


class PeerBenchNotFound(RuntimeError):
    """The peer harness folder is not configured or not usable."""


def resolve(explicit: str | None = None) -> Path:
    """The peer harness folder: ``explicit``, else $PEER_BENCH_DIR, else a
    ``shared/peer-bench`` beside the clone. Raises PeerBenchNotFound naming
    what was tried."""
    given = explicit or os.environ.get(ENV)
    if given:
        path = Path(given).expanduser().resolve()
        if not (path / "common.py").is_file():
            raise PeerBenchNotFound(f"{ENV}={given!r} does not hold the peer harness (no common.py there)")
        return path
    for path in CANDIDATES:
        if (path / "common.py").is_file():
            return path.resolve()
    raise PeerBenchNotFound(
        f"the peer benchmark harness was not found: set {ENV} (or pass --peer-bench-dir) to the folder "
        "holding its common.py; no shared/peer-bench folder exists beside this clone")
