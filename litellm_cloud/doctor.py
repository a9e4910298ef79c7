"""``litellm-cloud doctor``: is this deployment able to serve? One line per check, exit 1 on any failure.

Run it where the proxy runs, so that it sees what the proxy sees (``docker compose exec litellm
litellm-cloud doctor``; on the host, ``--map host.docker.internal=172.17.0.1``). It checks:

- settings: the environment and the files it names load (``Settings.from_env``);
- backend: the key backend answers a validation request for a key that does not exist;
- redis: every Redis URL configured (limits storage, shared revocations) answers PING, with
  append-only persistence on;
- one line per GPU deployment of the rendered config (``GET {api_base}/models``, never a completion),
  and one per model group (how many of its deployments are up);
- langfuse: off without keys; with keys, its OTLP endpoint exists and accepts them (an empty export);
  the OTLP collector of ``HEARTCODE_OTLP_ENDPOINT`` likewise, when set;
- tls: the certificate's expiry (and that ``server.key`` belongs to it).

Checks run concurrently with a per-request ``timeout``; every probe takes an injected ``httpx.Client``
and clock, so tests run it against real local servers without patches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from ._config import Settings
from ._errors import ConfigError
from ._redis import SCHEMES as REDIS_SCHEMES
from ._redis import redacted as redacted_redis_url

Status = Literal["ok", "warn", "fail"]
PROBE_KEY = "hc-sk-doctor-probe-not-a-real-key-000"
"""Well-formed, never issued: the backend must answer it as invalid (200 valid:false, 401 or 404)."""


@dataclass(frozen=True)
class Check:
    """The outcome of one check: what was checked, ok/warn/fail, and what was found."""

    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status.upper():<4}  {self.name:<34} {self.detail}"


@dataclass(frozen=True)
class DoctorOptions:
    """Where to look and how long to wait."""

    config: Path = Path("config.yaml")
    cert: Path = Path("certs/server.crt")
    timeout: float = 3.0
    cert_warn_days: int = 21
    host_map: Mapping[str, str] = field(default_factory=dict)
    """Probe ``host`` at another address (``host.docker.internal`` -> ``172.17.0.1`` outside docker)."""


@dataclass(frozen=True)
class Deployment:
    """One entry of the rendered config's ``model_list``."""

    id: str
    group: str
    api_base: str
    served_model: str


def _mapped(url: str, host_map: Mapping[str, str]) -> str:
    if url.startswith(REDIS_SCHEMES[-1]):  # Sentinel: its netloc lists hosts, and it reports the master's IP
        return url
    parts = urlsplit(url)
    if parts.hostname and parts.hostname in host_map:
        netloc = host_map[parts.hostname] + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _redacted(url: str) -> str:
    if url.startswith(REDIS_SCHEMES[-1]):
        return redacted_redis_url(url)
    parts = urlsplit(url)
    if parts.password or parts.username:
        return urlunsplit(parts._replace(netloc=f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))
    return url


def _failure(exc: Exception, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.ConnectError):
        return f"unreachable ({exc or 'connection failed'})"
    return f"{type(exc).__name__}: {exc}"


def _ms(start: float, now: float) -> str:
    return f"{(now - start) * 1000:.0f} ms"


def load_deployments(config: Path) -> list[Deployment]:
    """The GPU deployments of a rendered LiteLLM config, in file order."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the rendered config {config}: {exc}") from None
    deployments = []
    for i, entry in enumerate(data.get("model_list") or []):
        params = entry.get("litellm_params") or {}
        info = entry.get("model_info") or {}
        base = params.get("api_base")
        if not base:
            continue
        model = str(params.get("model", ""))
        deployments.append(Deployment(id=str(info.get("id") or f"model_list[{i}]"), group=str(entry.get("model_name")),
                                      api_base=str(base).rstrip("/"), served_model=model.split("/", 1)[-1]))
    return deployments


def check_gpu(dep: Deployment, client: httpx.Client, options: DoctorOptions, clock: Callable[[], float]) -> Check:
    """``GET {api_base}/models`` on one deployment: up, and serving the model the config names."""
    name = f"gpu {dep.id} ({dep.group})"
    url = _mapped(dep.api_base, options.host_map) + "/models"
    start = clock()
    try:
        r = client.get(url, timeout=options.timeout)
    except httpx.HTTPError as exc:
        return Check(name, "fail", f"{dep.api_base}: {_failure(exc, options.timeout)}")
    took = _ms(start, clock())
    if r.status_code != 200:
        return Check(name, "fail", f"{dep.api_base}: HTTP {r.status_code} on /models ({took})")
    try:
        served = {m["id"] for m in r.json()["data"]}
    except (ValueError, KeyError, TypeError):
        return Check(name, "warn", f"{dep.api_base}: up ({took}) but /models is not an OpenAI model list")
    if dep.served_model not in served:
        return Check(name, "warn", f"{dep.api_base}: up but serves {sorted(served)}, not {dep.served_model!r}")
    return Check(name, "ok", f"{dep.api_base}: up, serves {dep.served_model} ({took})")


def summarize_groups(deployments: Sequence[Deployment], checks: Sequence[Check]) -> list[Check]:
    """One line per model group: how many of its deployments answered."""
    lines = []
    for group in dict.fromkeys(d.group for d in deployments):
        mine = [c for d, c in zip(deployments, checks, strict=True) if d.group == group]
        up = sum(c.status != "fail" for c in mine)
        status: Status = "ok" if up == len(mine) else ("warn" if up else "fail")
        lines.append(Check(f"group {group}", status, f"{up}/{len(mine)} deployments up"))
    return lines


def check_backend(settings: Settings, client: httpx.Client, options: DoctorOptions, clock: Callable[[], float]) -> Check:
    """The key backend answers a validation request (for a key that does not exist)."""
    url = _mapped(settings.backend_url, options.host_map) + "/api/v1/keys/validate"
    headers = {"Authorization": f"Bearer {settings.backend_token.reveal()}"} if settings.backend_token else {}
    start = clock()
    try:
        r = client.post(url, json={"api_key": PROBE_KEY}, headers=headers, timeout=options.timeout)
    except httpx.TimeoutException as exc:
        return Check("backend", "fail", f"{settings.backend_url}: {_failure(exc, options.timeout)} (clients get auth_timeout)")
    except httpx.HTTPError as exc:
        return Check("backend", "fail", f"{settings.backend_url}: {_failure(exc, options.timeout)} (clients get auth_unavailable)")
    took = _ms(start, clock())
    if r.status_code in (401, 404) or (r.status_code == 200 and _says_invalid(r)):
        return Check("backend", "ok", f"{settings.backend_url}: answers key validation (HTTP {r.status_code}, {took})")
    if r.status_code == 403:
        return Check("backend", "fail", f"{settings.backend_url}: HTTP 403, service token refused (HEARTCODE_BACKEND_TOKEN)")
    if r.status_code == 200:
        return Check("backend", "fail", f"{settings.backend_url}: HTTP 200 but the body breaks the key contract")
    return Check("backend", "fail", f"{settings.backend_url}: HTTP {r.status_code} (clients get auth_unavailable)")


def _says_invalid(r: httpx.Response) -> bool:
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("valid") is False


def redis_urls(settings: Settings) -> dict[str, str]:
    """Setting name -> Redis URL, for every Redis the gateway is configured to use."""
    urls = {}
    if settings.limits_storage.startswith(REDIS_SCHEMES):
        urls["HEARTCODE_LIMITS_STORAGE"] = settings.limits_storage
    if settings.redis_url:
        urls["HEARTCODE_REDIS_URL"] = settings.redis_url
    return urls


def check_redis(setting: str, url: str, options: DoctorOptions) -> Check:
    """PING, and whether counters survive a restart (append-only file)."""
    import redis

    from ._redis import sync_client

    client = sync_client(_mapped(url, options.host_map), socket_connect_timeout=options.timeout,
                         socket_timeout=options.timeout)
    name = f"redis {setting}"
    try:
        client.ping()
        try:
            aof = bool(client.info("persistence").get("aof_enabled"))
        except redis.ResponseError:  # INFO renamed or forbidden: say nothing about persistence
            aof = True
    except redis.RedisError as exc:
        return Check(name, "fail", f"{_redacted(url)}: {exc}")
    finally:
        client.close()
    if not aof:
        return Check(name, "warn", f"{_redacted(url)}: answers, but appendonly is off (counters lost on restart)")
    return Check(name, "ok", f"{_redacted(url)}: answers")


#: An empty OTLP ``ExportTraceServiceRequest``: valid protobuf, no span. Probes auth and the endpoint only.
EMPTY_EXPORT = b""
_NO_OTLP = "no OTLP traces endpoint (HTTP {status}): Langfuse needs v3.22 or later (self-hosted: upgrade)"


def _post_empty_export(client: httpx.Client, url: str, options: DoctorOptions, **kwargs: Any) -> httpx.Response:
    headers = {"content-type": "application/x-protobuf", **kwargs.pop("headers", {})}
    return client.post(_mapped(url, options.host_map), content=EMPTY_EXPORT, headers=headers,
                       timeout=options.timeout, **kwargs)  # fmt: skip


def check_langfuse(settings: Settings, client: httpx.Client, options: DoctorOptions) -> Check:
    """Off without keys; with both, Langfuse's OTLP endpoint exists and accepts them (an empty export)."""
    from .observability import LANGFUSE_OTLP_PATH

    public, secret = settings.langfuse_public_key, settings.langfuse_secret_key
    if not public and not secret:
        return Check("langfuse", "ok", "tracing off (LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY not set)")
    if not (public and secret):
        missing = "LANGFUSE_SECRET_KEY" if public else "LANGFUSE_PUBLIC_KEY"
        return Check("langfuse", "fail", f"{missing} is not set: tracing stays off until both keys are set")
    host = settings.langfuse_host
    try:
        r = _post_empty_export(client, host + LANGFUSE_OTLP_PATH, options, auth=(public.reveal(), secret.reveal()))
    except httpx.HTTPError as exc:
        return Check("langfuse", "fail", f"{host}: {_failure(exc, options.timeout)}")
    code = r.status_code
    return _judge_export("langfuse", host, r, refused=f"reachable, but the keys are refused (HTTP {code})",
                         missing=_NO_OTLP.format(status=code), ok="OTLP endpoint reachable, keys accepted",
                         other=f"OTLP endpoint answered HTTP {code}")  # fmt: skip


def check_otlp(settings: Settings, client: httpx.Client, options: DoctorOptions) -> Check:
    """``HEARTCODE_OTLP_ENDPOINT`` answers an empty export with its headers."""
    from .observability import parse_headers

    url = settings.otlp_endpoint
    headers = {k: v.reveal() for k, v in parse_headers(settings.otlp_headers.reveal()).items()}
    try:
        r = _post_empty_export(client, url, options, headers=headers)
    except httpx.HTTPError as exc:
        return Check("otlp collector", "fail", f"{url}: {_failure(exc, options.timeout)}")
    code = r.status_code
    return _judge_export("otlp collector", url, r, refused=f"refused (HTTP {code}): check HEARTCODE_OTLP_HEADERS",
                         missing=f"HTTP {code}: not an OTLP/HTTP traces URL (…/v1/traces)",
                         ok="accepts OTLP exports", other=f"answered HTTP {code}")  # fmt: skip


def _judge_export(name: str, where: str, r: httpx.Response, *, refused: str, missing: str, ok: str,
                  other: str) -> Check:  # fmt: skip
    """An empty export's answer: credentials refused, no traces endpoint, accepted (a 400 means the
    credentials passed and the empty request was judged), or something else."""
    if r.status_code in (401, 403):
        return Check(name, "fail", f"{where}: {refused}")
    if r.status_code in (404, 405):
        return Check(name, "fail", f"{where}: {missing}")
    if r.is_success or r.status_code == 400:
        return Check(name, "ok", f"{where}: {ok}")
    return Check(name, "warn", f"{where}: {other}")


def check_certificate(cert: Path, now: dt.datetime, warn_days: int) -> Check:
    """Expiry of the TLS certificate nginx serves, and whether ``server.key`` beside it matches."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if not cert.exists():
        return Check("tls certificate", "warn", f"no certificate at {cert} (needed only with --profile https)")
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as exc:
        return Check("tls certificate", "fail", f"{cert}: not a PEM certificate ({exc})")
    not_after = certificate.not_valid_after_utc
    days = (not_after - now).total_seconds() / 86400
    key = cert.with_suffix(".key")
    if key.exists():
        try:
            private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            return Check("tls certificate", "fail", f"{key}: cannot be loaded ({exc})")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if private.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
            return Check("tls certificate", "fail", f"{key} does not belong to {cert}")
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if days <= 0:
        return Check("tls certificate", "fail", f"{cert} expired on {when}")
    if days < warn_days:
        return Check("tls certificate", "warn", f"{cert} expires in {days:.0f} days ({when}): renew it")
    return Check("tls certificate", "ok", f"{cert} valid until {when} ({days:.0f} days)")


def run_checks(
    env: Mapping[str, str],
    options: DoctorOptions,
    *,
    base_dir: Path | None = None,
    client: httpx.Client | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> list[Check]:
    """Every check, in a stable order (they run concurrently)."""
    own_client = client is None
    http = client or httpx.Client()
    try:
        settings: Settings | None = None
        try:
            settings = Settings.from_env(env, base_dir=base_dir)
            first = [Check("settings", "ok", "environment and files load")]
        except ConfigError as exc:
            first = [Check("settings", "fail", str(exc))]
        try:
            deployments = load_deployments(options.config)
            if not deployments:
                first.append(Check("config", "fail", f"{options.config}: no deployment with an api_base"))
        except ConfigError as exc:
            deployments = []
            first.append(Check("config", "fail", str(exc)))
        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = []
            if settings is not None:
                futures.append(pool.submit(check_backend, settings, http, options, clock))
                futures += [pool.submit(check_redis, name, url, options) for name, url in redis_urls(settings).items()]
                futures.append(pool.submit(check_langfuse, settings, http, options))
                if settings.otlp_endpoint:
                    futures.append(pool.submit(check_otlp, settings, http, options))
            gpu_futures = [pool.submit(check_gpu, d, http, options, clock) for d in deployments]
            futures.append(pool.submit(check_certificate, options.cert, now(), options.cert_warn_days))
            service_checks = [f.result() for f in futures]
            gpu_checks = [f.result() for f in gpu_futures]
        if settings is not None and not redis_urls(settings):
            service_checks.insert(1, Check("redis", "warn", "not configured: limits count in this process only and reset on restart"))
        return first + service_checks + gpu_checks + summarize_groups(deployments, gpu_checks)
    finally:
        if own_client:
            http.close()


def _host_map(values: Sequence[str]) -> dict[str, str]:
    mapping = {}
    for value in values:
        host, sep, address = value.partition("=")
        if not sep or not host or not address:
            raise ConfigError(f"--map {value!r}: expected HOST=ADDRESS, e.g. host.docker.internal=172.17.0.1")
        mapping[host] = address
    return mapping


def handler(args: argparse.Namespace) -> int:
    """Run every check, print one line each and a summary; 1 if any failed."""
    options = DoctorOptions(config=args.config, cert=args.cert, timeout=args.timeout,
                            cert_warn_days=args.cert_warn_days, host_map=_host_map(args.map))
    checks = run_checks(os.environ, options)
    for check in checks:
        print(check.line())
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    print(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    return 1 if counts["fail"] else 0


def add_parser(subparsers: Any) -> None:
    """Register ``litellm-cloud doctor``."""
    p = subparsers.add_parser("doctor", help="check backend, Redis, every GPU deployment, Langfuse and the TLS certificate")
    p.add_argument("--config", type=Path, default=Path("config.yaml"), help="rendered LiteLLM config the proxy runs")
    p.add_argument("--cert", type=Path, default=Path("certs/server.crt"), help="certificate nginx serves (key beside it)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per probe")
    p.add_argument("--cert-warn-days", type=int, default=21, help="warn when the certificate expires sooner")
    p.add_argument("--map", action="append", default=[], metavar="HOST=ADDRESS",
                   help="probe HOST at ADDRESS (outside docker: host.docker.internal=172.17.0.1)")
    p.set_defaults(func=handler)
