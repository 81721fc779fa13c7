"""The web app's sign-in settings (``HOMEMONITOR_OIDC_*``, ``HOMEMONITOR_WEB_*``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from homemonitor.api.auth import OidcConfig, WebConfig
from homemonitor.settings import Settings


def _web(monkeypatch: pytest.MonkeyPatch, **env: str) -> WebConfig:
    for name, value in env.items():
        monkeypatch.setenv(f"HOMEMONITOR_{name}", value)
    return WebConfig.from_settings(Settings(_env_file=None))


def test_single_sign_on_from_the_environment_and_a_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    web = _web(
        monkeypatch,
        OIDC_ISSUER="https://idp.region.example",
        OIDC_CLIENT_ID="homemonitor",
        OIDC_CLIENT_SECRET_FILE=str(tmp_path / "secret"),
        OIDC_REDIRECT_URL="https://hm.region.example/auth/callback",
        WEB_DEMO_LOGIN="true",
        WEB_IDLE_MINUTES="15",
    )
    assert web.oidc == OidcConfig(
        "https://idp.region.example",
        "homemonitor",
        "s3cret",
        "https://hm.region.example/auth/callback",
        "employeeHsaId",
    )
    assert (False, timedelta(minutes=15), timedelta(hours=12)) == (
        web.demo,  # asked for, but never beside an identity provider
        web.idle,
        web.max_age,
    )


def test_no_sign_in_unless_configured_and_the_demo_login_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (None, False) == (_web(monkeypatch).oidc, _web(monkeypatch).demo)
    assert _web(monkeypatch, WEB_DEMO_LOGIN="1").demo


def test_an_issuer_without_client_or_callback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="HOMEMONITOR_OIDC_CLIENT_ID and "):
        _web(monkeypatch, OIDC_ISSUER="https://idp.region.example")
