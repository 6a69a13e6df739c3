"""The benchmark stack's programs lowered for a bench.serve_tail variant (`stacknice=<n>`,
`stackidle`), thread by thread and session by session, and put back."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from featurestore.priority import lower_session_priority
from featurestore.settings import Settings


def stack_nice(variant: str) -> int:
    """The niceness a `stacknice=<n>` part of the variant asks for, else 0."""
    for part in variant.split("+"):
        if part.startswith("stacknice="):
            return int(part.split("=", 1)[1])
    return 0


def stack_policy(variant: str) -> int:
    """SCHED_IDLE for a variant with a `stackidle` part, else SCHED_OTHER."""
    return os.SCHED_IDLE if "stackidle" in variant.split("+") else os.SCHED_OTHER


def _autogroup(pid: int) -> str | None:
    """The name of the process's autogroup ("/autogroup-12"), None without one."""
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().split()[0]
    except (OSError, IndexError):
        return None


def renice_stack(
    settings: Settings, nice: int, spare: set[int], policy: int = os.SCHED_OTHER
) -> int:
    """Set every thread of the stack's processes but Redis and `spare` to `nice` (and the
    scheduling `policy`); the count. Linux keeps both per thread, so a running process is
    changed thread by thread."""
    state = settings.state_dir.resolve()
    count = 0
    # Linux weighs each session's autogroup as one before the niceness of its threads: a
    # thread's niceness orders it only within its session. The stack's sessions (the
    # supervisord group, each detached service) get `nice` too, but not `spare`'s or Redis's.
    procs = list(psutil.process_iter(["pid", "name"]))
    untouched = spare | {p.pid for p in procs if "redis" in (p.info["name"] or "")}
    kept = {_autogroup(pid) for pid in untouched}
    for proc in procs:
        try:
            if proc.pid in untouched:
                continue
            mine = proc.environ().get("FSTORE_STATE_DIR")
            if mine is None or Path(mine).resolve() != state:
                continue
            if _autogroup(proc.pid) not in kept:
                lower_session_priority(proc.pid, nice)
            for thread in proc.threads():
                os.sched_setscheduler(thread.id, policy, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, thread.id, nice)
                count += 1
        except (psutil.Error, OSError):
            continue
    return count
