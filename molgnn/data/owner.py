"""Which process owns a run, and whether it is still alive: how a killed run is told from a running one.

A pid alone is not enough (pids are reused), so an owner is (host, pid, the process's start time).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: float    # the process's start time (seconds since the epoch), as psutil reports it

    @classmethod
    def current(cls) -> "Owner":
        pid = os.getpid()
        return cls(socket.gethostname(), pid, round(psutil.Process(pid).create_time(), 2))

    def to_tags(self) -> dict[str, str]:
        return {"molgnn.host": self.host, "molgnn.pid": str(self.pid), "molgnn.pid_started": f"{self.started:.2f}"}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "Owner | None":
        try:
            return cls(tags["molgnn.host"], int(tags["molgnn.pid"]), float(tags["molgnn.pid_started"]))
        except (KeyError, ValueError):
            return None

    def is_dead(self) -> bool:
        """True only when this host can tell: the process is gone or its pid now names another one.
        An owner on another host is never declared dead."""
        if self.host != socket.gethostname():
            return False
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
            return abs(proc.create_time() - self.started) > 0.05
        except psutil.NoSuchProcess:
            return True
