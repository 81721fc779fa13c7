"""Settings from the environment and from secret files (``homemonitor.settings``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from homemonitor.errors import ConfigurationError
from homemonitor.settings import Settings


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"HOMEMONITOR_{name}", value)
    return Settings(_env_file=None)


def test_secrets_come_from_the_files_their_file_variables_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """HOMEMONITOR_<NAME>_FILE: the file's content, without the editor's trailing newline."""
    (tmp_path / "mqtt").write_text("broker pass\n")
    settings = _settings(monkeypatch, MQTT_PASSWORD_FILE=str(tmp_path / "mqtt"))
    assert settings.mqtt_password is not None
    assert "broker pass" == settings.mqtt_password.get_secret_value()


def test_the_database_password_goes_into_the_url_percent_encoded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Any character works: the URL carries it encoded, and decodes to the same password."""
    password = "p@ss:w/rd%?#é"
    (tmp_path / "db").write_text(password + "\n")
    settings = _settings(
        monkeypatch,
        DATABASE_URL="postgresql://homemonitor@db:5432/homemonitor",
        DATABASE_PASSWORD_FILE=str(tmp_path / "db"),
    )
    assert settings.database_url is not None
    url = urlsplit(settings.database_url.get_secret_value())
    assert ("homemonitor", password, "db", 5432, "/homemonitor") == (
        url.username,
        unquote(url.password or ""),
        url.hostname,
        url.port,
        url.path,
    )
    assert settings.database_password is None  # one place only: the URL


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"DATABASE_PASSWORD": "x"}, "HOMEMONITOR_DATABASE_URL is not"),
        (
            {"DATABASE_PASSWORD": "x", "DATABASE_URL": "postgresql://u:y@db/hm"},
            "keep it in one place",
        ),
    ],
)
def test_a_password_in_two_places_or_without_a_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    """Two sources of one password, or a password for no database, is an error naming them."""
    with pytest.raises(ValueError, match=problem):
        _settings(monkeypatch, **env)


def test_a_secret_both_set_and_in_a_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """HOMEMONITOR_X and HOMEMONITOR_X_FILE together: which one wins would be a guess."""
    (tmp_path / "mqtt").write_text("a")
    with pytest.raises(ConfigurationError, match="both set"):
        _settings(monkeypatch, MQTT_PASSWORD="b", MQTT_PASSWORD_FILE=str(tmp_path / "mqtt"))


def test_only_secrets_are_read_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A _FILE variable for a setting that is no secret is ignored, like any unknown variable."""
    (tmp_path / "host").write_text("elsewhere")
    settings = _settings(monkeypatch, MQTT_HOST_FILE=str(tmp_path / "host"))
    assert settings.mqtt_host is None
