"""Asks the server for every remote listener, and keeps asking for the ones it refused.

A refusal usually means the port is still held by a stale session of ours (the cloud sshd never noticed
the old connection die) or by someone else. Other forwards keep working meanwhile; the refused one is
retried with backoff until it comes back. In strict mode (like OpenSSH's ``ExitOnForwardFailure``) the
first refusal gives the whole connection up instead.

Runs on its own thread: ``global_request`` waits without a timeout, and the supervisor's loop must stay
free to notice a dead link.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence

import paramiko

from .backoff import exp_delay
from .config import Forward, Reconnect
from .keepalive import GlobalRequests
from .status import TunnelStatus

log = logging.getLogger(__name__)


class ForwardRequester:
    """Requests ``forwards`` on one connection, then retries the refused ones until stopped."""

    def __init__(
        self,
        requests: GlobalRequests,
        forwards: Sequence[Forward],
        handler: Callable[..., None],
        status: TunnelStatus,
        *,
        bind_address: str,
        policy: Reconnect,
        strict: bool,
        connect_command: Callable[[], object] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._requests = requests
        self._forwards = list(forwards)
        self._handler = handler
        self._status = status
        self._bind = bind_address
        self._policy = policy
        self._strict = strict
        self._rand = rand
        self._connect_command = connect_command
        self._stop = threading.Event()
        self.failure: str | None = None  # strict mode: why the connection must be given up
        self.first_pass_done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwards", daemon=True)

    def start(self) -> ForwardRequester:
        """Start requesting on a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop retrying."""
        self._stop.set()

    def _request(self, fwd: Forward) -> bool:
        self._status.set_forward(fwd.name, "requesting")
        try:
            self._requests.forward(self._bind, fwd.remote_port, self._handler)
        except paramiko.SSHException as exc:
            if not self._requests.transport.is_active():
                return False
            reason = (f"server refused {self._bind}:{fwd.remote_port} ({exc}); the port may be held by a "
                      f"stale session or not allowed by PermitListen")
            self._status.set_forward(fwd.name, "refused", error=reason)
            log.warning("forward %s: %s", fwd.name, reason)
            if self._strict:
                self.failure = f"strict mode: forward {fwd.name} refused: {reason}"
            return False
        self._status.set_forward(fwd.name, "up")
        return True

    def _run(self) -> None:
        # The connect command (the cloud helper) takes ~0.2 s (sshd forks a shell for it). Normally the
        # forwards go first so traffic flows sooner; the helper then ends any stale session of ours, and
        # ports refused because of it are asked for again at once. In strict mode a refusal is final,
        # so the helper must clear stale sessions first.
        if self._strict and self._connect_command is not None:
            self._connect_command()
        pending = [f for f in self._forwards if not self._stop.is_set() and not self._request(f)]
        self.first_pass_done.set()
        retry_now = False
        if not self._strict and self._connect_command is not None:
            self._connect_command()
            retry_now = bool(pending)
        attempt = 0
        while pending and not self._strict and self._requests.transport.is_active():
            p = self._policy
            delay = 0.0 if retry_now else exp_delay(p.forward_retry, p.forward_retry_cap, attempt, p.jitter, self._rand)
            retry_now = False
            if self._stop.wait(delay):
                return
            attempt += 1
            still = []
            for fwd in pending:
                if self._stop.is_set() or not self._request(fwd):
                    still.append(fwd)
                else:
                    log.info("forward %s: up after %d retries", fwd.name, attempt)
            pending = still
