"""Settings: files, environment and arguments in layers; bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmq_core import ConfigurationError, Settings
from pmq_core.redaction import redact_url


def test_layers_apply_in_order_files_then_environment_then_arguments(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.pmq]\nconcurrency = 3\nkey_prefix = "a:"\npoll_interval = 9\n')
    (tmp_path / "pmq.toml").write_text('key_prefix = "b:"\nplugins = ["email", "webhook"]\n')
    settings = Settings.load(tmp_path, environ={"PMQ_POLL_INTERVAL": "0.5", "PMQ_UNRELATED": "x"},
                             concurrency=7)
    assert (settings.concurrency, settings.key_prefix, settings.poll_interval) == (7, "b:", 0.5)
    assert settings.plugins == ("email", "webhook")


def test_plugins_from_the_environment_are_a_comma_separated_list(tmp_path: Path):
    settings = Settings.load(tmp_path, environ={"PMQ_PLUGINS": " email, webhook ,"})
    assert settings.plugins == ("email", "webhook")
    assert Settings.load(tmp_path, environ={}).plugins is None


def test_no_urls_means_embedded_servers_and_one_url_is_refused_later(tmp_path: Path):
    assert Settings.load(tmp_path, environ={}).embedded
    assert not Settings.load(tmp_path, environ={"PMQ_DATABASE_URL": "postgresql://x/y"}).embedded


def test_booleans_and_optional_numbers_read_their_usual_spellings(tmp_path: Path):
    settings = Settings.load(tmp_path, environ={"PMQ_DISPATCH_ON_ENQUEUE": "off", "PMQ_PREFETCH": "0"})
    assert (settings.dispatch_on_enqueue, settings.prefetch) == (False, 0)
    assert Settings.load(tmp_path, environ={"PMQ_DISPATCH_ON_ENQUEUE": "Yes"}).dispatch_on_enqueue is True
    assert Settings.load(tmp_path, environ={}).prefetch is None  # sized by the worker


def test_a_bad_value_is_reported_by_name_and_source(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="concurrency"):
        Settings.load(tmp_path, environ={"PMQ_CONCURRENCY": "many"})
    with pytest.raises(ConfigurationError, match="rescue_after"):
        Settings.load(tmp_path, environ={"PMQ_RESCUE_AFTER": "-1"})
    with pytest.raises(ConfigurationError, match="prefetch"):
        Settings.load(tmp_path, environ={"PMQ_PREFETCH": "-1"})
    with pytest.raises(ConfigurationError, match="dispatch_on_enqueue"):
        Settings.load(tmp_path, environ={"PMQ_DISPATCH_ON_ENQUEUE": "nope"})
    (tmp_path / "pmq.toml").write_text("concurency = 4\n")
    with pytest.raises(ConfigurationError, match=r"pmq\.toml: unknown setting\(s\) concurency"):
        Settings.load(tmp_path, environ={})


def test_an_unreadable_file_is_one_clear_error(tmp_path: Path):
    (tmp_path / "pmq.toml").write_text("concurrency = = 4\n")
    with pytest.raises(ConfigurationError, match="pmq.toml: cannot read it"):
        Settings.load(tmp_path, environ={})


def test_passwords_are_redacted_wherever_settings_are_shown(tmp_path: Path):
    url = "postgresql://pmq:s3cret@db.internal:5432/jobs"
    assert redact_url(url) == "postgresql://pmq:***@db.internal:5432/jobs"
    settings = Settings.load(tmp_path, environ={"PMQ_DATABASE_URL": url, "PMQ_REDIS_URL": "redis://:pw@r:6379/0"})
    assert "s3cret" not in repr(settings) and "pw@" not in repr(settings)


@pytest.mark.parametrize("prefix", ["pmq:", "myapp:pmq:", "team-a.jobs_v2:"])
def test_ordinary_key_prefixes_are_accepted(tmp_path: Path, prefix: str):
    assert Settings.load(tmp_path, environ={"PMQ_KEY_PREFIX": prefix}).key_prefix == prefix


@pytest.mark.parametrize("prefix", ["", "*", "pmq*", "my app:", "pmq:\n", "\npmq:", "{pmq}:", "a[b]:", "p" * 65])
def test_a_key_prefix_that_could_break_keys_or_scans_is_one_line_naming_the_rule(tmp_path: Path, prefix: str):
    with pytest.raises(ConfigurationError) as info:
        Settings.load(tmp_path, environ={"PMQ_KEY_PREFIX": prefix})
    message = str(info.value)
    assert "key_prefix must be 1-64 letters, digits and '_.:-'" in message
    assert "\n" not in message


def test_a_long_bad_value_is_not_echoed_whole(tmp_path: Path):
    for name in ("PMQ_CONCURRENCY", "PMQ_POLL_INTERVAL", "PMQ_KEY_PREFIX", "PMQ_DISPATCH_ON_ENQUEUE"):
        with pytest.raises(ConfigurationError) as info:
            Settings.load(tmp_path, environ={name: "x" * 10_000 + " "})
        assert len(str(info.value)) < 300, (name, len(str(info.value)))


def test_heartbeats_must_fit_twice_in_the_rescue_window(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="rescue_after .* twice heartbeat_interval"):
        Settings.load(tmp_path, environ={}, heartbeat_interval=10, rescue_after=15)
    assert Settings.load(tmp_path, environ={}, heartbeat_interval=1, rescue_after=2).rescue_after == 2
