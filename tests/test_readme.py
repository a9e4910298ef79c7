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
