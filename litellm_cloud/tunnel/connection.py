"""One SSH connection to the cloud host: TCP with liveness options, a pinned host key, key auth, and
the one command run on connect (``Connection.run_command``, called by the forward requester).

Every failure is raised as a ``TunnelError`` subclass whose message says what to do, and whose class
tells the supervisor how long to back off (``errors.py``).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from .config import TunnelConfig
from .errors import AuthRefused, HostKeyChanged, HostKeyUnknown, NeedsOperator, SessionLost, Unreachable
from .keepalive import GlobalRequests

log = logging.getLogger(__name__)

# AES-GCM first: the fastest cipher paramiko has here (NOTES-tunnels: ~227 MB/s vs less for CTR+HMAC).
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
# A pinned key of one type may be presented under these algorithm names.
_ALGORITHMS_FOR_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


def load_identity(path: Path) -> paramiko.PKey:
    """The private key; a missing or unreadable key is an operator problem, said plainly."""
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError as exc:
        raise NeedsOperator(f"identity file {path} does not exist") from exc
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise NeedsOperator(f"cannot load identity file {path}: {exc}") from exc


def pinned_keys(known_hosts: Path, host_label: str) -> dict[str, paramiko.PKey]:
    """The keys ``known_hosts`` pins for ``host_label`` (``host`` or ``[host]:port``), by key type."""
    keys = paramiko.HostKeys()
    try:
        keys.load(str(known_hosts))
    except FileNotFoundError as exc:
        raise HostKeyUnknown(f"known_hosts file {known_hosts} does not exist; create it with the cloud "
                             f"host's key (ssh-keyscan, then check the fingerprint)") from exc
    except OSError as exc:
        raise HostKeyUnknown(f"cannot read known_hosts file {known_hosts}: {exc}") from exc
    found = keys.lookup(host_label)
    if not found:
        raise HostKeyUnknown(
            f"host key for {host_label} is not in {_fix_where(known_hosts)}; refusing to trust an unknown key. "
            f"Add it (ssh-keyscan, then compare the fingerprint with the cloud host's own)"
        )
    return {kind: found[kind] for kind in found}


def _fix_where(path: Path) -> str:
    """Which file to edit: a systemd credential is a read-only copy of the file ``LoadCredential=`` names."""
    if path.is_relative_to("/run/credentials"):
        return (f"{path} (a systemd credential: edit the file LoadCredential={path.name}: names in the unit, "
                "then restart it)")
    return str(path)


def _fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)


def tune_ssh_socket(sock: socket.socket, *, keepalive_interval: float, keepalive_count: int,
                    user_timeout: float) -> None:
    """No Nagle on our side; kernel keepalives and a TCP_USER_TIMEOUT as a second net under ours.

    ``user_timeout`` is ``TunnelConfig.user_timeout`` (the keepalive deadline unless configured); 0
    leaves TCP_USER_TIMEOUT unset (the kernel's retransmission limits, ~15 min), so only our keepalive
    notices a dead link: what a test of that keepalive needs.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, int(keepalive_interval))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, keepalive_count))
    if user_timeout > 0:
        # Unacknowledged data older than this (by default the keepalive deadline) means the peer is gone.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(user_timeout * 1000)))


@dataclass
class Connection:
    """An authenticated SSH connection; ``close()`` ends it so the server frees the ports at once."""

    transport: paramiko.Transport
    requests: GlobalRequests
    command: str | None = None
    timeout: float = 5.0
    helper_reply: str | None = None

    def run_command(self) -> str | None:
        """Run the connect command (if any) and return the first line it printed."""
        if self.command:
            try:
                self.helper_reply = run_connect_command(self.transport, self.command, timeout=self.timeout)
            except SessionLost as exc:
                # Runs on the forward requester's thread: report, and let the supervisor notice the
                # dead transport (if that is what it was) instead of raising into nowhere.
                log.warning("%s", exc)
        return self.helper_reply

    def close(self) -> None:
        """Close the transport and its socket (the server sees EOF and drops our listeners)."""
        self.transport.close()


def connect_tcp(config: TunnelConfig) -> socket.socket:
    """The TCP connection to the SSH server, or ``Unreachable``."""
    try:
        sock = socket.create_connection((config.host, config.port), timeout=config.connect_timeout)
    except OSError as exc:
        raise Unreachable(f"cannot connect to {config.host}:{config.port}: {exc.strerror or exc}") from exc
    tune_ssh_socket(sock, keepalive_interval=config.keepalive.interval, keepalive_count=config.keepalive.count,
                    user_timeout=config.user_timeout)
    return sock


def open_connection(config: TunnelConfig, identity: paramiko.PKey, sock: socket.socket) -> Connection:
    """Handshake over ``sock``, check the pinned host key, authenticate (the caller runs the command)."""
    try:
        pinned = pinned_keys(config.known_hosts, config.host_label)
    except BaseException:
        sock.close()
        raise
    transport = paramiko.Transport(sock)
    # Bound every wait of the handshake, so the supervisor's loop (and systemd's watchdog) gets back
    # control within a few connect timeouts even from a server that accepts TCP and then stalls.
    transport.banner_timeout = config.connect_timeout
    transport.handshake_timeout = config.connect_timeout
    transport.auth_timeout = config.connect_timeout
    try:
        options = transport.get_security_options()
        options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in options.ciphers) or options.ciphers
        # Offer only the pinned key types, so the server shows us a key we can check.
        wanted: list[str] = []
        for kind in pinned:
            wanted += _ALGORITHMS_FOR_KEY_TYPE.get(kind, (kind,))
        offered = [k for k in wanted if k in transport._preferred_keys]
        if offered:
            options.key_types = tuple(offered)
        try:
            transport.start_client(timeout=config.connect_timeout)
        except paramiko.SSHException as exc:
            if "host key" in str(exc).lower():
                raise HostKeyChanged(
                    f"{config.host_label} offers no host key of the pinned type(s) {', '.join(pinned)} "
                    f"from {_fix_where(config.known_hosts)}: {exc}"
                ) from exc
            raise SessionLost(f"SSH handshake with {config.host_label} failed: {exc}") from exc
        except (OSError, EOFError) as exc:
            raise SessionLost(f"SSH handshake with {config.host_label} failed: {exc}") from exc
        key = transport.get_remote_server_key()
        expected = pinned.get(key.get_name())
        if expected is None or expected.asbytes() != key.asbytes():
            pins = ", ".join(f"{k} {_fingerprint(v)}" for k, v in pinned.items())
            raise HostKeyChanged(
                f"HOST KEY MISMATCH for {config.host_label}: the server presented {key.get_name()} "
                f"{_fingerprint(key)} but {_fix_where(config.known_hosts)} pins {pins}. Refusing to connect; if the "
                f"cloud host's key really changed, update the known_hosts file"
            )
        try:
            transport.auth_publickey(config.user, identity)
        except paramiko.BadAuthenticationType as exc:
            raise AuthRefused(
                f"{config.host_label} refused public-key authentication for {config.user!r} "
                f"(it allows only {', '.join(exc.allowed_types) or 'nothing'}); we use keys only"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise AuthRefused(
                f"{config.host_label} refused our key {_fingerprint(identity)} for user {config.user!r}: "
                f"check the tunnel user's authorized_keys on the cloud host"
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SessionLost(f"authentication with {config.host_label} failed: {exc}") from exc
        return Connection(transport, GlobalRequests(transport), config.command(), config.connect_timeout)
    except BaseException:
        transport.close()
        raise


def run_connect_command(transport: paramiko.Transport, command: str, *, timeout: float) -> str | None:
    """Run ``command`` once and return the first line it prints (or ``None``).

    This does two jobs. Running a command makes sshd set TCP_NODELAY on its side, without which new
    connections through the tunnel stall ~40 ms (NOTES-tunnels: Nagle). And on a cloud host with the
    forced-command helper, the command ends our own stale session first, so its ports come free now.
    The helper prints one line once that is done; a server without the helper just runs the command.
    """
    try:
        chan = transport.open_session(timeout=timeout)
        chan.exec_command(command)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SessionLost(f"cannot run the connect command: {exc}") from exc
    deadline = time.monotonic() + timeout
    out = b""
    chan.settimeout(0.1)
    while b"\n" not in out and time.monotonic() < deadline:
        try:
            data = chan.recv(1024)
        except TimeoutError:
            continue
        except OSError as exc:
            raise SessionLost(f"connect command failed: {exc}") from exc
        if not data:
            break
        out += data
    line = out.split(b"\n", 1)[0].decode(errors="replace").strip() or None
    if chan.exit_status_ready() and chan.recv_exit_status() != 0:
        log.warning("connect command %r exited with %s (no forced-command helper on the cloud host?); "
                    "stale sessions will not be ended early", command, chan.recv_exit_status())
    elif line is None:
        log.warning("connect command %r printed nothing within %.0fs", command, timeout)
    else:
        log.info("cloud helper: %s", line)
    chan.close()
    return line
