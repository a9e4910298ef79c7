"""Child processes owned by a parent: started in their own process group, stopped as a group.

``litellm-cloud dev`` and the tests both run real programs (the proxy, the simulator, the key backend);
``ManagedProcess`` is how: start, wait until ready (failing fast with the log's tail if the child dies),
and stop the whole group so nothing outlives its parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

_PR_SET_PDEATHSIG = 1
# Resolved here, so the forked child only calls it; None off Linux (no parent-death signal there).
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _term_on_parent_death() -> None:
    """In the forked child: ask the kernel for SIGTERM when the parent goes."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class StartCancelled(Exception):
    """``ManagedProcess.start`` gave up because its ``cancel`` callable said so."""


class ManagedProcess:
    """One child process in its own process group, with its output in a log file.

    ``ready`` is a predicate polled after start; the process dying first fails the start with the tail
    of its log, so a broken config says why instead of timing out.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 60.0,
        die_with_parent: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd or Path.cwd()
        self.ready = ready
        self.ready_timeout = ready_timeout
        # Linux's parent-death signal: the child gets SIGTERM if the thread that started it dies, even
        # by SIGKILL. Only for children started from a long-lived (main) thread, such as ``dev``'s.
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cancel: Callable[[], bool] | None = None) -> Self:
        """Start the child and wait until it is ready; on any failure (or ``cancel()`` turning true
        while waiting) the child is stopped before the error is raised, so nothing is left behind."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            # Safe here: the child runs one libc call, no Python import or lock, before exec.
            preexec_fn=_term_on_parent_death if self.die_with_parent else None,  # noqa: PLW1509
        )
        log.close()
        if self.ready is None:
            return self
        deadline = time.monotonic() + self.ready_timeout
        try:
            while not self.ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                if cancel is not None and cancel():
                    raise StartCancelled(f"{self.name}: start cancelled")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready in {self.ready_timeout}s:\n{self.log_tail()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group."""
        if self.alive():
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the group, SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        else:
            # The leader is gone; make sure no child of it is left behind.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the group at once (a crash, not a shutdown)."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
