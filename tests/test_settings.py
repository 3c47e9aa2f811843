"""Settings: one merge of defaults, TOML, environment and flags, with errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.settings import Settings, SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    config = write(tmp_path, 'port = 9000\nhost = "0.0.0.0"\ntemperature = 0.3\nthreads = 3\n')
    settings = load_settings({"port": "9100"}, config=config,
                             environ={"KIOSKD_PORT": "9050", "KIOSKD_TEMPERATURE": "0.1"})
    assert settings.port == 9100  # flag beats env beats file
    assert settings.temperature == 0.1  # env beats file
    assert settings.host == "0.0.0.0" and settings.threads == 3  # file beats default
    assert settings.n_ctx == Settings().n_ctx  # default


def test_settings_are_frozen() -> None:
    settings = load_settings({}, environ={})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_config_from_env_and_kioskd_table(tmp_path: Path) -> None:
    config = write(tmp_path, '[kioskd]\nmodel = "~/m.gguf"\nsystem_prompt = "你好"\n')
    settings = load_settings({}, environ={"KIOSKD_CONFIG": str(config)})
    assert settings.model == Path("~/m.gguf").expanduser()
    assert settings.system_prompt == "你好"
    assert settings.model_id == "m"


@pytest.mark.parametrize(("source", "needle"), [
    ({"cli": {"port": "eighty"}}, "'port' (from flag --port): expected an integer, got 'eighty'"),
    ({"env": {"KIOSKD_PORT": "70000"}}, "'port' (from env KIOSKD_PORT): 70000 is outside 1..65535"),
    ({"env": {"KIOSKD_TEMPERATURE": "nan"}}, "'temperature' (from env KIOSKD_TEMPERATURE): expected a finite"),
    ({"env": {"KIOSKD_LOG_LEVEL": "loud"}}, "'log_level' (from env KIOSKD_LOG_LEVEL): 'loud' is not one of"),
    ({"toml": "port = 1.5\n"}, "'port' (from "),
    ({"toml": 'threads = "two"\n'}, "'threads'"),
    ({"toml": "host = 127\n"}, "'host'"),
])
def test_invalid_values_name_the_setting(tmp_path: Path, source: dict[str, object], needle: str) -> None:
    config = write(tmp_path, str(source["toml"])) if "toml" in source else None
    with pytest.raises(SettingsError) as error:
        load_settings(source.get("cli", {}), config=config, environ=source.get("env", {}))  # type: ignore[arg-type]
    assert needle in str(error.value)


def test_unknown_and_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"unknown setting.*colour"):
        load_settings({}, config=write(tmp_path, 'colour = "red"\n'), environ={})
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings({}, config=write(tmp_path, "port = = 1\n"), environ={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({}, config=tmp_path / "missing.toml", environ={})


def test_derived_paths_and_thread_defaults(tmp_path: Path) -> None:
    settings = load_settings({"state_dir": str(tmp_path)}, environ={})
    assert settings.models_path == tmp_path / "models"
    assert 1 <= settings.threads <= max(settings.threads_batch, 2)
    assert load_settings({}, environ={"STATE_DIRECTORY": str(tmp_path)}).state_dir == tmp_path
