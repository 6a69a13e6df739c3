"""Process and network helpers shared by the service start-up functions."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from featurestore.errors import ConfigError, ServiceStartError, ToolMissingError


def require_program(name: str, why: str) -> str:
    """Full path of a program on PATH, or ToolMissingError saying why it is needed."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f"{name} not found on PATH: {why} (`make setup` installs it)")
    return path


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split 'host:port', '[v6]:port', or a bare host into (host, port)."""
    address = address.strip()
    if not address:
        raise ConfigError("empty address")
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep:
            raise ConfigError(f"malformed IPv6 address {address!r}: missing ']'")
        port_text = rest.removeprefix(":")
    elif address.count(":") > 1:  # bare IPv6 without brackets, no port
        host, port_text = address, ""
    else:
        host, _, port_text = address.partition(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(f"malformed port in address {address!r}") from None
    return host, port


def format_host_port(host: str, port: int) -> str:
    """Inverse of split_host_port: brackets around IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to, IPv6 and IPv4, without duplicates, in resolver order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def is_loopback(host: str) -> bool:
    """True when the host is 'localhost' or resolves only to loopback addresses."""
    if host == "localhost":
        return True
    addresses = resolve(host, 0)
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def first_answering(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Try a TCP connect to every address of host; return the first that answers."""
    for ip in resolve(host, port):
        with contextlib.suppress(OSError), socket.create_connection((ip, port), timeout=timeout):
            return ip
    return None


def listener_cmdline(port: int) -> list[str]:
    """Command line of the local process listening on this TCP port (empty if unknown)."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            address = conn.laddr
            if not isinstance(address, tuple) or len(address) < 2:
                continue
            if conn.status == psutil.CONN_LISTEN and address[1] == port and conn.pid:
                return psutil.Process(conn.pid).cmdline()
    return []


def ipv6_loopback_available() -> bool:
    """True when this machine can bind ::1 (some containers have no IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes, held for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_pid(pid_file: Path) -> int | None:
    """The pid stored in pid_file when that process is still alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def spawn_detached(
    argv: list[str], log_file: Path, pid_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start argv in its own session, output appended to log_file, pid written to pid_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log_file: Path,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll ready() until it is true; raise ServiceStartError naming the log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            raise ServiceStartError(
                f"{what} exited with status {proc.returncode} during start-up; "
                f"see {log_file}:\n{tail(log_file)}"
            )
        time.sleep(interval)
    raise ServiceStartError(
        f"{what} did not become ready within {timeout:.0f}s; see {log_file}:\n{tail(log_file)}"
    )


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def terminate(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the process (group when it leads one), then SIGKILL after timeout."""
    leads_group = _leads_group(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            if leads_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.1)
