"""The peer queues' own virtualenv, created on demand.

The peers (RQ, Dramatiq, Celery, Procrastinate, PgQueuer, arq, SAQ) are
benchmark opponents, never dependencies of pmq: they live in a virtualenv of
their own, ``.bench-peers-venv`` at the repository root (git-ignored). pmq's
adapter runs under the interpreter that runs the benchmark.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench-peers-venv"
#: The packages the adapters import, pinned to the versions of the earlier
#: figures in docs/performance.md so that runs compare.
PEER_PACKAGES = ["rq==3.0.0", "dramatiq[redis]==2.2.1", "celery[redis]==5.7.0", "kombu==5.7.0",
                 "procrastinate==3.10.0", "pgqueuer==1.6.0", "arq==0.25.0", "saq==0.26.4",
                 "psycopg[binary]", "asyncpg"]


def python() -> Path:
    return VENV / "bin" / "python"


def ensure() -> Path:
    """The peers' interpreter, creating and filling its virtualenv if needed."""
    marker = VENV / ".pmq-peers-ready"
    if marker.is_file():
        return python()
    if not python().exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PEER_PACKAGES], check=True)
    marker.write_text("\n".join(PEER_PACKAGES) + "\n")
    return python()


if __name__ == "__main__":
    print(ensure())
    sys.exit(0)
