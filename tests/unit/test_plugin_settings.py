"""Plugin settings: declared by a plugin, read through pmq's settings layers
with pmq's own conversions, every bad value named at once, secrets never
shown. No server: a worker refuses bad settings before it connects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from pmq_core import ConfigurationError, PluginError, Settings, hookimpl, load_plugin_settings, redaction
from pmq_core.plugin_settings import SettingOption, describe, options, read
from pmq_core.plugins import Plugins
from pmq_core.worker import Worker


@attrs.frozen(kw_only=True)
class Thumbs:
    size: int = 256
    quality: float = 0.8
    sharpen: bool = False
    cache_dir: Path | None = None
    api_key: str | None = attrs.field(default=None, metadata={"secret": True})


@attrs.frozen(kw_only=True)
class Mailer:
    retries: int = 3


class ThumbsPlugin:
    """Declares the ``thumbs`` section and keeps what the worker gives it."""

    def __init__(self, declared: Any = None) -> None:
        self.declared = {"thumbs": Thumbs} if declared is None else declared
        self.given: list[Any] = []

    @hookimpl
    def pmq_register_settings(self) -> Any:
        return self.declared

    @hookimpl
    def pmq_worker_started(self, plugin_settings: dict[str, Any]) -> None:
        self.given.append(plugin_settings["thumbs"])


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_layers_apply_in_order_default_pyproject_pmq_toml_environment(tmp_path: Path):
    write(tmp_path / "pyproject.toml", "[tool.pmq]\nconcurrency = 3\n\n[tool.pmq.thumbs]\nsize = 64\nquality = 0.5\n"
                                       "sharpen = true\n")
    write(tmp_path / "pmq.toml", "[thumbs]\nquality = 0.9\n\n[other]\nanything = 1\n")
    values = read({"thumbs": Thumbs}, tmp_path, {"PMQ_THUMBS_SHARPEN": "no", "PMQ_THUMBS_CACHE_DIR": "~/thumbs"})
    assert values["thumbs"] == Thumbs(size=64, quality=0.9, sharpen=False, cache_dir=Path("~/thumbs").expanduser())
    # the core's settings skip the plugin sections, and keep their own
    assert Settings.load(tmp_path, environ={}).concurrency == 3


def test_every_bad_value_of_every_section_is_named_in_one_line(tmp_path: Path):
    write(tmp_path / "pmq.toml", "[thumbs]\nsize = 2.5\nsise = 3\n")
    environ = {"PMQ_THUMBS_SHARPEN": "maybe", "PMQ_MAILER_RETRIES": "many"}
    with pytest.raises(ConfigurationError) as caught:
        read({"thumbs": Thumbs, "mailer": Mailer}, tmp_path, environ)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid plugin settings: ")
    for problem in ("[thumbs] in pmq.toml: unknown setting(s) sise; known settings are api_key, cache_dir",
                    "expected a whole number, got 2.5 @ thumbs.size",
                    "expected true or false, got 'maybe' @ thumbs.sharpen",
                    "expected a whole number, got 'many' @ mailer.retries"):
        assert problem in message


def test_an_empty_value_of_an_optional_setting_means_unset():
    assert read({"thumbs": Thumbs}, Path("/nonexistent"), {"PMQ_THUMBS_CACHE_DIR": ""})["thumbs"].cache_dir is None


def test_a_secret_is_masked_when_shown_and_scrubbed_from_output(tmp_path: Path):
    secret = "thumbs-key-5e0c1b77"
    value = read({"thumbs": Thumbs}, tmp_path, {"PMQ_THUMBS_API_KEY": secret})["thumbs"]
    rows = {row["name"]: row for row in describe("thumbs", value)}
    assert rows["api_key"] == {"name": "api_key", "env": "PMQ_THUMBS_API_KEY", "type": "str | None", "secret": True,
                               "value": "***"}
    assert rows["size"]["value"] == 256 and rows["cache_dir"]["value"] is None
    assert redaction.scrub(f"refused key {secret!r} (json: \"{secret}\")") == "refused key '***' (json: \"***\")"


def test_a_secret_is_scrubbed_even_when_its_settings_are_refused(tmp_path: Path):
    secret = "refused-thumbs-key-0b9f"
    write(tmp_path / "pmq.toml", f'[thumbs]\napi_key = "{secret}"\nsize = "big"\n')
    with pytest.raises(ConfigurationError, match="@ thumbs.size"):
        read({"thumbs": Thumbs}, tmp_path, {})
    assert redaction.scrub(secret) == "***"


def test_load_plugin_settings_reads_one_section(tmp_path: Path):
    write(tmp_path / "pyproject.toml", "[tool.pmq.mailer]\nretries = 7\n")
    assert load_plugin_settings("mailer", Mailer, tmp_path, {}) == Mailer(retries=7)
    with pytest.raises(ConfigurationError, match="section name 'Mailer!' must be"):
        load_plugin_settings("Mailer!", Mailer, tmp_path, {})


def test_pmq_register_settings_declares_a_section_read_by_settings_of_and_given_to_the_worker(monkeypatch):
    monkeypatch.setenv("PMQ_THUMBS_SIZE", "128")
    plugin = ThumbsPlugin()
    host = Plugins(None, [plugin], entry_points=False).load()
    assert host.settings_of("thumbs") == Thumbs(size=128)
    [info] = host.infos
    assert info.settings == ("thumbs",)
    with pytest.raises(PluginError, match="no loaded plugin declares the settings section 'nope'; declared: thumbs"):
        host.settings_of("nope")
    worker = Worker(Settings(), host)
    assert worker.plugin_settings == {"thumbs": Thumbs(size=128)}


def test_a_worker_with_a_bad_plugin_setting_does_not_start(monkeypatch):
    monkeypatch.setenv("PMQ_THUMBS_QUALITY", "high")
    with pytest.raises(ConfigurationError, match="expected a number, got 'high' @ thumbs.quality"):
        Worker(Settings(), Plugins(None, [ThumbsPlugin()], entry_points=False))


@pytest.mark.parametrize(("declared", "problem"), [
    ({"Thumbs": Thumbs}, "section name 'Thumbs' must be 1-32 lowercase letters"),
    ({"concurrency": Thumbs}, "section name 'concurrency' is one of pmq's own settings"),
    ({"thumbs": dict}, "section 'thumbs' must be an attrs class"),
    ({"database": attrs.make_class("Db", {"url": attrs.field(default="")})},
     "section 'database' would read PMQ_DATABASE_URL, which pmq reads for its own settings"),
    (["thumbs"], "returned ['thumbs'] from pmq_register_settings; expected a dict"),
    ({"thumbs": attrs.make_class("T", {"size": attrs.field(default=1, metadata={"option": "size"})})},
     "the option of thumbs.size must be '--' and 1-40 lowercase letters"),
])
def test_a_declaration_pmq_cannot_read_stops_loading_naming_the_plugin(declared, problem):
    with pytest.raises(PluginError) as caught:
        Plugins(None, [ThumbsPlugin(declared)], entry_points=False).load()
    assert problem in str(caught.value) and "ThumbsPlugin" in str(caught.value)


class OtherPlugin(ThumbsPlugin):
    """A second plugin (plugins registered in code are named by their class)."""


def test_two_plugins_may_not_declare_the_same_section_or_read_the_same_variable():
    # Named in pluggy's calling order: the plugin registered last first.
    with pytest.raises(PluginError, match="settings section 'thumbs' is declared by two plugins: 'OtherPlugin' and "
                                          "'ThumbsPlugin'"):
        Plugins(None, [ThumbsPlugin(), OtherPlugin()], entry_points=False).load()
    x_y = attrs.make_class("XY", {"x_y": attrs.field(default=0)})
    y = attrs.make_class("Y", {"y": attrs.field(default=0)})
    with pytest.raises(PluginError, match=r"PMQ_MAIL_X_Y \(mail_x.y and mail.x_y\)"):
        Plugins(None, [ThumbsPlugin({"mail": x_y}), OtherPlugin({"mail_x": y})], entry_points=False).load()


@pytest.mark.parametrize("environ", [{"PMQ_PLUGINS": ""}, {"PMQ_PLUGINS": " , "}], ids=["empty", "separators"])
def test_an_empty_plugins_variable_means_unset(tmp_path: Path, environ: dict[str, str]):
    assert Settings.load(tmp_path, environ=environ).plugins is None


@pytest.mark.parametrize("line", ['plugins = ""', "plugins = []"])
def test_an_empty_plugins_list_in_a_file_means_unset(tmp_path: Path, line: str):
    write(tmp_path / "pmq.toml", line + "\n")
    assert Settings.load(tmp_path, environ={}).plugins is None
    write(tmp_path / "pmq.toml", 'plugins = ["webhook"]\n')
    assert Settings.load(tmp_path, environ={}).plugins == ("webhook",)


def test_a_setting_declared_with_an_option_names_its_option_variable_and_help():
    declared = attrs.make_class("M", {
        "address": attrs.field(default=None, metadata={"option": "--metrics", "help": "Serve them."}),
        "other": attrs.field(default=1)})
    assert options({"metrics": declared}) == [
        SettingOption("--metrics", "PMQ_METRICS_ADDRESS", "metrics.address", "Serve them. (sets PMQ_METRICS_ADDRESS)")]
