"""Settings are built once from an injected mapping; mistakes are configuration errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from litellm_cloud import ConfigError, Settings
from litellm_cloud._config import FIELDS, Secret
from tests.support import REPO


def test_defaults() -> None:
    s = Settings.from_env({}, base_dir=REPO)
    assert s.backend_url == "http://host.docker.internal:8000"
    assert s.backend_timeout == 10
    assert s.limits_storage == "memory://" and s.limits_on_storage_error == "closed"
    assert not s.langfuse_enabled
    assert s.gc_freeze
    assert set(s.tiers) == {"free", "premium", "admin"}
    assert not Settings.from_env({"HEARTCODE_GC_FREEZE": "OFF"}, base_dir=REPO).gc_freeze
    assert s.gc_threshold == (2000, 10, 100)
    assert Settings.from_env({"HEARTCODE_GC_THRESHOLD": "off"}, base_dir=REPO).gc_threshold is None
    assert Settings.from_env({"HEARTCODE_GC_THRESHOLD": " 700, 10 ,10"}, base_dir=REPO).gc_threshold == (700, 10, 10)


def test_secrets_never_show() -> None:
    s = Settings.from_env(
        {"LITELLM_MASTER_KEY": "sk-very-secret", "HEARTCODE_BACKEND_TOKEN": "tok-secret"}, base_dir=REPO
    )
    assert "sk-very-secret" not in repr(s) and "tok-secret" not in repr(s)
    assert s.master_key.reveal() == "sk-very-secret"
    assert repr(Secret("x")) == "Secret('**********')"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HEARTCODE_LIMITS_STORAGE": "memcached://x"}, "unknown scheme; use memory://"),
        ({"HEARTCODE_BACKEND_TIMEOUT": "soon"}, "expected a number"),
        ({"HEARTCODE_BACKEND_TIMEOUT": "0"}, "must be at least"),
        ({"HEARTCODE_LIMITS_ON_STORAGE_ERROR": "maybe"}, "expected one of closed, open"),
        ({"HEARTCODE_BACKEND_URL": "backend:8000"}, "expected an http"),
        ({"HEARTCODE_TIERS_FILE": "missing.yaml"}, "cannot read"),
        ({"HEARTCODE_LIMITS_STORAGE": "redis+sentinel://s1:26379"}, "HEARTCODE_LIMITS_STORAGE: .*<service>"),
        ({"HEARTCODE_REDIS_URL": "sentinel://s1:26379/svc"}, "HEARTCODE_REDIS_URL=.*unknown scheme"),
        ({"HEARTCODE_GC_FREEZE": "yes"}, "expected one of on, off"),
        ({"HEARTCODE_GC_THRESHOLD": "2000,10"}, "expected three counts gen0,gen1,gen2"),
        ({"HEARTCODE_GC_THRESHOLD": "0,10,10"}, "gen0 at least 1"),
        ({"HEARTCODE_GC_THRESHOLD": "big,10,10"}, "expected three counts"),
        ({"HEARTCODE_WORKERS": "0"}, "expected a count of at least 1, or auto"),
        ({"HEARTCODE_WORKERS": "2"}, "count alone, multiplying every tier limit by 2"),
        ({"HEARTCODE_WORKERS": "2", "HEARTCODE_LIMITS_STORAGE": "redis://r:6379/0"}, "revocation would reach one worker"),
    ],
)
def test_bad_settings_say_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env, base_dir=REPO)


def test_sentinel_urls_are_accepted_for_limits_and_revocation() -> None:
    url = "redis+sentinel://s1:26379,s2:26379/heartcode/2"
    s = Settings.from_env({"HEARTCODE_LIMITS_STORAGE": url, "HEARTCODE_REDIS_URL": url}, base_dir=REPO)
    assert s.limits_storage == url and s.redis_url == url


def test_a_tier_naming_an_unknown_group_is_refused(tmp_path: Path) -> None:
    text = (REPO / "tiers.yaml").read_text().replace("heartcode-embed]", "heartcode-embed, heartcode-video]", 1)
    (tmp_path / "tiers.yaml").write_text(text)
    with pytest.raises(ConfigError, match="heartcode-video"):
        Settings.from_env({"HEARTCODE_TIERS_FILE": str(tmp_path / "tiers.yaml")}, base_dir=REPO)


def test_every_field_is_read() -> None:
    source = (REPO / "litellm_cloud" / "_config.py").read_text()
    for f in FIELDS:
        assert source.count(f'"{f.env}"') >= 2, f"{f.env} is documented but never read"


def test_workers_auto_is_the_cpus_and_one_worker_needs_no_redis() -> None:
    shared = {"HEARTCODE_LIMITS_STORAGE": "redis://r:6379/0", "HEARTCODE_REDIS_URL": "redis://r:6379/0"}
    assert Settings.from_env({**shared, "HEARTCODE_WORKERS": "auto"}, base_dir=REPO, cpus=lambda: 3).workers == 3
    assert Settings.from_env({}, base_dir=REPO).workers == 1  # memory:// is fine for one worker
