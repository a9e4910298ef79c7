"""A real Redis Sentinel set on loopback: a master, a replica and three sentinels (quorum 2).

Every process runs on a free port with its own directory and config file, started and stopped by the
test module that uses it. ``down-after-milliseconds`` and ``failover-timeout`` are low so a failover
takes a few seconds instead of a minute.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from litellm_cloud._procs import ManagedProcess
from tests.support import free_ports, port_open, wait_until

SERVICE = "hc-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class SentinelSet:
    """``redis-server`` master + replica and three ``redis-server --sentinel`` watching them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.master_port, self.replica_port, *self.sentinel_ports = free_ports(5)
        self.servers: dict[int, ManagedProcess] = {}
        self.sentinels: list[ManagedProcess] = []

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def _server(self, port: int, *extra: str) -> ManagedProcess:
        work = self.root / f"redis-{port}"
        work.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(work), *extra]  # fmt: skip
        proc = ManagedProcess(f"redis-{port}", argv, log_dir=self.root, ready=lambda: port_open(port))
        self.servers[port] = proc
        return proc.start()

    def _sentinel(self, port: int) -> ManagedProcess:
        work = self.root / f"sentinel-{port}"
        work.mkdir(exist_ok=True)
        conf = work / "sentinel.conf"  # sentinels rewrite their config: each needs its own, writable
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {work}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        proc = ManagedProcess(
            f"sentinel-{port}", ["redis-server", str(conf), "--sentinel"], log_dir=self.root,
            ready=lambda: port_open(port),
        )  # fmt: skip
        return proc.start()

    def start(self) -> SentinelSet:
        try:
            self._server(self.master_port)
            self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
            wait_until(self._replica_synced, 30, "the replica to sync with the master")
            self.sentinels = [self._sentinel(p) for p in self.sentinel_ports]
            wait_until(self._sentinels_ready, 30, "three sentinels that know the master, the replica and each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _replica_synced(self) -> bool:
        info = redis.Redis(port=self.replica_port, socket_timeout=1).info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            try:
                state = redis.Redis(port=port, socket_timeout=1, decode_responses=True).sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def master_address(self) -> tuple[str, int] | None:
        """The master as a majority of sentinels reports it (None without a majority)."""
        seen: dict[tuple[str, int], int] = {}
        for port in self.sentinel_ports:
            try:
                host, mport = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
            except (redis.RedisError, TypeError):
                continue
            key = (host.decode() if isinstance(host, bytes) else host, int(mport))
            seen[key] = seen.get(key, 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= 2 else None

    def kill_master(self) -> float:
        """SIGKILL the current master's redis-server; returns the monotonic time of the kill."""
        address = self.master_address()
        assert address is not None, "no master to kill"
        self.servers[address[1]].kill()
        return time.monotonic()

    def stop(self) -> None:
        for proc in [*self.sentinels, *self.servers.values()]:
            proc.stop()
