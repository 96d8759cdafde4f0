"""Bad conditions get a clear message and a clean state.

Each test uses its own cluster folder (and, where it breaks binaries, its own cache of links to the real ones),
so it never disturbs the sandbox the rest of the suite shares.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelmonitor_sandbox.devcluster import processes, versions
from modelmonitor_sandbox.devcluster.build import ensure_binaries
from modelmonitor_sandbox.devcluster.cluster import load_state
from modelmonitor_sandbox.devcluster.paths import cache_dir

pytestmark = pytest.mark.cluster


def _cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelmonitor", "cluster", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def own_dir(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose sandbox lives in a temporary folder; whatever it started is stopped afterwards."""
    ensure_binaries()  # the real cache must be complete before tests point at it
    env = {**os.environ, "MODELMONITOR_CLUSTER_DIR": str(tmp_path / "cluster")}
    yield env
    _cli(env, "down", timeout=60)
    assert processes.pids_mentioning(str(tmp_path / "cluster")) == []


def _assert_clean(env: dict[str, str]) -> None:
    root = env["MODELMONITOR_CLUSTER_DIR"]
    assert processes.pids_mentioning(root) == [], "processes of the failed start are still running"
    assert not Path(root).exists(), "the failed start left its cluster folder behind"


def test_a_requested_port_in_use_is_named_and_nothing_starts(own_dir: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli(own_dir, "up", f"--prometheus-port={port}")
    assert result.returncode == 1
    assert f"port {port} requested for prometheus is already in use" in result.stderr
    _assert_clean(own_dir)


def _linked_cache(tmp_path: Path) -> Path:
    """A cache whose binaries link to the real ones, so single binaries can be swapped for broken ones."""
    fake = tmp_path / "cache"
    for name, (folder, version) in versions.GO_COMPONENTS.items():
        target = fake / "bin" / f"{folder}-v{version}"
        target.mkdir(parents=True, exist_ok=True)
        (target / name).symlink_to(cache_dir() / "bin" / f"{folder}-v{version}" / name)
    stages = Path("bin") / f"kwok-v{versions.KWOK}" / "stages.yaml"
    (fake / stages).symlink_to(cache_dir() / stages)
    return fake


def _script(path: Path, body: str) -> None:
    path.unlink(missing_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_component_that_exits_during_start_is_named_with_its_log(own_dir: dict[str, str], tmp_path: Path) -> None:
    fake = _linked_cache(tmp_path)
    apiserver = fake / "bin" / f"kubernetes-v{versions.KUBERNETES}" / "kube-apiserver"
    _script(apiserver, 'echo "E0000 cannot load the serving certificate: broken on purpose" >&2\nexit 3\n')
    result = _cli({**own_dir, "MODELMONITOR_CACHE": str(fake)}, "up")
    assert result.returncode == 1
    assert "kube-apiserver exited with code 3" in result.stderr
    assert "broken on purpose" in result.stderr  # the log's last lines are shown
    _assert_clean(own_dir)  # etcd, started before it, is stopped again
    failed_logs = Path(own_dir["MODELMONITOR_CLUSTER_DIR"] + "-failed-logs")
    assert str(failed_logs / "kube-apiserver.log") in result.stderr  # the message points at the kept log
    assert "broken on purpose" in (failed_logs / "kube-apiserver.log").read_text()


def test_missing_go_is_reported_when_a_build_is_needed(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MODELMONITOR_CACHE": str(tmp_path / "empty-cache"),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not (Path(p) / "go").exists())
    result = _cli(env, "build")
    assert result.returncode == 1
    assert "Go is not installed" in result.stderr


def test_a_failed_build_shows_the_compiler_output(tmp_path: Path) -> None:
    fake_go = tmp_path / "fakego"
    fake_go.mkdir()
    _script(
        fake_go / "go",
        'case "$1 $2" in\n'
        '  "env GOVERSION") echo go1.26.8 ;;\n'
        '  *) echo "compile: undefined: something (broken toolchain on purpose)"; exit 1 ;;\n'
        "esac\n",
    )
    env = {
        **os.environ,
        "MODELMONITOR_CACHE": str(tmp_path / "empty-cache"),
        "PATH": f"{fake_go}:{os.environ['PATH']}",
    }
    result = _cli(env, "build")
    assert result.returncode == 1
    assert "broken toolchain on purpose" in result.stderr
    assert not any((tmp_path / "empty-cache" / "bin").rglob("kube-apiserver")), "a failed build left a binary"


def test_a_stale_sandbox_left_by_a_killed_run_is_cleaned_up_and_replaced(own_dir: dict[str, str]) -> None:
    first = _cli(own_dir, "up")
    assert first.returncode == 0, first.stderr
    root = Path(own_dir["MODELMONITOR_CLUSTER_DIR"])
    state = load_state(root)
    assert state is not None
    # Simulate a crash: the API server dies without `cluster down`.
    os.kill(state.pids["kube-apiserver"], signal.SIGKILL)
    second = _cli(own_dir, "up")
    assert second.returncode == 0, second.stderr
    assert "found a stale sandbox" in second.stderr
    new_state = load_state(root)
    assert new_state is not None and new_state.pids["kube-apiserver"] != state.pids["kube-apiserver"]
    for pid in state.pids.values():
        assert not processes.alive(pid), f"pid {pid} of the stale sandbox is still running"
    status = _cli(own_dir, "status")
    assert status.returncode == 0 and "STOPPED" not in status.stdout


def test_down_stops_everything_and_leaves_nothing_behind(own_dir: dict[str, str]) -> None:
    assert _cli(own_dir, "up").returncode == 0
    root = own_dir["MODELMONITOR_CLUSTER_DIR"]
    assert len(processes.pids_mentioning(root)) >= 7
    down = _cli(own_dir, "down")
    assert down.returncode == 0
    _assert_clean(own_dir)
    assert _cli(own_dir, "status").returncode == 1
