// The HeartCode API playground. Plain browser JavaScript, no build step, no other host: every request
// goes to this page's own origin (the CSP allows nothing else). The key lives in `apiKey` (and in the
// tab's sessionStorage only if the visitor asks); it travels in the Authorization header, never in a URL,
// and the copied code names $HEARTCODE_API_KEY instead unless the visitor asks for the real key.
// DOM writes use textContent and element APIs only (the CSP requires Trusted Types for HTML sinks).
(() => {
  "use strict";

  const STORAGE_KEY = "heartcode-playground-key";
  const KEY_VARIABLE = "HEARTCODE_API_KEY";

  // Every refusal code a client can meet (README "Errors", and nginx's own), said in words.
  const EXPLANATIONS = {
    invalid_request: "The request itself is not acceptable: the body is not valid, the model is missing, or a field that steers routing (fallbacks, api_base, …) was sent.",
    invalid_api_key: "The key was not accepted: it is missing, not an hc-sk- key, malformed, or the account service says it is not valid (revoked or mistyped).",
    model_not_allowed: "This key's tier or account may not use that model. Models marked NSFW need an age-verified account.",
    tier_not_configured: "The account names a subscription tier this gateway does not know. This is not fixed by retrying: contact support.",
    route_not_allowed: "This key may call the inference API only (chat, completions, responses, embeddings, models, usage), not that path.",
    model_not_found: "There is no model of that name. The model list above shows the ones this key may use.",
    rate_limited: "Too many requests or tokens in the last minute for this key's tier. Wait until the time below, then send again.",
    daily_quota_exceeded: "The tokens for today (UTC) are used up for this key's tier. The quota resets at 00:00 UTC.",
    concurrency_limited: "Too many requests of this account are running at once. Wait for one to finish, then send again.",
    auth_unavailable: "The gateway could not reach the account service to check the key. Retry in a moment.",
    model_unavailable: "No GPU server of this model can answer right now. Retry after the time below.",
    limiter_unavailable: "The gateway cannot count usage right now, so it refuses rather than guess. Retry in a moment.",
    revocation_not_shared: "An administrator's key revocation reached only one server. (Not a customer error.)",
    auth_timeout: "The account service did not answer in time while checking the key. Retry in a moment.",
    context_length_exceeded: "The conversation and the reply asked for do not fit the model's context. Shorten the messages or lower max tokens.",
    fleet_busy: "The GPUs are full and paying tiers are served first. Retry after the time below, or upgrade the subscription.",
    // nginx, in front of the gateway
    too_many_requests: "Too many requests or connections from your network address. Slow down.",
    not_found: "That path is not part of the API.",
    method_not_allowed: "That HTTP method is not allowed on this path.",
    request_timeout: "The request was not received in time.",
    request_too_large: "The request body is too large.",
    internal_error: "An internal error in the gateway's front.",
    upstream_unavailable: "The API server behind the front is not reachable. Retry shortly.",
    service_unavailable: "The service is unavailable. Retry shortly.",
    upstream_timeout: "The API server did not answer in time.",
    network_error: "The browser could not reach the gateway (network down, or the gateway stopped).",
  };
  const BY_STATUS = {
    400: "invalid_request", 401: "invalid_api_key", 403: "route_not_allowed", 404: "not_found",
    413: "request_too_large", 429: "rate_limited", 503: "service_unavailable", 504: "upstream_timeout",
  };

  const $ = (id) => document.getElementById(id);
  let apiKey = "";
  let history = []; // the conversation: {role, content}, system prompt excluded
  let lastRequest = null; // the body of the last chat request sent
  let controller = null; // aborts the running stream

  // --- talking to the gateway -------------------------------------------------------------------------

  function call(path, init = {}) {
    const headers = { Authorization: "Bearer " + apiKey, ...(init.headers || {}) };
    // Same origin, no cookies, no referrer, and no redirects (the key must not follow one anywhere).
    return fetch(path, {
      ...init, headers, credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer", redirect: "error",
    });
  }

  async function refusalOf(response) {
    let error = {};
    try {
      const body = await response.json();
      error = (body && body.error) || body || {};
    } catch (_) {
      error = {};
    }
    return { status: response.status, error, retryAfter: response.headers.get("retry-after") };
  }

  function codeOf(status, error) {
    const code = typeof error.code === "string" ? error.code : "";
    if (code && EXPLANATIONS[code]) return code;
    return BY_STATUS[status] || code || String(status || "error");
  }

  function showRefusal({ status, error, retryAfter }) {
    const code = codeOf(status, error);
    $("refusal-code").textContent = code;
    $("refusal-status").textContent = status ? "(HTTP " + status + ")" : "";
    $("refusal-explanation").textContent = EXPLANATIONS[code] || "The gateway refused the request.";
    $("refusal-message").textContent = (error && error.message) || "(no message)";
    $("refusal-retry").textContent = retryAfter ? "Retry after " + retryAfter + " s." : "";
    $("refusal").dataset.code = code;
    $("refusal").hidden = false;
  }

  function clearRefusal() {
    $("refusal").hidden = true;
    delete $("refusal").dataset.code;
  }

  // --- limits ------------------------------------------------------------------------------------------

  function setMeter(name, limit, remaining, reset) {
    const meter = $("meter-" + name);
    const label = $("left-" + name);
    if (!Number.isFinite(limit) || limit <= 0) return;
    meter.max = limit;
    meter.low = limit * 0.2;
    meter.high = limit * 0.5;
    meter.optimum = limit;
    if (Number.isFinite(remaining)) {
      meter.value = remaining;
      meter.dataset.remaining = String(remaining);
      label.textContent = remaining + " of " + limit + " left" + (reset ? ", resets " + reset : "");
    } else {
      delete meter.dataset.remaining;
      label.textContent = "? of " + limit + " left (not counted right now)";
    }
  }

  function limitsFromHeaders(headers) {
    const num = (name) => {
      const value = headers.get("x-ratelimit-" + name);
      return value === null ? NaN : Number(value);
    };
    const reset = (name) => {
      const value = headers.get("x-ratelimit-reset-" + name);
      return value && value !== "0s" ? "in " + value : "";
    };
    if (!headers.has("x-ratelimit-limit-requests")) return;
    setMeter("requests", num("limit-requests"), num("remaining-requests"), reset("requests"));
    setMeter("tokens", num("limit-tokens"), num("remaining-tokens"), reset("tokens"));
    setMeter("day", num("limit-tokens-day"), num("remaining-tokens-day"), reset("tokens-day"));
  }

  async function refreshUsage() {
    if (!apiKey) return;
    let response;
    try {
      response = await call("/v1/usage");
    } catch (_) {
      return;
    }
    if (!response.ok) return;
    const usage = await response.json();
    const secs = (s) => (s ? "in " + Math.ceil(s) + "s" : "");
    $("tier").textContent = usage.tier ? "(" + usage.tier + " tier)" : "";
    const m = usage.minute;
    setMeter("requests", m.requests.limit, m.requests.remaining, secs(m.requests.reset_seconds));
    setMeter("tokens", m.tokens.limit, m.tokens.remaining, secs(m.tokens.reset_seconds));
    setMeter("day", usage.day.tokens.limit, usage.day.tokens.remaining, "at 00:00 UTC");
  }

  // --- the key -----------------------------------------------------------------------------------------

  function setKeyStatus(state, text) {
    $("key-status").dataset.state = state;
    $("key-status").textContent = text;
  }

  function fillModels(ids) {
    const select = $("model");
    const previous = select.value;
    select.replaceChildren();
    for (const id of ids) {
      const option = document.createElement("option");
      option.value = id;
      // /v1/models does not say what a model is for; embedding models cannot chat.
      const embedding = /embed/i.test(id);
      option.textContent = embedding ? id + " (embeddings, not for chat)" : id;
      option.disabled = embedding;
      select.append(option);
    }
    const chat = ids.filter((id) => !/embed/i.test(id));
    select.value = ids.includes(previous) ? previous : chat.includes("heartcode-default") ? "heartcode-default" : chat[0] || "";
  }

  async function useKey(key) {
    apiKey = key.trim();
    clearRefusal();
    if (!apiKey) {
      setKeyStatus("none", "No key yet.");
      return;
    }
    if ($("remember-key").checked) sessionStorage.setItem(STORAGE_KEY, apiKey);
    else sessionStorage.removeItem(STORAGE_KEY);
    setKeyStatus("checking", "Checking the key…");
    let response;
    try {
      response = await call("/v1/models");
    } catch (_) {
      setKeyStatus("refused", "The gateway could not be reached.");
      showRefusal({ status: 0, error: { code: "network_error" }, retryAfter: null });
      return;
    }
    if (!response.ok) {
      fillModels([]);
      setKeyStatus("refused", "The key was refused (see below).");
      showRefusal(await refusalOf(response));
      return;
    }
    const body = await response.json();
    const ids = (body.data || []).map((m) => m.id).sort();
    fillModels(ids);
    setKeyStatus("ok", "Key accepted: " + ids.length + " models available to it.");
    renderSnippets();
    await refreshUsage();
  }

  function forgetKey() {
    if (controller) controller.abort();
    apiKey = "";
    sessionStorage.removeItem(STORAGE_KEY);
    $("api-key").value = "";
    fillModels([]);
    $("tier").textContent = "";
    for (const name of ["requests", "tokens", "day"]) {
      $("meter-" + name).value = 0;
      delete $("meter-" + name).dataset.remaining;
      $("left-" + name).textContent = "–";
    }
    setKeyStatus("none", "Key forgotten.");
    renderSnippets();
  }

  // --- chat --------------------------------------------------------------------------------------------

  function addMessage(role, text) {
    const item = document.createElement("li");
    item.className = "message " + role;
    const who = document.createElement("span");
    who.className = "role";
    who.textContent = role;
    const content = document.createElement("div");
    content.className = "content";
    content.textContent = text;
    item.append(who, content);
    $("transcript").append(item);
    return content;
  }

  function setReplyState(state, text) {
    $("reply-status").dataset.state = state;
    $("reply-status").textContent = text;
    const busy = state === "streaming";
    $("send").disabled = busy;
    $("stop").disabled = !busy;
  }

  // Server-sent events from a fetch body: yields each event's data (lines joined), as the spec reads them.
  async function* sseData(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    const take = function* (final) {
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0 || (final && buffer)) {
        if (cut < 0) cut = buffer.length;
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield data;
      }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // A "\r" at the end may be the first half of "\r\n": keep it for the next read.
      const carry = buffer.endsWith("\r") ? "\r" : "";
      buffer = buffer.slice(0, buffer.length - carry.length).replace(/\r\n?/g, "\n");
      yield* take(false);
      buffer += carry;
    }
    buffer = buffer.replace(/\r\n?/g, "\n");
    yield* take(true);
  }

  function numberField(id) {
    const raw = $(id).value.trim();
    return raw === "" ? undefined : Number(raw);
  }

  function requestBody() {
    const system = $("system-prompt").value.trim();
    const body = {
      model: $("model").value,
      messages: [...(system ? [{ role: "system", content: system }] : []), ...history],
      stream: true,
    };
    const temperature = numberField("temperature");
    const maxTokens = numberField("max-tokens");
    if (temperature !== undefined) body.temperature = temperature;
    if (maxTokens !== undefined) body.max_tokens = maxTokens;
    return body;
  }

  async function send(text) {
    if (!apiKey) {
      setReplyState("error", "Enter a key first.");
      return;
    }
    clearRefusal();
    history.push({ role: "user", content: text });
    addMessage("user", text);
    const body = requestBody();
    lastRequest = body;
    renderSnippets();
    const content = addMessage("assistant", "");
    setReplyState("streaming", "Receiving…");
    controller = new AbortController();
    let reply = "";
    try {
      const response = await call("/v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        signal: controller.signal,
      });
      limitsFromHeaders(response.headers);
      if (!response.ok) {
        history.pop();
        content.parentElement.remove();
        showRefusal(await refusalOf(response));
        setReplyState("error", "Refused (see below).");
        return;
      }
      let finish = "";
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) {
          showRefusal({ status: Number(chunk.error.code) || 0, error: chunk.error, retryAfter: null });
          finish = "error";
          break;
        }
        const choice = (chunk.choices || [])[0] || {};
        const delta = (choice.delta || {}).content;
        if (delta) {
          reply += delta;
          content.textContent = reply;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      history.push({ role: "assistant", content: reply });
      if (finish === "error") setReplyState("error", "The stream failed (see below).");
      else setReplyState("done", "Done" + (finish ? " (" + finish + ")" : "") + ".");
    } catch (err) {
      if (reply) history.push({ role: "assistant", content: reply });
      else history.pop();
      if (err && err.name === "AbortError") setReplyState("stopped", "Stopped.");
      else {
        showRefusal({ status: 0, error: { code: "network_error", message: String(err) }, retryAfter: null });
        setReplyState("error", "The request failed (see below).");
      }
    } finally {
      controller = null;
      await refreshUsage();
    }
  }

  // --- copy as code ------------------------------------------------------------------------------------

  const shellQuote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";

  function curlSnippet(body, withKey) {
    const auth = withKey ? shellQuote("Authorization: Bearer " + apiKey) : '"Authorization: Bearer $' + KEY_VARIABLE + '"';
    return [
      "curl -sN " + shellQuote(location.origin + "/v1/chat/completions") + " \\",
      "  -H " + auth + " \\",
      "  -H 'Content-Type: application/json' \\",
      "  -d " + shellQuote(JSON.stringify(body)),
    ].join("\n");
  }

  function pythonSnippet(body, withKey) {
    // JSON strings and lists of objects of strings are Python literals too.
    const py = (value) => JSON.stringify(value);
    const key = withKey ? py(apiKey) : 'os.environ["' + KEY_VARIABLE + '"]';
    const messages = JSON.stringify(body.messages, null, 4).replace(/\n/g, "\n    ");
    const lines = [
      "import os",
      "",
      "from openai import OpenAI",
      "",
      "client = OpenAI(base_url=" + py(location.origin + "/v1") + ", api_key=" + key + ")",
      "stream = client.chat.completions.create(",
      "    model=" + py(body.model) + ",",
      "    messages=" + messages + ",",
    ];
    if (body.temperature !== undefined) lines.push("    temperature=" + body.temperature + ",");
    if (body.max_tokens !== undefined) lines.push("    max_tokens=" + body.max_tokens + ",");
    lines.push(
      "    stream=True,",
      ")",
      "for chunk in stream:",
      "    if chunk.choices and chunk.choices[0].delta.content:",
      '        print(chunk.choices[0].delta.content, end="", flush=True)',
      "print()",
    );
    return lines.join("\n");
  }

  function renderSnippets() {
    const ready = lastRequest !== null;
    const withKey = $("include-key").checked && apiKey !== "";
    $("snippet-curl").textContent = ready ? curlSnippet(lastRequest, withKey) : "Send a message first.";
    $("snippet-python").textContent = ready ? pythonSnippet(lastRequest, withKey) : "Send a message first.";
    $("copy-curl").disabled = !ready;
    $("copy-python").disabled = !ready;
  }

  async function copy(id) {
    const text = $(id).textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // No clipboard API (plain http on another host than localhost): select the text instead.
      const range = document.createRange();
      range.selectNodeContents($(id));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $("copy-status").textContent = "Selected: press Ctrl+C to copy.";
      return;
    }
    $("copy-status").textContent = "Copied.";
  }

  // --- wiring ------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      useKey($("api-key").value);
    });
    $("forget-key").addEventListener("click", forgetKey);
    $("remember-key").addEventListener("change", () => {
      if ($("remember-key").checked && apiKey) sessionStorage.setItem(STORAGE_KEY, apiKey);
      else sessionStorage.removeItem(STORAGE_KEY);
    });
    $("refresh-usage").addEventListener("click", refreshUsage);
    $("chat-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("message").value.trim();
      if (!text || controller) return;
      $("message").value = "";
      send(text);
    });
    $("message").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("chat-form").requestSubmit();
    });
    $("stop").addEventListener("click", () => controller && controller.abort());
    $("clear").addEventListener("click", () => {
      history = [];
      $("transcript").replaceChildren();
      clearRefusal();
      setReplyState("idle", "");
    });
    $("include-key").addEventListener("change", renderSnippets);
    $("copy-curl").addEventListener("click", () => copy("snippet-curl"));
    $("copy-python").addEventListener("click", () => copy("snippet-python"));

    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (saved) {
      $("remember-key").checked = true;
      $("api-key").value = saved;
      useKey(saved);
    }
    document.body.dataset.ready = "true";
  });
})();
