"""The Dockerfiles, read as text: there is no container engine here, so the images are never built by these
tests. What a build would depend on, and what the chart and the examples assume of the images, is checked:
multi-stage, a slim Python 3.11 runtime, a numeric non-root user (the kubelet can only verify `runAsNonRoot`
for a numeric USER), nothing fetched with ADD, HOME and byte code kept off the read-only root filesystem, the
`modelmonitor` entrypoint with the right default subcommand, and a build context that holds what COPY needs.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelmonitor.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"operator": "run", "sidecar": "sidecar"}


@dataclass
class Instruction:
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, continuation lines joined."""
    logical: list[str] = []
    current = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current = f"{current} {stripped}" if current else stripped
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        logical.append(current)
        current = ""
    assert not current, f"{path}: the last instruction ends with a line continuation"
    result = []
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
    return result


def stages(found: list[Instruction]) -> list[list[Instruction]]:
    split: list[list[Instruction]] = []
    for instruction in found:
        if instruction.keyword == "FROM":
            split.append([])
        if split:
            split[-1].append(instruction)
    return split


@pytest.fixture(params=sorted(IMAGES), ids=str)
def image(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def dockerfile(image: str) -> Path:
    return ROOT / "docker" / f"Dockerfile.{image}"


def test_multi_stage_with_a_slim_python_311_runtime(image: str) -> None:
    found = instructions(dockerfile(image))
    args = {i.arguments.split("=", 1)[0]: i.arguments.split("=", 1)[1] for i in found if i.keyword == "ARG"}
    built = stages(found)
    assert len(built) >= 2, "expected a builder stage and a runtime stage"
    names = [re.split(r"\s+AS\s+", s[0].arguments, flags=re.I) for s in built]
    bases = [n[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")) for n in names]
    assert all(b.startswith("python:3.11-slim") for b in bases), bases
    builder = names[0][1]
    runtime = built[-1]
    # The runtime stage takes the wheels from the builder and builds nothing itself.
    assert any(f"from={builder}" in i.arguments for i in runtime if i.keyword in ("RUN", "COPY"))
    assert not any("pip wheel" in i.arguments or "build" in i.arguments.split() for i in runtime if i.keyword == "RUN")


def test_runs_as_a_numeric_non_root_user(image: str) -> None:
    runtime = stages(instructions(dockerfile(image)))[-1]
    users = [i.arguments for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage sets no USER: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0), users[-1]


def test_nothing_is_fetched_from_the_network_by_add(image: str) -> None:
    for instruction in instructions(dockerfile(image)):
        if instruction.keyword == "ADD":
            assert not re.search(r"(https?|git)://|git@", instruction.arguments), instruction.arguments


def test_a_read_only_root_filesystem_is_enough(image: str) -> None:
    runtime = stages(instructions(dockerfile(image)))[-1]
    env: dict[str, str] = {}
    for instruction in runtime:
        if instruction.keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", instruction.arguments)))
    assert env.get("HOME") == "/tmp"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert [i.arguments for i in runtime if i.keyword == "WORKDIR"][-1] == "/tmp"


def test_entrypoint_and_default_command(image: str) -> None:
    runtime = stages(instructions(dockerfile(image)))[-1]
    entrypoint = json.loads([i.arguments for i in runtime if i.keyword == "ENTRYPOINT"][-1])
    command = json.loads([i.arguments for i in runtime if i.keyword == "CMD"][-1])
    assert entrypoint == ["modelmonitor"]
    assert command == [IMAGES[image]]
    assert command[0] in SUBCOMMANDS


def test_the_build_context_holds_what_copy_needs(image: str) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(relative: str) -> bool:
        # Docker's rule: the last matching pattern wins; "!" re-includes. A folder's pattern covers its files.
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(relative, bare) or relative.startswith(bare + "/"):
                verdict = not negate
        return verdict

    for instruction in instructions(dockerfile(image)):
        if instruction.keyword != "COPY" or "--from" in instruction.arguments:
            continue
        *sources, _destination = instruction.arguments.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            assert not ignored(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
    assert not ignored("operator/modelmonitor/cli.py")
    assert ignored(".venv/bin/python") and ignored(".git/HEAD") and ignored("tests/conftest.py")
    # The development tooling is a distribution of its own (sandbox/): no image can copy it in.
    assert ignored("sandbox/pyproject.toml") and ignored("sandbox/modelmonitor_sandbox/devcluster/pki.py")


def test_the_images_install_the_runtime_distribution_only(image: str) -> None:
    found = instructions(dockerfile(image))
    copied = [i.arguments for i in found if i.keyword == "COPY" and "--from" not in i.arguments]
    assert not any("sandbox" in arguments for arguments in copied), copied
    installs = [i.arguments for i in found if i.keyword == "RUN" and "pip install" in i.arguments]
    assert installs and all(re.search(r"pip install .* modelmonitor(\s|$)", a) for a in installs), installs
    assert not any(re.search(r"modelmonitor\[|modelmonitor-sandbox", a) for a in installs), installs


def test_the_chart_and_the_example_use_the_images_ports() -> None:
    exposed = {
        image: [i.arguments for i in stages(instructions(dockerfile(image)))[-1] if i.keyword == "EXPOSE"]
        for image in IMAGES
    }
    values = (ROOT / "charts" / "modelmonitor" / "values.yaml").read_text()
    assert exposed["operator"] == ["8080"] and "repository: modelmonitor/operator" in values
    assert re.search(r"^\s+port: 8080$", values, re.M)
    example = (ROOT / "examples" / "model-with-sidecar.yaml").read_text()
    assert exposed["sidecar"] == ["8081"] and "--listen=0.0.0.0:8081" in example
