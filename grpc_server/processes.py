"""Several gRPC server processes on one port (settings.grpc_processes), as one group.

Python's gRPC server is bound by the GIL to about one core; several processes, each with a
server bound with SO_REUSEPORT, share the port's connections. SO_REUSEPORT also lets a
stale server take a share silently, so a group of two or more keeps this guarantee by
other means (a single process binds without SO_REUSEPORT, and the bind refuses a second):

- The first process takes an exclusive, non-blocking flock on `<run_dir>/grpc-<port>.lock`
  and never closes it. The children inherit the open file, so the lock is held while any
  process of the group lives: a second server, or a new group while stale children of an
  old one still serve, fails to start with an error naming the port and the holder.
- Before forking, a bind of the port without SO_REUSEPORT checks that nothing else (a
  server of another state folder, or anything) listens there.
- The children are forked before any thread, gRPC object or client exists (gRPC's own
  multiprocessing example does the same) and each builds all of its own. A child gets
  SIGTERM when the parent dies (PR_SET_PDEATHSIG); the parent forwards SIGTERM and SIGINT,
  and when a child dies on its own it stops the others and exits non-zero, so that
  supervisord restarts the whole group.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from featurestore.errors import ConfigError
from featurestore.settings import Settings

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
CHILD_STOP_WAIT_S = 30.0


class PortTakenError(ConfigError):
    """The gRPC port is held by another server (group)."""


def lock_path(settings: Settings) -> Path:
    """The lock file of the gRPC port in this state folder."""
    return settings.run_dir / f"grpc-{settings.grpc_port}.lock"


def lock_port(settings: Settings) -> IO[str]:
    """Take the port's lock for this process and its future children (kept open: closing
    the returned file, or the death of every holder, releases it)."""
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise PortTakenError(
            f"gRPC port {settings.grpc_port} is held by a running server group "
            f"(lock {path}, first process pid {holder}); stop it before starting another"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_port_free(settings: Settings) -> None:
    """Bind the port without SO_REUSEPORT and let it go: fails when anything listens there,
    whichever state folder or program it belongs to."""
    host = settings.grpc_host.strip("[]") or None
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, settings.grpc_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortTakenError(
                f"gRPC port {settings.grpc_port} is already in use by another process"
            ) from None


def process_settings(settings: Settings, index: int) -> Settings:
    """The settings of the group's process `index`: its own metrics port."""
    if settings.grpc_processes == 1:
        return settings
    return settings.model_copy(update={"metrics_port_grpc": settings.metrics_ports_grpc[index]})


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def run_group(settings: Settings, serve: Callable[[int], None]) -> int:
    """Serve with settings.grpc_processes processes: serve(index) runs in each, until it
    returns; this process's exit code (0 after a requested stop)."""
    count = settings.grpc_processes
    if count == 1:
        # Without SO_REUSEPORT the bind itself refuses a second server; port 0 (tests) is
        # a port of its own each time.
        serve(0)
        return 0
    if settings.grpc_port == 0:
        raise ConfigError("grpc_processes > 1 needs a fixed grpc_port, not 0")
    lock = lock_port(settings)
    check_port_free(settings)
    parent = os.getpid()
    children: dict[int, int] = {}
    for index in range(count):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(parent, index, serve)
        children[pid] = index
    log.info("grpc_group_start processes=%d pids=%s", count, ",".join(map(str, children)))
    return _supervise(children, lock)


def _child(parent: int, index: int, serve: Callable[[int], None]) -> None:
    code = 0
    try:
        _die_with_parent(parent)
        serve(index)
    except BaseException:
        log.exception("grpc_process_failed index=%d", index)
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _supervise(children: dict[int, int], lock: IO[str]) -> int:
    """Wait for the children; forward stop signals; one child's death stops the group."""
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _signal(pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code = 0
    while children:
        pid, status = os.wait()
        index = children.pop(pid, None)
        if index is None:
            continue
        exit_code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        log.error("grpc_process_exited index=%d pid=%d code=%d", index, pid, exit_code)
        code = 1
        stopping = True
        for other in children:
            _signal(other, signal.SIGTERM)
        _reap(children)
    lock.close()
    log.info("grpc_group_stop code=%d", code)
    return code


def _reap(children: dict[int, int]) -> None:
    """Wait for the signalled children, killing those still alive after CHILD_STOP_WAIT_S."""
    deadline = time.monotonic() + CHILD_STOP_WAIT_S
    while children and time.monotonic() < deadline:
        pid, _status = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.05)
    for pid in list(children):
        _signal(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        children.pop(pid)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
