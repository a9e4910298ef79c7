"""Hostile input through the real proxy: thousands of bodies, keys and headers (hypothesis).

Every answer must be a non-5xx, within the timeout, on a connection that was not reset; every refusal
OpenAI-shaped with a string ``code``. The proxy's log is counted afterwards: one ``refused`` line per
refused request, no ERROR line and no traceback.

Runtime: the ``fuzz`` profile (``HYPOTHESIS_PROFILE=fuzz-long`` for a longer run) keeps it near 30-60 s.
"""

from __future__ import annotations

import json
import os
import string
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import ADMIN, FREE, Api
from tests.support import MASTER_KEY

settings.register_profile(
    "fuzz", max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
settings.register_profile(
    "fuzz-long", max_examples=10000, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz")
if PROFILE not in ("fuzz", "fuzz-long"):
    PROFILE = "fuzz"

POST_PATHS = ["/v1/chat/completions", "/chat/completions", "/v1/completions", "/v1/embeddings",
              "/v1/responses", "/responses"]  # fmt: skip
MODELS = ["heartcode-default", "heartcode-nsfw", "heartcode-embed", "heartcode-chat-sfw", "gpu-1", "nope", ""]

json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "wizard", ""]) | json_scalars},
                          optional={"content": json_values | st.text(max_size=50)}),
    max_size=3,
) | json_values
request_like = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS) | json_scalars},
    optional={
        "messages": messages, "prompt": json_values, "input": json_values,
        "max_tokens": st.integers(-5, 50000) | json_scalars, "max_output_tokens": st.integers(-5, 50000) | json_scalars,
        "n": st.integers(-2, 3) | json_scalars, "temperature": json_scalars, "stream": st.booleans() | json_scalars,
        "stream_options": json_values, "tools": json_values, "metadata": json_values, "user": json_values,
        "api_base": st.just("http://169.254.169.254/"), "fallbacks": json_values,
    },
)
plausible = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS[:4]), "messages": messages, "prompt": st.text(max_size=30) | json_values,
     "input": st.text(max_size=30) | json_values},
    optional={"max_tokens": st.integers(-2, 40000), "max_output_tokens": st.integers(-2, 40000),
              "n": st.integers(-1, 2), "temperature": json_scalars, "stream": st.booleans(), "top_p": json_scalars},
)  # fmt: skip
bodies = st.one_of(
    plausible.map(lambda d: json.dumps(d).encode()),
    plausible.map(lambda d: json.dumps(d).encode()),
    request_like.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b'{"model": NaN}', b"\xff\xfe{}", b'{"a":' * 3000, b"[" * 5000]),
)
keys = st.sampled_from([ADMIN, ADMIN, ADMIN, None, FREE, MASTER_KEY, "hc-sk-unknown-000000000000000000", "hc-sk-", "sk-x", ""]) | st.text(
    string.ascii_letters + string.digits + "-_ ", max_size=40)
header_names = st.sampled_from(["content-type", "content-encoding", "x-litellm-call-id", "x-api-key", "accept",
                                "x-request-id", "x-forwarded-for", "user-agent", "x-litellm-tags"])  # fmt: skip
header_values = st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=x", "gzip",
                                 "application/x-www-form-urlencoded", "", "../../etc"]) | st.text(
    string.ascii_letters + string.digits + " -_/;=.", max_size=30)  # fmt: skip
headers = st.dictionaries(header_names, header_values, max_size=3)


@pytest.fixture(scope="module")
def client(api: Api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base, timeout=30) as c:
        yield c


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.refused = 0
        self.statuses: Counter[int] = Counter()
        self.codes: Counter[str] = Counter()


TALLY = Tally()


def check(r: httpx.Response, key: str | None) -> None:
    TALLY.sent += 1
    TALLY.statuses[r.status_code] += 1
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if key and len(key) > 8:
        assert key not in r.text, "the key was echoed"
    if r.status_code >= 400:
        TALLY.refused += 1
        body: Any = r.json()
        error = body["error"]
        assert isinstance(error["code"], str) and error["code"], body
        assert isinstance(error["message"], str) and {"type", "param"} <= set(error), body
        TALLY.codes[error["code"]] += 1


def _headers(key: str | None, extra: dict[str, str]) -> dict[str, str]:
    out = {k: v.strip() for k, v in extra.items()}  # h11 refuses to send surrounding whitespace
    if key is not None:
        out["authorization"] = f"Bearer {key}".strip()
    return out


@settings(settings.get_profile(PROFILE))
@given(path=st.sampled_from(POST_PATHS), body=bodies, key=keys, extra=headers)
def test_post_bodies_keys_and_headers(client: httpx.Client, path: str, body: bytes, key: str | None,
                                      extra: dict[str, str]) -> None:  # fmt: skip
    try:
        r = client.post(path, content=body, headers=_headers(key, extra))
    except httpx.TransportError as exc:  # a reset, a hang past the timeout
        pytest.fail(f"{path}: {type(exc).__name__}: {exc}")
    if r.status_code == 200 and r.headers.get("content-type", "").startswith("text/event-stream"):
        TALLY.sent += 1
        return
    check(r, key)


@settings(settings.get_profile(PROFILE), max_examples=150)
@given(name=st.text(string.ascii_letters + string.digits + "-._:%", min_size=1, max_size=40) | st.sampled_from(MODELS[:5]),
       key=keys)  # fmt: skip
def test_model_retrieve(client: httpx.Client, name: str, key: str | None) -> None:
    r = client.get(f"/v1/models/{name}", headers=_headers(key, {}))
    if r.status_code == 307:  # a trailing-slash redirect from the router
        return
    check(r, key)


def test_zz_one_log_line_per_refusal(api: Api) -> None:
    """Runs last in the module (name order within the file): counts what the runs above wrote."""
    if TALLY.sent == 0:
        pytest.skip("the fuzz tests did not run")
    lines = api.log_lines()
    refused_lines = [line for line in lines if line.startswith("refused ")]
    errors = [line for line in lines if ":ERROR:" in line or line.startswith("Traceback")]
    print(f"\nfuzz: {TALLY.sent} requests, {TALLY.refused} refused, statuses {dict(TALLY.statuses)}, "
          f"codes {dict(TALLY.codes.most_common(12))}; log: {len(refused_lines)} refusal lines, "
          f"{len(lines)} lines in all")  # fmt: skip
    assert TALLY.sent >= 1000
    assert not errors, errors[:5]
    assert len(refused_lines) == TALLY.refused
    assert not any("hc-sk-apitest" in line for line in lines)
    # Everything else the proxy wrote (start-up, LiteLLM's warnings on some successes) is far below one a refusal.
    assert len(lines) - len(refused_lines) < 200
