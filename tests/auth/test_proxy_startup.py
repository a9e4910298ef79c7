"""A bad tiers file stops the real proxy at start-up with a message naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import render_test_config, start_proxy


def test_a_bad_tiers_file_stops_the_proxy_naming_the_line(tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text("tiers:\n  free:\n    rpm: 0\n    tpm: 10\n    daily_tokens: 10\n    max_parallel: 1\n"
                     "    model_groups: [heartcode-chat-sfw]\n")
    config = render_test_config(tmp_path / "config.yaml", {})
    env = {"HEARTCODE_TIERS_FILE": str(tiers), "HEARTCODE_BACKEND_URL": "http://127.0.0.1:9"}
    with pytest.raises(RuntimeError, match="exited") as info:
        process, _ = start_proxy("proxy", config, tmp_path, env, ready_timeout=120)
        process.stop()  # not reached when the test passes
    assert f"{tiers}:3: tiers.free.rpm: Input should be greater than 0" in str(info.value)
