"""What the tunnel is doing, kept in one thread-safe object and written to a JSON file.

``TunnelStatus`` is updated by the supervisor (connection state, reconnects) and by the dispatcher's
pumps (bytes, connections); there is one per cloud host. ``snapshot()`` is a plain dict and
``combine`` joins every host's into one (``{"state", "pid", "written_at", "hosts": [...]}``); ``write_status``/``read_status`` move it
through a file (atomically replaced) so ``litellm-cloud tunnel status`` and a metrics exporter can read
it from another process; ``render_text`` and ``render_prometheus`` format the same snapshot.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import Forward

# Forward states: down (no session), requesting, up, refused (server denied; retrying).
FORWARD_STATES = ("down", "requesting", "up", "refused")
# Connection states: starting, connecting, up, backoff, stopped.
TUNNEL_STATES = ("starting", "connecting", "up", "backoff", "stopped")


@dataclass
class _ForwardCounters:
    name: str
    remote_port: int
    target: str
    state: str = "down"
    since: float = 0.0
    bytes_to_target: int = 0
    bytes_from_target: int = 0
    connections: int = 0
    active: int = 0
    failed_connections: int = 0
    refusals: int = 0
    last_error: str | None = None


class TunnelStatus:
    """Counters and states of one tunnel process; every method may be called from any thread."""

    def __init__(self, forwards: Iterable[Forward], *, host: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host  # the cloud host's name: the ``host`` label and status rows (None: unlabelled)
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._forwards = {
            f.name: _ForwardCounters(f.name, f.remote_port, f"{f.target_host}:{f.target_port}", since=now)
            for f in forwards
        }
        self.pid = os.getpid()
        self._state = "starting"
        self._since = now
        self._connects = 0
        self._last_connect: float | None = None
        self._last_error: str | None = None
        self._next_attempt: float | None = None
        self._version = 0

    @property
    def version(self) -> int:
        """Bumped on every state change (not on byte counts), so writers know when to write at once."""
        with self._lock:
            return self._version

    def set_state(self, state: str, *, error: str | None = None, next_attempt: float | None = None) -> None:
        """The connection's state; ``up`` counts a (re)connect."""
        assert state in TUNNEL_STATES, state
        with self._lock:
            now = self._clock()
            if state == "up":
                self._connects += 1
                self._last_connect = now
                self._last_error = None
            if error is not None:
                self._last_error = error
            self._next_attempt = next_attempt
            if state != self._state:
                self._state, self._since = state, now
            if state != "up":
                for fwd in self._forwards.values():
                    if fwd.state != "down":
                        fwd.state, fwd.since = "down", now
            self._version += 1

    def set_forward(self, name: str, state: str, *, error: str | None = None) -> None:
        """One forward's state; ``refused`` counts a refusal and keeps ``error``."""
        assert state in FORWARD_STATES, state
        with self._lock:
            fwd = self._forwards[name]
            if state == "refused":
                fwd.refusals += 1
            if error is not None or state == "up":
                fwd.last_error = error
            if state != fwd.state:
                fwd.state, fwd.since = state, self._clock()
            self._version += 1

    def connection(self, name: str, *, opened: bool = False, closed: bool = False, failed: bool = False) -> None:
        """A connection through forward ``name`` opened, closed, or could not reach its target."""
        with self._lock:
            fwd = self._forwards[name]
            if opened:
                fwd.connections += 1
                fwd.active += 1
            if closed:
                fwd.active -= 1
            if failed:
                fwd.failed_connections += 1

    def add_bytes(self, name: str, *, to_target: int = 0, from_target: int = 0) -> None:
        """Bytes moved through forward ``name``."""
        with self._lock:
            fwd = self._forwards[name]
            fwd.bytes_to_target += to_target
            fwd.bytes_from_target += from_target

    def forwards_up(self) -> tuple[int, int]:
        """(forwards up, forwards configured)."""
        with self._lock:
            return sum(f.state == "up" for f in self._forwards.values()), len(self._forwards)

    def summary(self) -> str:
        """One line for systemd's STATUS= and the log."""
        snap = self.snapshot()
        up = sum(f["state"] == "up" for f in snap["forwards"])
        refused = [f["name"] for f in snap["forwards"] if f["state"] == "refused"]
        text = f"{snap['state']}: {up}/{len(snap['forwards'])} forwards up"
        if refused:
            text += f", refused: {', '.join(refused)}"
        if snap["state"] != "up" and snap["last_error"]:
            text += f"; last error: {snap['last_error']}"
        return text

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of everything."""
        with self._lock:
            return {
                **({"host": self.host} if self.host is not None else {}),
                "pid": self.pid,
                "written_at": self._clock(),
                "state": self._state,
                "since": self._since,
                "connects": self._connects,
                "reconnects": max(0, self._connects - 1),
                "last_connect": self._last_connect,
                "last_error": self._last_error,
                "next_attempt": self._next_attempt,
                "forwards": [asdict(f) for f in self._forwards.values()],
            }


def combine(snapshots: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Every host's snapshot in one. One host: its snapshot as it is (the one-host status file keeps
    its shape). Several: ``{"pid", "written_at", "state", "hosts": [...]}`` where ``state`` is ``up``
    when all are, ``degraded`` when some are, ``stopped`` when all have stopped, else ``down``."""
    if len(snapshots) == 1:
        return snapshots[0]
    states = {s["state"] for s in snapshots}
    if states == {"up"}:
        state = "up"
    elif states == {"stopped"}:
        state = "stopped"
    else:
        state = "degraded" if "up" in states else "down"
    return {"pid": os.getpid(), "written_at": now, "state": state, "hosts": snapshots}


def host_snapshots(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-host snapshots of a combined one (a one-host snapshot is its own list)."""
    hosts: list[dict[str, Any]] = snap.get("hosts", [snap])
    return hosts


def all_up(snap: dict[str, Any]) -> bool:
    """Every host connected and every forward on each up."""
    return all(h["state"] == "up" and all(f["state"] == "up" for f in h["forwards"]) for h in host_snapshots(snap))


def write_status(path: Path, snapshot: dict[str, Any]) -> None:
    """Replace ``path`` atomically, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(snapshot, indent=1) + "\n")
    tmp.chmod(0o644)  # no secrets inside; an admin's `tunnel status` must read it despite UMask=0077
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any]:
    """The last snapshot written to ``path``."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _ago(now: float, then: float | None) -> str:
    if not then:
        return "never"
    secs = max(0.0, now - then)
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def render_text(snap: dict[str, Any], now: float) -> str:
    """The table ``litellm-cloud tunnel status`` prints: a line per cloud host, then a row per forward
    and host."""
    hosts = host_snapshots(snap)
    lines = []
    for h in hosts:
        who = f"host {h['host']}" if "host" in h else "tunnel"
        lines.append(f"{who}: {h['state']} since {_ago(now, h['since'])}, pid {h['pid']}, "
                     f"last connect {_ago(now, h['last_connect'])}, reconnects {h['reconnects']}")
        if h.get("last_error") and h["state"] != "up":
            lines.append(f"  last error: {h['last_error']}")
    labelled = all("host" in h for h in hosts) and len(hosts) > 1
    header = ("FORWARD", "REMOTE", "TARGET", "STATE", "SINCE", "CONNS", "TO TARGET", "FROM TARGET")
    rows = [(("HOST",) if labelled else ()) + header]
    for h in hosts:
        for f in h["forwards"]:
            rows.append(((h["host"],) if labelled else ()) + (
                f["name"], str(f["remote_port"]), f["target"], f["state"], _ago(now, f["since"]),
                f"{f['active']}/{f['connections']}", _size(f["bytes_to_target"]), _size(f["bytes_from_target"]),
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for h in hosts:
        for f in h["forwards"]:
            if f["state"] != "up" and f.get("last_error"):
                lines.append(f"{h['host'] + ' ' if labelled else ''}{f['name']}: {f['last_error']}")
    return "\n".join(lines)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render_prometheus(snap: dict[str, Any]) -> str:
    """The same snapshot in Prometheus text format (for a textfile collector or a /metrics route);
    every series of a named cloud host carries ``host="NAME"``."""
    header: list[tuple[str, str, str]] = [
        ("litellm_tunnel_up", "gauge", "Whether the SSH connection to the cloud host is up."),
        ("litellm_tunnel_connects_total", "counter", "SSH sessions established (the first and every reconnect)."),
        ("litellm_tunnel_reconnects_total", "counter", "SSH sessions established after the first one."),
        ("litellm_tunnel_last_connect_timestamp_seconds", "gauge", "When the current session was established."),
        ("litellm_tunnel_forward_up", "gauge", "Whether the forward's remote listener is up."),
        ("litellm_tunnel_forward_refusals_total", "counter", "Forward requests the server denied."),
        ("litellm_tunnel_forward_connections_total", "counter", "Connections through the forward."),
        ("litellm_tunnel_forward_active_connections", "gauge", "Connections open now."),
        ("litellm_tunnel_forward_target_failures_total", "counter", "Connections whose target refused."),
        ("litellm_tunnel_forward_bytes_total", "counter", "Bytes moved, by direction."),
    ]
    samples: dict[str, list[str]] = {name: [] for name, _, _ in header}
    for h in host_snapshots(snap):
        host = f'host="{_label(h["host"])}"' if "host" in h else ""
        whole = f"{{{host}}}" if host else ""
        samples["litellm_tunnel_up"].append(f"litellm_tunnel_up{whole} {1 if h['state'] == 'up' else 0}")
        samples["litellm_tunnel_connects_total"].append(f"litellm_tunnel_connects_total{whole} {h['connects']}")
        samples["litellm_tunnel_reconnects_total"].append(f"litellm_tunnel_reconnects_total{whole} {h['reconnects']}")
        samples["litellm_tunnel_last_connect_timestamp_seconds"].append(
            f"litellm_tunnel_last_connect_timestamp_seconds{whole} {h['last_connect'] or 0}")
        for f in h["forwards"]:
            lab = (f"{host}," if host else "") + f'forward="{_label(f["name"])}",remote_port="{f["remote_port"]}"'
            for name, value in (
                ("litellm_tunnel_forward_up", 1 if f["state"] == "up" else 0),
                ("litellm_tunnel_forward_refusals_total", f["refusals"]),
                ("litellm_tunnel_forward_connections_total", f["connections"]),
                ("litellm_tunnel_forward_active_connections", f["active"]),
                ("litellm_tunnel_forward_target_failures_total", f["failed_connections"]),
            ):
                samples[name].append(f"{name}{{{lab}}} {value}")
            for direction in ("to_target", "from_target"):
                samples["litellm_tunnel_forward_bytes_total"].append(
                    f'litellm_tunnel_forward_bytes_total{{{lab},direction="{direction}"}} {f["bytes_" + direction]}')
    out: list[str] = []
    for name, kind, help_text in header:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(out) + "\n"
