"""The shape every backing service shares: probe, start when local, wait, finish set-up."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from featurestore.errors import ServiceError
from featurestore.priority import lower_session_priority, program_nice
from featurestore.services import _proc
from featurestore.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    """What `ensure` or `status` found out about one backing service."""

    name: str
    address: str
    reachable: bool
    version: str | None = None
    started: bool = False
    pid: int | None = None


class ManagedService(ABC):
    """A backing service this project can probe, and start when its address is local."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- what each backend provides -------------------------------------------------
    @property
    @abstractmethod
    def address(self) -> str:
        """Human-readable address of the service, as configured."""

    @abstractmethod
    def is_local(self) -> bool:
        """True when the configured address is on this machine, so we may start it."""

    @abstractmethod
    def probe(self) -> str | None:
        """Version (or '' when unknown) if the service answers, None if it does not."""

    @abstractmethod
    def command(self) -> list[str]:
        """Command line that runs the service in the foreground."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Download what the service needs and write its config (idempotent)."""

    def after_ready(self) -> None:  # noqa: B027 - optional hook
        """Finish set-up once the service answers (topics, containers)."""

    def env(self) -> dict[str, str]:
        """Extra environment for the service process."""
        return {}

    def version_hint(self) -> str:
        """Version reported when the probe cannot read one."""
        return ""

    @property
    def start_timeout(self) -> float:
        """Seconds to wait for the service to answer after starting it."""
        return 60.0

    # -- shared behaviour ----------------------------------------------------------------
    @property
    def log_file(self) -> Path:
        """Log of the service process when this project started it."""
        return self.settings.logs_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        """Pid of the service process when this project started it."""
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def lock_file(self) -> Path:
        """Lock that serialises start-up across processes."""
        return self.settings.run_dir / f"{self.name}.lock"

    def status(self) -> ServiceStatus:
        """Probe the service without starting anything."""
        version = self.probe()
        return ServiceStatus(
            name=self.name,
            address=self.address,
            reachable=version is not None,
            version=None if version is None else version or self.version_hint() or None,
            pid=_proc.read_pid(self.pid_file),
        )

    def ensure(self) -> ServiceStatus:
        """Make sure the service answers: start it if it does not and it is local."""
        self.settings.ensure_dirs()
        with _proc.file_lock(self.lock_file):
            started = self._start_unless_answering(foreground=False) is not None
            self.after_ready()
        return dataclasses.replace(self.status(), started=started)

    def run_foreground(self, watch_interval: float = 5.0) -> int:
        """Entry point for supervisord: run the service as our child, or watch a running one.

        A service that already answers (started by another process, or external) is
        watched; when it stops answering this returns non-zero, so supervisord restarts
        us and we start it. Our own child gets SIGTERM forwarded and its status returned.
        """
        self.settings.ensure_dirs()
        with _proc.file_lock(self.lock_file):
            child = self._start_unless_answering(foreground=True)
            self.after_ready()
        if child is None:
            log.info("service_watch name=%s address=%s", self.name, self.address)
            while self.probe() is not None:
                time.sleep(watch_interval)
            log.error("service_lost name=%s address=%s", self.name, self.address)
            return 1

        def forward(signum: int, _frame: object) -> None:
            child.send_signal(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        code = child.wait()
        self.pid_file.unlink(missing_ok=True)
        log.info("service_exit name=%s code=%d", self.name, code)
        return code

    def _start_unless_answering(self, *, foreground: bool) -> subprocess.Popen[bytes] | None:
        """Under the lock: start the service unless it answers; return the new process."""
        if self.probe() is not None:
            return None
        if not self.is_local():
            raise ServiceError(
                f"{self.name} does not answer at {self.address}, and that address is "
                "not local, so it was not started"
            )
        began = time.monotonic()
        self.prepare()
        log.info("service_start name=%s address=%s", self.name, self.address)
        if foreground:
            proc = subprocess.Popen(self.command(), env={**os.environ, **self.env()})
            self.pid_file.write_text(f"{proc.pid}\n")
        else:
            proc = _proc.spawn_detached(self.command(), self.log_file, self.pid_file, self.env())
            nice = program_nice(self.settings, "service", self.name)
            if nice and lower_session_priority(proc.pid, nice):
                log.info(
                    "service_priority name=%s pid=%d session_nice=%d", self.name, proc.pid, nice
                )
        _proc.wait_until(
            lambda: self.probe() is not None,
            what=f"{self.name} at {self.address}",
            timeout=self.start_timeout,
            log_file=self.log_file,
            proc=proc,
        )
        log.info(
            "service_ready name=%s pid=%d seconds=%.1f",
            self.name,
            proc.pid,
            time.monotonic() - began,
        )
        return proc

    def stop(self) -> bool:
        """Stop the service if this project started it; True when something was stopped."""
        pid = _proc.read_pid(self.pid_file)
        if pid is None:
            return False
        log.info("service_stop name=%s pid=%d", self.name, pid)
        _proc.terminate(pid)
        self.pid_file.unlink(missing_ok=True)
        return True
