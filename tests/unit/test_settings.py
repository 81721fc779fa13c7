"""Settings from the environment and from secret files (``homemonitor.settings``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from homemonitor.errors import ConfigurationError
from homemonitor.settings import PostgresURL, Settings


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


def test_fhir_patient_system_is_homemonitors_own_until_a_region_sets_an_absolute_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default names homemonitor ids; a region's URI is taken; a bare word is refused."""
    assert "urn:homemonitor:patient" == _settings(monkeypatch).fhir_patient_system
    assert "urn:oid:1.2.752.999.1" == (
        _settings(monkeypatch, FHIR_PATIENT_SYSTEM="urn:oid:1.2.752.999.1").fhir_patient_system
    )
    with pytest.raises(ValueError, match="absolute URI"):
        _settings(monkeypatch, FHIR_PATIENT_SYSTEM="personnummer")


def test_a_multi_host_url_is_accepted_and_each_host_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several hosts, as libpq writes them: each host and port taken apart, the password added."""
    settings = _settings(
        monkeypatch,
        DATABASE_URL="postgresql://hm@db1:5432,[::1]:5433,db3/homemonitor",
        DATABASE_READ_URL="postgresql://hm@replica1:5432,db1:5432/homemonitor",
        DATABASE_PASSWORD="p@ss,w:rd",
    )
    assert settings.database_url is not None and settings.database_read_url is not None
    url = PostgresURL.parse(settings.database_url.get_secret_value())
    read = PostgresURL.parse(settings.database_read_url.get_secret_value())
    hosts = (("db1", 5432), ("[::1]", 5433), ("db3", None))
    assert (hosts, "/homemonitor") == (url.hosts, url.path)
    assert ["p@ss,w:rd", "p@ss,w:rd"] == [
        unquote(urlsplit(u.get_secret_value()).password or "")
        for u in (settings.database_url, settings.database_read_url)
    ]
    assert "replica1:5432,db1:5432/homemonitor" == read.where  # no user, no password


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://u@db/hm", "must be a URL like postgresql://"),
        ("postgresql://u@db1:5432,db2:54x2/hm", "port '54x2' of host 'db2'"),
        ("postgresql://u@db1:5432,db2:70000/hm", "not a number from 1 to 65535"),
        ("postgresql://u@db1,,db2/hm", "an empty host"),
        ("postgresql://u@db1:5432,::1:5432/hm", "in brackets"),
        ("postgresql://u@db1/hm?port=5432,x", "the 'port' parameter"),
        ("postgresql://u@db1,db2/hm?target_session_attrs=writable", "is not one of"),
        ("postgresql://u@db1,db2/hm?target_session_attrs=prefer-standby", "takes no writes"),
    ],
)
def test_a_database_url_that_cannot_work_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    """Scheme, every host's port, target_session_attrs: wrong ones named before any connect."""
    with pytest.raises(ValueError, match=problem):
        _settings(monkeypatch, DATABASE_URL=url)


def test_the_read_url_may_prefer_a_standby(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the database URL refuses (a standby may be chosen) is what a read URL is for."""
    read = "postgresql://u@replica1,db1/hm?target_session_attrs=prefer-standby"
    settings = _settings(monkeypatch, DATABASE_URL="postgresql://u@db1/hm", DATABASE_READ_URL=read)
    assert settings.database_read_url is not None
    assert read == settings.database_read_url.get_secret_value()
