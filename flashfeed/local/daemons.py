"""What the local servers flashfeed starts (dynalite, PostgreSQL, a Spark standalone cluster)
share: a process check, a port probe, a start/stop lock, a pid file written atomically, a stop
by PID that escalates to SIGKILL, and the tail of a log for error messages."""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_TAIL_LINES = 20
POLL_SECONDS = 0.1


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # exists, owned by someone else
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc: trust kill(0)
        return True
    return state not in ("Z", "X")


def port_in_use(host: str, port: int, timeout: float) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        if sock.connect_ex((host, port)) != 0:
            return False
        # Linux can "self-connect" when the probe's own ephemeral port is the target port.
        return sock.getsockname()[1] != port


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Serialises start/stop of one server's home, so two callers never start two servers."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(log is empty)"


def write_atomically(path: Path, text: str, mode: int | None = None) -> None:
    """Write `text` to `path` so that readers never see half of it (and, with `mode`, never see
    it with looser permissions)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    if mode is not None:
        tmp.chmod(mode)
    os.replace(tmp, path)


def stop_by_pid(pid: int, first_signal: int, grace_seconds: float, alive: Callable[[int], bool] = pid_alive) -> bool:
    """Send `first_signal` to `pid`, then SIGKILL if it still runs after `grace_seconds`; True once
    it is gone (`alive` may reap a child of ours), False if even SIGKILL did not end it in time."""
    for sig in (first_signal, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            alive(pid)
            return True
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not alive(pid):
                return True
            time.sleep(POLL_SECONDS)
    return False
