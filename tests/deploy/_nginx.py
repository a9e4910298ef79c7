"""The repo's nginx configuration, rendered and run on the host the way the official nginx image does.

The image renders ``/etc/nginx/templates/*.template`` into ``/etc/nginx/conf.d/`` with envsubst, for the
variables that match ``NGINX_ENVSUBST_FILTER`` (``^NGINX_`` in docker-compose.yml), and starts
``nginx -g 'daemon off;'`` with ``/etc/nginx/nginx.conf``. ``NginxLayout`` builds the same tree under a
temporary prefix: nginx.conf and snippets/ copied verbatim, conf.d/gateway.conf rendered from the
template; only pid, error log and (as root) the worker user are given on the command line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509

from tests.support import REPO, ManagedProcess, port_open

NGINX_DIR = REPO / "nginx"
TEMPLATE = NGINX_DIR / "templates" / "gateway.conf.template"
NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def template_variables(text: str, prefix: str = "NGINX_") -> set[str]:
    """The ``${NGINX_*}`` variables a template uses."""
    return {m.group(1) or m.group(2) for m in _VAR.finditer(text) if (m.group(1) or m.group(2)).startswith(prefix)}


def envsubst(text: str, env: Mapping[str, str], prefix: str = "NGINX_") -> str:
    """What the image's ``envsubst "$defined_envs"`` does: replace ``$VAR``/``${VAR}`` for defined ``VAR``s
    matching the filter; anything else (nginx's own ``$host`` ...) stays as it is."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name.startswith(prefix) and name in env:
            return env[name]
        return match.group(0)

    return _VAR.sub(sub, text)


class NginxLayout:
    """A prefix directory holding the rendered configuration, certificates, logs and temp files."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = dict(env)
        (root / "conf.d").mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        (root / "temp").mkdir(exist_ok=True)
        (root / "acme").mkdir(exist_ok=True)
        shutil.copy(NGINX_DIR / "nginx.conf", root / "nginx.conf")
        shutil.copytree(NGINX_DIR / "snippets", root / "snippets", dirs_exist_ok=True)
        rendered = envsubst(TEMPLATE.read_text(), self.env)
        left = template_variables(rendered)
        if left:
            raise ValueError(f"template variables without a value: {sorted(left)}")
        (root / "conf.d" / "gateway.conf").write_text(rendered)

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    def globals(self) -> str:
        """Main-context directives for ``-g`` (the image leaves them to the compiled-in defaults)."""
        directives = ["daemon off;", f"pid {self.root / 'nginx.pid'};", f"error_log {self.root / 'logs' / 'error.log'} info;"]
        if os.geteuid() == 0:
            # Workers would run as www-data and could not enter a root-only pytest temp dir.
            directives.append("user root;")
        return " ".join(directives)

    def argv(self, *extra: str) -> list[str]:
        return [NGINX_BIN, "-p", str(self.root), "-c", str(self.conf), "-g", self.globals(), *extra]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on this layout."""
        return subprocess.run(self.argv("-t"), check=False, capture_output=True, text=True, timeout=30)

    def process(self, name: str, ready_port: int) -> ManagedProcess:
        return ManagedProcess(name, self.argv(), log_dir=self.root / "logs", ready=lambda: port_open(ready_port),
                              ready_timeout=15)


def nginx_env(*, http_port: int, https_port: int, upstream: str, cert_dir: Path, root: Path,
              upstream_2: str | None = None, **overrides: str) -> dict[str, str]:
    """Test values for every template variable (docker-compose.yml gives the production ones); one
    upstream unless ``upstream_2`` names a second proxy."""
    env = {
        "NGINX_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "NGINX_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
        "NGINX_PUBLIC_HTTPS_PORT": str(https_port),
        "NGINX_SERVER_NAME": "localhost",
        "NGINX_UPSTREAM": upstream,
        "NGINX_UPSTREAM_2": upstream_2 or upstream,
        "NGINX_CERT_DIR": str(cert_dir),
        "NGINX_LOG_DIR": str(root / "logs"),
        "NGINX_TEMP_DIR": str(root / "temp"),
        "NGINX_ACME_ROOT": str(root / "acme"),
        "NGINX_BODY_LIMIT": "64k",
        "NGINX_RATE_LIMIT": "50r/s",
        "NGINX_RATE_BURST": "20",
        "NGINX_CONN_LIMIT": "4",
        "NGINX_READ_TIMEOUT": "600s",
    }
    env.update(overrides)
    return env


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())
