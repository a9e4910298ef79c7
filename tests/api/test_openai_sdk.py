"""The official ``openai`` SDK against the real gateway, sync and async: every route a customer key may
call, and each refusal as the SDK's exception class carrying our ``code``. Also: no internal header on
the direct port (nginx: tests/deploy/test_nginx.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest

from litellm_cloud.front import is_internal_header
from tests.api.conftest import ADMIN, FREE, Api

MODEL = "heartcode-default"


@pytest.fixture(scope="module")
def client(api: Api) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=api.base + "/v1", api_key=ADMIN, max_retries=0, timeout=30) as c:
        yield c


def aclient(api: Api, key: str = ADMIN) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=api.base + "/v1", api_key=key, max_retries=0, timeout=30)


def test_chat_and_stream_with_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert r.choices[0].message.content and r.usage is not None and r.usage.completion_tokens == 4
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=5, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("gpu-") and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="heartcode-embed", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) > 8
    b64 = client.embeddings.create(model="heartcode-embed", input="a", encoding_format="base64")
    assert len(b64.data[0].embedding) == len(r.data[0].embedding) or isinstance(b64.data[0].embedding, str)


def test_models_list_and_retrieve(client: openai.OpenAI, api: Api) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"heartcode-default", "heartcode-nsfw", "heartcode-embed"} <= ids
    assert client.models.retrieve("heartcode-default").id == "heartcode-default"
    free = openai.OpenAI(base_url=api.base + "/v1", api_key=FREE, max_retries=0)
    free_ids = {m.id for m in free.models.list()}
    assert "heartcode-nsfw" not in free_ids
    for name in free_ids:
        assert free.models.retrieve(name).id == name
    # Another tier's model and a made-up one answer alike: nothing is revealed.
    errors = []
    for name in ("heartcode-nsfw", "no-such-model"):
        with pytest.raises(openai.NotFoundError) as exc:
            free.models.retrieve(name)
        errors.append(exc.value)
    assert [e.code for e in errors] == ["model_not_found"] * 2
    assert errors[0].message.replace("heartcode-nsfw", "X") == errors[1].message.replace("no-such-model", "X")


def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="Once upon", max_tokens=3)
    assert r.object == "text_completion" and r.choices[0].text.startswith("gpu-") and r.usage.completion_tokens == 3
    parts = [c.choices[0].text or "" for c in client.completions.create(model=MODEL, prompt="x", max_tokens=4, stream=True)
             if c.choices]  # fmt: skip
    assert "".join(parts).startswith("gpu-")


def test_responses_plain_and_streamed(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="hello", max_output_tokens=16)
    assert r.output_text.startswith("gpu-") and r.usage is not None and r.usage.output_tokens > 0
    events = list(client.responses.create(model=MODEL, input="hello", max_output_tokens=16, stream=True))
    kinds = {e.type for e in events}
    assert "response.output_text.delta" in kinds and kinds & {"response.completed", "response.incomplete"}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("gpu-")


def test_async_surface(api: Api) -> None:
    async def run() -> None:
        async with aclient(api) as c:
            chat = await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a"}], max_tokens=2)
            stream = await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a"}],
                                                     max_tokens=3, stream=True, stream_options={"include_usage": True})  # fmt: skip
            last = None
            async for chunk in stream:
                last = chunk
            emb = await c.embeddings.create(model="heartcode-embed", input="a")
            models = [m.id async for m in c.models.list()]
            one = await c.models.retrieve("heartcode-sfw")
            comp = await c.completions.create(model=MODEL, prompt="a", max_tokens=2)
            resp = await c.responses.create(model=MODEL, input="a", max_output_tokens=16)
            rstream = await c.responses.create(model=MODEL, input="a", max_output_tokens=16, stream=True)
            kinds = [e.type async for e in rstream]
        assert chat.usage is not None and chat.usage.completion_tokens == 2
        assert last is not None and last.usage is not None
        assert emb.data and "heartcode-sfw" in models and one.id == "heartcode-sfw"
        assert comp.choices[0].text and resp.output_text and "response.output_text.delta" in kinds

    asyncio.run(run())


def test_refusals_are_sdk_exceptions_with_our_codes(api: Api, client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    free = openai.OpenAI(base_url=api.base + "/v1", api_key=FREE, max_retries=0)
    bad = openai.OpenAI(base_url=api.base + "/v1", api_key="hc-sk-not-a-real-key-000000000000", max_retries=0)
    cases = [
        (openai.AuthenticationError, "invalid_api_key", lambda: bad.chat.completions.create(model=MODEL, messages=msgs)),
        (openai.AuthenticationError, "invalid_api_key", lambda: bad.responses.create(model=MODEL, input="x")),
        (openai.PermissionDeniedError, "model_not_allowed",
         lambda: free.chat.completions.create(model="heartcode-nsfw", messages=msgs, max_tokens=2)),
        (openai.PermissionDeniedError, "model_not_allowed",
         lambda: free.completions.create(model="heartcode-nsfw", prompt="x", max_tokens=2)),
        (openai.PermissionDeniedError, "route_not_allowed", lambda: client.files.list()),
        (openai.PermissionDeniedError, "route_not_allowed", lambda: client.images.generate(prompt="x")),
        (openai.NotFoundError, "model_not_found", lambda: client.chat.completions.create(model="nope", messages=msgs)),
        (openai.NotFoundError, "model_not_found", lambda: client.responses.create(model="nope", input="x")),
        (openai.BadRequestError, "context_length_exceeded",
         lambda: client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=40000)),
        (openai.BadRequestError, "context_length_exceeded",
         lambda: client.completions.create(model=MODEL, prompt="x", max_tokens=40000)),
        (openai.BadRequestError, "context_length_exceeded",
         lambda: client.responses.create(model=MODEL, input="x", max_output_tokens=40000)),
        (openai.BadRequestError, "invalid_request",
         lambda: client.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])),
        (openai.BadRequestError, "invalid_request",
         lambda: client.chat.completions.create(model=MODEL, messages=msgs, n=-1)),
        (openai.BadRequestError, "invalid_request",
         lambda: client.embeddings.create(model=MODEL, input="chat model, embeddings route")),
    ]
    for exc_type, code, call in cases:
        with pytest.raises(exc_type) as exc:
            call()
        assert exc.value.code == code, (code, exc.value.message)
    # The free tier's minute runs out: 429 rate_limited with Retry-After.
    with pytest.raises(openai.RateLimitError) as limited:
        for _ in range(20):
            free.chat.completions.create(model=MODEL, messages=msgs, max_tokens=2)
    assert limited.value.code in ("rate_limited", "concurrency_limited")
    assert int(limited.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "a"}], "max_tokens": 2}),
     ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "a"}], "stream": True}),
     ("POST", "/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 2}),
     ("POST", "/v1/responses", {"model": MODEL, "input": "a", "max_output_tokens": 16}),
     ("POST", "/v1/embeddings", {"model": "heartcode-embed", "input": "a"}),
     ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "a"}], "max_tokens": 40000}),
     ("GET", "/v1/models", None), ("GET", "/v1/models/heartcode-default", None), ("GET", "/v1/usage", None)],
)  # fmt: skip
def test_no_internal_header_on_the_direct_port(api: Api, method: str, path: str, body: object) -> None:
    r = httpx.request(method, api.base + path, json=body, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert r.status_code in (200, 400), r.text
    leaked = [h for h in r.headers if is_internal_header(h)]
    assert not leaked, leaked
    assert not [h for h in r.headers if h.startswith("llm_provider") or "api-base" in h or "spend" in h or "cost" in h]
    assert r.headers["x-request-id"]  # a request id stays, for correlation with the logs
    if path != "/v1/models" and path != "/v1/models/heartcode-default" and path != "/v1/usage":
        assert r.headers["x-request-id"] == r.headers["x-litellm-call-id"]
