"""One writer per run directory: an exclusive lock (the ``filelock`` library) taken before anything is
written, so two processes started on the same ``out_dir`` never both proceed.

The lock file ``<run>/.lock`` is held by the operating system (released when the process dies, even by
SIGKILL); ``<run>/.lock.json`` names the holder (PID, host, start time) for the error the second process
gets. Stale temporary files of a killed atomic write (``.<name>.*.tmp``) are removed once the lock is held.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

__all__ = ["RunLockedError", "RunLock"]


class RunLockedError(RuntimeError):
    """Another process holds the run directory."""


class RunLock:
    """``with RunLock(out_dir): ...`` — exclusive use of ``out_dir`` (created if needed)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir)
        self._lock: FileLock | None = None

    def __enter__(self) -> RunLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.dir / ".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunLockedError(f"{self.dir} is in use by another process ({self.holder()}); wait for it to "
                                 "finish or choose another out_dir") from None
        self._lock = lock
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (self.dir / ".lock.json").write_text(json.dumps(info))
        for tmp in self.dir.glob(".*.tmp"):  # left by a write killed midway; we hold the directory now
            tmp.unlink(missing_ok=True)
        return self

    def holder(self) -> str:
        try:
            info: dict[str, Any] = json.loads((self.dir / ".lock.json").read_text())
            return f"PID {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None:
            (self.dir / ".lock.json").unlink(missing_ok=True)
            self._lock.release()
            self._lock = None
