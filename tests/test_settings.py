"""Settings: precedence, validation that names the setting, and a true example file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cnamd.errors import ConfigError
from cnamd.settings import Settings, load

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from gen_example_config import render


def test_defaults_need_no_file() -> None:
    settings = load(environ={})
    assert settings == Settings()
    assert settings.http.listen == "127.0.0.1:8080"
    assert settings.sip.listen == ("127.0.0.1:5060",)


def test_file_then_env_then_flags_win_in_that_order(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[log]\nlevel = "debug"\nformat = "json"\n[names]\nmax_length = 20\n')
    env = {"CNAMD_LOG_LEVEL": "warning", "CNAMD_NAMES_MAX_LENGTH": "30"}
    settings = load(config, environ=env, overrides=["names.max_length=40"])
    assert settings.log.format == "json"  # file only
    assert settings.log.level == "warning"  # env over file
    assert settings.names.max_length == 40  # flag over env


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:9999"\n')
    assert load(environ={"CNAMD_CONFIG": str(config)}).http.listen == "127.0.0.1:9999"


def test_list_settings_accept_commas_from_env() -> None:
    settings = load(environ={"CNAMD_SIP_LISTEN": "127.0.0.1:5060, [::1]:5060"})
    assert settings.sip.listen == ("127.0.0.1:5060", "[::1]:5060")


@pytest.mark.parametrize(
    "env,field,words",
    [
        ({"CNAMD_SIP_RATE": "fast"}, "sip.rate", "a number"),
        ({"CNAMD_NAMES_MAX_LENGTH": "0"}, "names.max_length", "between 1 and 256"),
        ({"CNAMD_HTTP_LISTEN": "localhost"}, "http.listen", "host:port"),
        ({"CNAMD_LOG_LEVEL": "loud"}, "log.level", "one of debug, info, warning, error"),
        ({"CNAMD_SIP_ALLOW": "10.0.0.0/33"}, "sip.allow", "CIDR"),
        ({"CNAMD_SIP_COLOUR": "red"}, "sip.colour", "unknown setting"),
        ({"CNAMD_NOPE_X": "1"}, "CNAMD_NOPE_X", "unknown environment variable"),
        ({"CNAMD_DATABASE_STATEMENT_TIMEOUT": "0"}, "database.statement_timeout", "between"),
        ({"CNAMD_DATABASE_STATEMENT_TIMEOUT": "soon"}, "database.statement_timeout", "a number"),
        ({"CNAMD_DATABASE_PING_INTERVAL": "-1"}, "database.ping_interval", "between 0.05 and 60"),
        ({"CNAMD_DATABASE_PING_TIMEOUT": "600"}, "database.ping_timeout", "between 0.05 and 60"),
    ],
)
def test_bad_values_name_the_setting_and_what_is_allowed(
    env: dict[str, str], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(environ=env)
    assert info.value.field == field
    assert words in info.value.reason
    assert "\n" not in str(info.value)


def test_unknown_section_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[sipp]\nlisten = 1\n")
    with pytest.raises(ConfigError) as info:
        load(config, environ={})
    assert info.value.field == "sipp"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[http\nlisten=")
    with pytest.raises(ConfigError) as info:
        load(config, environ={})
    assert "broken.toml" in info.value.reason


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "absent.toml", environ={})


def test_tls_listener_without_certificate_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load(environ={"CNAMD_SIP_TLS_LISTEN": "127.0.0.1:5061"})
    assert info.value.field == "sip.tls_listen"


def test_pool_min_above_max_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load(environ={"CNAMD_DATABASE_POOL_MIN": "20", "CNAMD_DATABASE_POOL_MAX": "5"})
    assert info.value.field == "database.pool_min"


def test_example_file_documents_every_setting_with_its_default(repo_root: Path) -> None:
    example = repo_root / "config" / "cnamd.example.toml"
    assert example.read_text() == render(), "run `make config` after changing settings.py"
    assert load(example, environ={}) == Settings()


def test_settings_are_frozen() -> None:
    settings = load(environ={})
    with pytest.raises(AttributeError):
        settings.http.listen = "0.0.0.0:1"
