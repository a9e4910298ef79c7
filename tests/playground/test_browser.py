"""``/playground`` in a real headless Chromium, against a real proxy, simulator and key backend.

The module starts one gateway (``simulated_gateway``) with a key per test, so that no test spends another's
limits, and one browser (conftest). What a customer would do, the test does through the page: paste a
key, pick a model, send, watch the reply grow, read the limits, meet a 429, copy the request as code.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver

from litellm_cloud._procs import ManagedProcess
from litellm_cloud.playground import CONTENT_SECURITY_POLICY
from tests.playground._page import Playground
from tests.support import PYTHON, SimFleet, chat, simulated_gateway

pytestmark = pytest.mark.timeout(240)

NSFW = {"heartcode-chat-nsfw", "heartcode-nsfw"}


def _key(name: str, tier: str = "free", verified: bool = False) -> dict[str, object]:
    return {"key": f"hc-sk-test-{name}-0000000000000000", "user_id": f"pg-{name}", "key_id": f"kid-{name}",
            "tier": tier, "age_verified": verified}  # fmt: skip


KEYS = {
    "stream": _key("stream"),
    "limit": _key("limit"),
    "verified": _key("verified", verified=True),
    "code": _key("code", tier="premium", verified=True),
    "remember": _key("remember"),
}


def key(name: str) -> str:
    return str(KEYS[name]["key"])


@dataclass
class Gateway:
    sim: SimFleet
    base: str
    proxy: ManagedProcess


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with simulated_gateway(tmp_path_factory.mktemp("gateway"), list(KEYS.values())) as (sim, base, proxy):
        yield Gateway(sim, base, proxy)


@pytest.fixture
def playground(page: webdriver.Chrome, gateway: Gateway) -> Playground:
    return Playground(page, gateway.base).open()


@pytest.fixture
def slow_fleet(gateway: Gateway) -> Iterator[SimFleet]:
    """Every simulated server generating 10 tokens a second, so a reply streams for seconds."""
    for name in gateway.sim.servers:
        gateway.sim.control(name, tokens_per_s=10.0)
    try:
        yield gateway.sim
    finally:
        gateway.sim.reset()


def test_the_page_and_its_assets_load_without_a_key_under_a_strict_policy(gateway: Gateway) -> None:
    for path, kind in (("/playground", "text/html"), ("/playground/app.js", "text/javascript"),
                       ("/playground/app.css", "text/css"), ("/playground/favicon.svg", "image/svg+xml")):  # fmt: skip
        r = httpx.get(f"{gateway.base}{path}", timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith(kind), path
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                      "img-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"):  # fmt: skip
        assert directive in CONTENT_SECURITY_POLICY.split("; ")
    # The API next to it still wants a key: the page is public, nothing else became so.
    assert httpx.get(f"{gateway.base}/v1/models", timeout=30).status_code == 401
    assert httpx.get(f"{gateway.base}/playground/nothing", timeout=30).status_code == 404


def test_a_reply_streams_in_token_by_token_and_the_requests_left_drop(
    playground: Playground, slow_fleet: SimFleet
) -> None:
    playground.use_key(key("stream"))
    assert playground.state("key-status") == "ok", playground.text("key-status")
    assert "heartcode-default" in playground.models()
    playground.wait_remaining(10)  # Free: 10 requests a minute, none used yet

    playground.set_field("max-tokens", "30")
    playground.send("Tell me a story")
    lengths: set[int] = set()

    def finished() -> bool:
        state, length = playground.reply_progress()
        if state == "streaming" and length > 0:
            lengths.add(length)
        return state != "streaming"

    playground.wait(finished, "the stream to end")
    assert playground.state("reply-status") == "done", playground.text("reply-status")
    final = playground.last_reply()
    assert len(lengths) >= 2, f"saw the reply at lengths {sorted(lengths)} only before it was complete"
    # Seen growing: at least two lengths short of the whole reply (the last chunks may land before "done").
    assert len({n for n in lengths if n < len(final)}) >= 2 and final.strip(), (sorted(lengths), len(final))
    playground.wait_remaining(9)
    assert playground.text("left-requests").startswith("9 of 10 left, resets in ")
    assert playground.console_problems() == []


def test_a_429_is_explained_in_words(playground: Playground, gateway: Gateway) -> None:
    playground.use_key(key("limit"))
    playground.wait_remaining(10)
    # Spend the account's minute from outside the page (same account): the page's next send is the 11th.
    headers = {"Authorization": f"Bearer {key('limit')}"}
    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            r = client.post(
                f"{gateway.base}/v1/chat/completions", headers=headers, json=chat("heartcode-default", max_tokens=1)
            )
            assert r.status_code == 200, r.text
    playground.send("Hello again")
    assert playground.wait_reply_done() == "error"
    playground.wait(lambda: playground.el("refusal").is_displayed(), "the refusal to show")
    assert playground.text("refusal-code") == "rate_limited"
    assert playground.text("refusal-status") == "(HTTP 429)"
    assert "Too many requests or tokens in the last minute" in playground.text("refusal-explanation")
    assert playground.text("refusal-retry").startswith("Retry after ")
    assert playground.text("refusal-message")  # the gateway's own message, quoted
    playground.wait_remaining(0)
    assert playground.console_problems() == []


def test_an_unverified_key_is_offered_no_nsfw_model(page: webdriver.Chrome, gateway: Gateway) -> None:
    unverified = Playground(page, gateway.base).open()
    unverified.use_key(key("stream"))
    models = unverified.models()
    assert "heartcode-default" in models and not NSFW & set(models), models
    # The same page shows them to an age-verified key of the same tier: the list is the key's.
    verified = Playground(page, gateway.base).open()
    verified.use_key(key("verified"))
    assert NSFW <= set(verified.models())


def test_the_copied_request_names_a_variable_and_runs_as_curl_and_python(
    playground: Playground, gateway: Gateway, tmp_path: Path
) -> None:
    secret = key("code")
    playground.use_key(secret)
    playground.set_field("system-prompt", "You answer in one line.")
    playground.set_field("temperature", "0.3")
    playground.set_field("max-tokens", "8")
    playground.send("What's up?")  # a quote, for the shell
    assert playground.wait_reply_done() == "done"
    curl, python = playground.text("snippet-curl"), playground.text("snippet-python")
    assert secret not in curl and secret not in python
    assert "$HEARTCODE_API_KEY" in curl and 'os.environ["HEARTCODE_API_KEY"]' in python
    assert "You answer in one line." in curl and "temperature=0.3" in python and "max_tokens=8" in python

    env = {**os.environ, "HEARTCODE_API_KEY": secret}
    ran = subprocess.run(["bash", "-c", curl], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert ran.returncode == 0 and "data: [DONE]" in ran.stdout, (ran.stdout, ran.stderr)
    (tmp_path / "snippet.py").write_text(python)
    snippet = [PYTHON, str(tmp_path / "snippet.py")]
    ran = subprocess.run(snippet, check=False, capture_output=True, text=True, env=env, timeout=90)
    assert ran.returncode == 0 and ran.stdout.strip(), (ran.stdout, ran.stderr)

    playground.el("include-key").click()  # asked for: now the real key is in the text
    assert secret in playground.text("snippet-curl") and secret in playground.text("snippet-python")
    playground.el("include-key").click()
    assert secret not in playground.text("snippet-curl")
    assert playground.console_problems() == []


def test_the_key_stays_in_the_tab_only_when_asked_and_never_in_a_url(playground: Playground) -> None:
    secret = key("remember")
    playground.use_key(secret)
    assert playground.js("return sessionStorage.length") == 0  # not asked: page memory only
    playground.use_key(secret, remember=True)
    assert playground.js("return Object.values(sessionStorage)") == [secret]
    playground.open()  # a reload in the same tab picks it up
    playground.wait(lambda: playground.state("key-status") == "ok", "the kept key to be used again")
    playground.el("forget-key").click()
    assert playground.js("return sessionStorage.length") == 0
    assert playground.models() == []
    assert secret not in playground.driver.current_url


def test_no_key_reached_a_url_or_the_proxy_log(gateway: Gateway) -> None:
    # Runs last: every key above went through the proxy; its log names keys by hash only.
    log = gateway.proxy.log_text()
    assert "heartcode-chat-sfw" in log  # the proxy's own log, read whole
    assert [name for name, entry in KEYS.items() if str(entry["key"]) in log] == []
