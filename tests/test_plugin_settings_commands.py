"""Plugin settings through the real ``pmq`` command and the first-party
plugins: ``pmq plugins`` shows each setting with its value and never a
secret, and a bad value stops ``pmq worker`` in one line before it touches
a server. (The reading rules themselves: tests/unit/test_plugin_settings.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WEBHOOK_SECRET = "webhook-secret-c81f0e2d"
SMTP_PASSWORD = "smtp-pass-4b7a91"
#: Servers nobody listens on: these commands must not need one.
NO_SERVERS = {"PMQ_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x", "PMQ_REDIS_URL": "redis://127.0.0.1:1"}


def pmq(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_")}
    environ.update(NO_SERVERS, PMQ_PLUGINS="webhook,email", **variables)
    return subprocess.run([sys.executable, "-m", "pmq_core.cli", *args], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_pmq_plugins_shows_every_setting_with_its_value_and_masks_secrets(tmp_path: Path):
    (tmp_path / "pmq.toml").write_text('[email]\nsender = "Team <team@example.net>"\n', encoding="utf-8")
    variables = {"PMQ_WEBHOOK_SECRET": WEBHOOK_SECRET, "PMQ_WEBHOOK_TIMEOUT": "2.5",
                 "PMQ_EMAIL_SMTP_URL": f"smtp://team:{SMTP_PASSWORD}@mail.example.net:2525"}
    text, listed = pmq(tmp_path, "plugins", **variables), pmq(tmp_path, "plugins", "--json", **variables)
    assert text.returncode == 0 and listed.returncode == 0, text.stderr + listed.stderr
    assert '  settings [webhook]:\n    secret = "***"  (str | None; PMQ_WEBHOOK_SECRET)\n' \
           '    timeout = 2.5  (float; PMQ_WEBHOOK_TIMEOUT)' in text.stdout
    assert 'smtp_url = "***"' in text.stdout and 'sender = "Team <team@example.net>"' in text.stdout
    assert "message_id_domain = (unset)  (str | None; PMQ_EMAIL_MESSAGE_ID_DOMAIN)" in text.stdout
    by_name = {info["name"]: info for info in json.loads(listed.stdout)}
    webhook = {row["name"]: row for row in by_name["webhook"]["settings"]["webhook"]}
    assert webhook["secret"] == {"name": "secret", "env": "PMQ_WEBHOOK_SECRET", "type": "str | None",
                                 "secret": True, "value": "***"}
    assert webhook["timeout"]["value"] == 2.5
    for output in (text, listed):
        assert WEBHOOK_SECRET not in output.stdout + output.stderr
        assert SMTP_PASSWORD not in output.stdout + output.stderr


def test_a_bad_plugin_setting_stops_a_worker_in_one_line_before_any_server(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[tool.pmq.webhook]\ntimeout = 0\nsecrets = 'x'\n", encoding="utf-8")
    result = pmq(tmp_path, "worker", PMQ_EMAIL_SMTP_URL=f"smtp://team:{SMTP_PASSWORD}@mail.example.net?tls=1")
    assert result.returncode != 0 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("pmq: error: invalid plugin settings: ")
    for problem in ("[tool.pmq.webhook] in pyproject.toml: unknown setting(s) secrets; known settings are secret, "
                    "timeout", "timeout must be a positive number of seconds, not 0.0 @ webhook",
                    "smtp_url: unknown option(s) tls; known: starttls, timeout @ email"):
        assert problem in line
    assert SMTP_PASSWORD not in line and "127.0.0.1:1" not in line
