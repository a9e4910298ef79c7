"""The router cut (``_litellm_router``) skips only what LiteLLM's own code found to be a no-op.

On a real ``litellm.Router``: a deployment without TPM/RPM limits is looked up once and then skipped; a
deployment with a limit is counted on every call as before; an entry changed in place or replaced is
asked again. If an upgrade changes ``Router._increment_deployment_usage``, the cut refuses (logs an
error) and ``test_active_on_the_pinned_version`` fails: re-measure, then update ``_MEASURED`` or drop it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litellm.router import Router

from litellm_cloud import _litellm_router


def make_router() -> Router:
    params = {"model": "openai/m", "api_base": "http://127.0.0.1:9/v1", "api_key": "none"}
    return Router(model_list=[
        {"model_name": "g", "litellm_params": dict(params), "model_info": {"id": "free"}},
        {"model_name": "g", "litellm_params": {**params, "rpm": 100}, "model_info": {"id": "limited"}},
    ])  # fmt: skip


def increment(router: Router, deployment: str, tokens: float = 10.0, rpm: int = 1) -> str | None:
    return asyncio.run(router._increment_deployment_usage(
        deployment_id=deployment, deployment_name="m", model_group="g", total_tokens=tokens, rpm_increment=rpm,
        parent_otel_span=None,
    ))  # fmt: skip


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each model-info lookup the original makes (the work the cut saves), by deployment id."""
    assert _litellm_router.skip_untracked_deployment_usage()
    seen: list[str] = []
    real = Router.get_router_model_info

    def counted(self: Router, deployment: Any = None, *args: Any, **kwargs: Any) -> Any:
        seen.append(deployment.model_info.id)
        return real(self, deployment, *args, **kwargs)

    monkeypatch.setattr(Router, "get_router_model_info", counted)
    return seen


def test_active_on_the_pinned_version() -> None:
    assert _litellm_router.skip_untracked_deployment_usage()
    assert _litellm_router.skip_untracked_deployment_usage()  # idempotent: wrapped once
    installed = Router.__dict__["_increment_deployment_usage"]
    original = getattr(installed, _litellm_router._MARK)
    assert getattr(original, _litellm_router._MARK, None) is None


def test_a_deployment_without_limits_is_looked_up_once(lookups: list[str]) -> None:
    router = make_router()
    assert [increment(router, "free") for _ in range(5)] == [None] * 5
    assert lookups == ["free"]


def test_a_deployment_with_a_limit_is_counted_every_time(lookups: list[str]) -> None:
    router = make_router()
    keys = [increment(router, "limited") for _ in range(3)]
    assert keys[0] is not None and keys == [keys[0]] * 3
    assert lookups == ["limited"] * 3
    rpm_key = keys[0].replace(":tpm:", ":rpm:")
    assert router.cache.get_cache(key=rpm_key) == 3
    assert router.cache.get_cache(key=keys[0]) == 30


def test_nothing_to_count_is_not_taken_for_no_limit(lookups: list[str]) -> None:
    router = make_router()
    assert increment(router, "free", tokens=0, rpm=0) is None
    assert increment(router, "free") is None
    assert lookups == ["free", "free"]


def test_an_entry_changed_in_place_or_replaced_is_asked_again(lookups: list[str]) -> None:
    router = make_router()
    assert increment(router, "free") is None
    entry = router.model_list[router.model_id_to_deployment_index_map["free"]]
    entry["litellm_params"]["rpm"] = 50  # a limit added in place
    assert increment(router, "free") is not None
    assert increment(router, "free") is not None  # and it stays counted
    entry["litellm_params"].pop("rpm")
    assert increment(router, "free") is None
    router.model_list[router.model_id_to_deployment_index_map["free"]] = {**entry}  # replaced, equal
    assert increment(router, "free") is None
    assert increment(router, "free") is None  # the new entry is remembered
    assert lookups == ["free"] * 5


def test_an_unknown_deployment_is_not_remembered(lookups: list[str]) -> None:
    router = make_router()
    assert increment(router, "gone") is None
    assert _litellm_router._STATE not in router.__dict__ or "gone" not in router.__dict__[_litellm_router._STATE]


def test_refused_when_the_method_changes(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def changed(self: Router, **kwargs: Any) -> str | None:
        return "counted-elsewhere"

    monkeypatch.setattr(Router, "_increment_deployment_usage", changed)
    assert not _litellm_router.skip_untracked_deployment_usage()
    assert Router.__dict__["_increment_deployment_usage"] is changed
    assert "changed" in caplog.text
