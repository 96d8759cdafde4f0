"""Starting, watching and stopping the sandbox's server processes.

Every component runs in its own session (process group) with its output in one log file, so `cluster down` can
stop it and everything it spawned, and an error can quote the last lines of the log of whatever failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


class SandboxError(RuntimeError):
    """Something in the sandbox went wrong; the message says what, and where to look."""


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text[-lines:]) or "(log is empty)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start(name: str, argv: Sequence[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start one component detached from this process (it outlives `cluster up`), logging to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        sink.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        sink.flush()
        try:
            return subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"could not start {name} ({argv[0]}): {exc}") from exc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by us) is not alive.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, PermissionError):
        return ""


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def pids_mentioning(marker: str) -> list[int]:
    """Processes whose command line mentions `marker` (the cluster folder): finds leftovers of a killed run."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and marker in cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def stop(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap our own child so it does not linger as a zombie
            if not alive(pid):
                return
            time.sleep(0.1)


def http_ok(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    watched: dict[str, tuple[subprocess.Popen[bytes] | int, Path]],
    interval: float = 0.25,
) -> float:
    """Poll `ready` until true; fail at once, with the log's last lines, when a watched process exits.

    Returns the seconds it took.
    """
    started = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - started
        for name, (proc, log) in watched.items():
            pid = proc if isinstance(proc, int) else proc.pid
            exited = proc.poll() is not None if not isinstance(proc, int) else not alive(pid)
            if exited:
                code = "" if isinstance(proc, int) else f" with code {proc.returncode}"
                raise SandboxError(
                    f"{name} exited{code} while waiting for {what}. Last lines of {log}:\n{log_tail(log)}"
                )
        if time.monotonic() - started > timeout:
            logs = "\n".join(f"  {name}: {log}" for name, (_, log) in watched.items())
            raise SandboxError(f"timed out after {timeout:.0f} s waiting for {what}. Logs:\n{logs}")
        time.sleep(interval)
