"""Our pre-call refusals skip LiteLLM's proxy-only failure logging (``_litellm_refusal``); nothing else does.

The guard tests fail when a LiteLLM upgrade changes the code the cut relies on: re-measure (see the
module docstring), then update ``_MEASURED`` or drop the cut. The proxy tests run the real proxy with
one more callback, a probe loaded from the config's directory the way LiteLLM loads any callback, that
writes down every failure callback LiteLLM calls on it and on which thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from litellm.proxy.utils import ProxyLogging

from litellm_cloud import _litellm_refusal
from tests.observability.harness import scrape, value
from tests.support import (
    MASTER_KEY,
    GatewayClient,
    SimFleet,
    chat,
    render_test_config,
    start_backend,
    start_proxy,
    wait_until,
)

TIGHT = "hc-sk-refusal-tight-000000000001"  # 1 request a minute: every later one is our rate_limited
ROOMY = "hc-sk-refusal-roomy-000000000002"
LIMITS = {"rpm": 100_000, "tpm": 100_000_000, "daily_tokens": 1_000_000_000, "max_parallel": 1000,
          "model_groups": ["heartcode-chat-sfw", "heartcode-chat-nsfw", "heartcode-embed"]}  # fmt: skip
TIERS = {"tiers": {"tight": {**LIMITS, "rpm": 1}, "roomy": LIMITS}}
MODEL = "heartcode-chat-sfw"
NOT_OURS = "probe: refuse this one"  # the probe's own pre-call hook refuses it, with a plain HTTPException

PROBE = '''
import json, threading
from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

EVENTS = {events!r}


class Probe(CustomLogger):
    def _write(self, what):
        with open(EVENTS, "a") as fh:
            fh.write(json.dumps([what, threading.current_thread() is threading.main_thread()]) + "\\n")

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if any(m.get("content") == {not_ours!r} for m in data.get("messages") or []):
            raise HTTPException(status_code=400, detail="refused by the probe")
        return data

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict, traceback_str=None):
        self._write("post_call_failure_hook")

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._write("async_log_failure_event")

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._write("log_failure_event")


probe = Probe()
'''


def test_active_on_the_pinned_version() -> None:
    assert _litellm_refusal.changed_functions() == [], "a LiteLLM upgrade changed the failure path (see the log)"
    assert _litellm_refusal.skip_proxy_logging_of_refusals()
    installed = ProxyLogging._handle_logging_proxy_only_error
    assert _litellm_refusal.skip_proxy_logging_of_refusals()  # idempotent: no second wrapper
    assert ProxyLogging._handle_logging_proxy_only_error is installed
    assert _litellm_refusal.changed_functions() == []  # measured on the original, not on the wrapper


def test_a_changed_litellm_is_left_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    before = ProxyLogging._handle_logging_proxy_only_error
    measured = {**_litellm_refusal._MEASURED, "_dispatch_proxy_only_failure_handlers": frozenset({"Thread"})}
    with caplog.at_level(logging.ERROR, logger="litellm_cloud.gateway"):
        assert not _litellm_refusal.skip_proxy_logging_of_refusals(measured)
    assert ProxyLogging._handle_logging_proxy_only_error is before
    assert "_dispatch_proxy_only_failure_handlers" in caplog.text and "full cost" in caplog.text


@dataclass
class Proxy:
    client: GatewayClient
    base: str
    events: Path
    log: Path

    def drain_events(self) -> list[tuple[str, bool]]:
        """The probe's events since the last call: (callback, called on the main thread)."""
        if not self.events.exists():
            return []
        lines = self.events.read_text().splitlines()
        self.events.write_text("")
        return [tuple(json.loads(line)) for line in lines]  # type: ignore[misc]

    def post(self, key: str, content: str = "Hello there") -> Any:
        return self.client.post("/v1/chat/completions", key, chat(MODEL, content, max_tokens=4))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    logs = tmp_path_factory.mktemp("refusal")
    events = logs / "events.jsonl"
    (logs / "probe.py").write_text(PROBE.format(events=str(events), not_ours=NOT_OURS))
    (logs / "tiers.yaml").write_text(yaml.safe_dump(TIERS))
    sim = SimFleet(logs).start()
    procs = [sim.process]
    try:
        backend, url = start_backend(logs, [
            {"key": TIGHT, "user_id": "u-tight", "tier": "tight", "age_verified": True},
            {"key": ROOMY, "user_id": "u-roomy", "tier": "roomy", "age_verified": True},
        ])  # fmt: skip
        procs.append(backend)
        config = render_test_config(logs / "config.yaml", sim.endpoints)
        rendered = yaml.safe_load(config.read_text())
        rendered["litellm_settings"]["callbacks"].append("probe.probe")
        config.write_text(yaml.safe_dump(rendered, sort_keys=False))
        env = {"HEARTCODE_BACKEND_URL": url, "HEARTCODE_TIERS_FILE": str(logs / "tiers.yaml")}
        process, base = start_proxy("proxy", config, logs, env)
        procs.append(process)
        yield Proxy(GatewayClient(base), base, events, logs / "proxy.log")
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_our_refusals_reach_our_hooks_once_and_no_failure_logger(proxy: Proxy) -> None:
    assert proxy.post(TIGHT).status_code == 200  # the one request of the minute
    proxy.drain_events()
    before = scrape(proxy.base, MASTER_KEY)
    logged = proxy.log.read_text().count("refused 429 rate_limited")
    count = 20
    for _ in range(count):
        r = proxy.post(TIGHT)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    after = scrape(proxy.base, MASTER_KEY)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Each refusal counted once, by our metrics and our refusal log line...
    assert grew("litellm_cloud_requests_total", code="rate_limited", tier="tight") == count
    assert grew("litellm_cloud_limiter_refusals_total", tier="tight") == count
    assert proxy.log.read_text().count("refused 429 rate_limited") - logged == count
    # ...every callback's failure hook ran once, and LiteLLM's failure loggers (and their thread) never.
    assert proxy.drain_events() == [("post_call_failure_hook", True)] * count


def test_a_refusal_not_ours_still_goes_through_litellm_s_failure_logging(proxy: Proxy) -> None:
    proxy.drain_events()
    r = proxy.post(ROOMY, NOT_OURS)
    assert r.status_code == 400, r.text
    assert "refused by the probe" in r.text
    events: list[tuple[str, bool]] = []

    def logged_on_its_thread() -> bool:
        events.extend(proxy.drain_events())
        return ("log_failure_event", False) in events

    # The synchronous loggers run on a thread LiteLLM starts for the failure, maybe after the answer.
    wait_until(logged_on_its_thread, 10, "LiteLLM's failure-logging thread")
    assert ("async_log_failure_event", True) in events
    assert events.count(("post_call_failure_hook", True)) == 1
