"""The README stays true: its commands exist, its configuration table matches the settings."""

from __future__ import annotations

import os

from litellm_cloud._config import settings_table
from tests.support import REPO


def test_configuration_table_matches_the_settings() -> None:
    assert settings_table() in (REPO / "README.md").read_text()


def test_the_two_commands_exist_and_ci_runs_the_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    for script in ("scripts/dev", "scripts/test"):
        assert f"{script} " in readme
        assert os.access(REPO / script, os.X_OK)
    assert "exec scripts/test" in (REPO / ".ci" / "run").read_text()


def _codes() -> set[str]:
    """Every stable error code a client can see from the proxy: the error tree's (all in _errors)."""
    from litellm_cloud._errors import GatewayError

    found: set[str] = set()
    todo = [GatewayError]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "code" in cls.__dict__ and cls is not GatewayError:
            found.add(cls.code)
    return found


def test_every_error_code_is_documented_for_clients_and_operators() -> None:
    codes = _codes()
    assert {"invalid_api_key", "auth_unavailable", "auth_timeout", "model_unavailable", "rate_limited"} <= codes
    readme = (REPO / "README.md").read_text()
    operations = (REPO / "docs" / "operations.md").read_text()
    assert [c for c in sorted(codes) if f"`{c}`" not in readme] == []
    assert [c for c in sorted(codes) if f"`{c}`" not in operations] == []
