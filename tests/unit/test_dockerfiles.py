"""docker/Dockerfile, read as text (tests/integration/test_images.py builds and runs the images). What a build
depends on, and what the chart and the examples assume of the images, is checked for each target (`operator`,
`sidecar`): multi-stage, a slim Python 3.11 runtime by default, a numeric non-root user (the kubelet can only
verify `runAsNonRoot` for a numeric USER), nothing fetched with ADD, HOME and byte code kept off the read-only
root filesystem, the `modelmonitor` entrypoint with the right default subcommand, a build context that holds what
COPY needs, and the names and tags `make images` gives them matching the chart and the example.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelmonitor.cli import SUBCOMMANDS
from modelmonitor_sandbox.images.build import DOCKERFILE, image_names

ROOT = Path(__file__).resolve().parents[2]
# target -> its default subcommand
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


@dataclass
class Stage:
    name: str
    base: str  # an image, or the name of an earlier stage
    instructions: list[Instruction]


def stages(found: list[Instruction]) -> dict[str, Stage]:
    """The stages by name, in the file's order."""
    split: list[Stage] = []
    for instruction in found:
        if instruction.keyword == "FROM":
            base, *alias = re.split(r"\s+AS\s+", instruction.arguments, flags=re.I)
            name = alias[0] if alias else ""
            split.append(Stage(name=name or f"#{len(split)}", base=base, instructions=[]))
        if split:
            split[-1].instructions.append(instruction)
    return {stage.name: stage for stage in split}


DOCKER = instructions(ROOT / DOCKERFILE)
STAGES = stages(DOCKER)
ARGS = {i.arguments.split("=", 1)[0]: i.arguments.split("=", 1)[1] for i in DOCKER if i.keyword == "ARG"}


def image_instructions(target: str) -> list[Instruction]:
    """What makes the image of `target`: its stage after every stage it is built FROM, base first."""
    chain: list[Stage] = []
    name = target
    while name in STAGES:
        chain.insert(0, STAGES[name])
        name = STAGES[name].base
    return [i for stage in chain for i in stage.instructions]


def resolved(base: str) -> str:
    """A FROM argument with the file's ARG defaults substituted (ARG defaults may name each other)."""
    for _ in range(3):
        base = re.sub(r"\$\{(\w+)\}", lambda m: ARGS.get(m.group(1), ""), base)
    return base


@pytest.fixture(params=sorted(IMAGES), ids=str)
def image(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_each_image_is_a_target_and_a_plain_build_makes_the_operator(image: str) -> None:
    assert image in STAGES
    assert list(STAGES)[-1] == "operator"


def test_multi_stage_with_a_slim_python_311_runtime(image: str) -> None:
    found = image_instructions(image)
    images = [resolved(i.arguments.split()[0]) for i in found if i.keyword == "FROM"]
    assert images[0].startswith("python:3.11-slim"), images
    assert resolved(STAGES["builder"].base).startswith("python:3.11-slim")
    # The image takes the installed environment from the builder and builds nothing itself.
    assert any("--from=builder" in i.arguments for i in found if i.keyword == "COPY")
    assert not any(re.search(r"\bpip\b|\bbuild\b", i.arguments) for i in found if i.keyword == "RUN")


def test_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = [i.arguments for i in image_instructions(image) if i.keyword == "USER"]
    assert users, "the image sets no USER: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0), users[-1]


def test_nothing_is_fetched_from_the_network_by_add() -> None:
    for instruction in DOCKER:
        if instruction.keyword == "ADD":
            assert not re.search(r"(https?|git)://|git@", instruction.arguments), instruction.arguments


def test_a_read_only_root_filesystem_is_enough(image: str) -> None:
    found = image_instructions(image)
    env: dict[str, str] = {}
    for instruction in found:
        if instruction.keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", instruction.arguments)))
    assert env.get("HOME") == "/tmp"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env["PATH"].startswith("/opt/modelmonitor/bin:")
    assert [i.arguments for i in found if i.keyword == "WORKDIR"][-1] == "/tmp"


def test_entrypoint_and_default_command(image: str) -> None:
    found = image_instructions(image)
    entrypoint = json.loads([i.arguments for i in found if i.keyword == "ENTRYPOINT"][-1])
    command = json.loads([i.arguments for i in found if i.keyword == "CMD"][-1])
    assert entrypoint == ["modelmonitor"]
    assert command == [IMAGES[image]]
    assert command[0] in SUBCOMMANDS


def test_the_build_context_holds_what_copy_needs() -> None:
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

    for instruction in DOCKER:
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


def test_the_images_install_the_runtime_distribution_only() -> None:
    copied = [i.arguments for i in DOCKER if i.keyword == "COPY" and "--from" not in i.arguments]
    assert not any("sandbox" in arguments for arguments in copied), copied
    installs = [
        i.arguments for i in STAGES["builder"].instructions if i.keyword == "RUN" and "pip install" in i.arguments
    ]
    # The runtime dependencies are read from pyproject.toml's [project] table (no extras), then the package
    # itself from the copied sources (pyproject.toml, README.md, operator/) without its dependencies.
    assert any("['project']['dependencies']" in a and "pip install --requirement" in a for a in installs), installs
    assert any(re.search(r"pip install --no-deps \.(\s|$)", a) for a in installs), installs
    assert not any(re.search(r"\[\w+\]|modelmonitor-sandbox|optional-dependencies", a) for a in installs), installs


def test_the_chart_and_the_example_use_the_images_names_and_ports() -> None:
    exposed = {image: [i.arguments for i in image_instructions(image) if i.keyword == "EXPOSE"] for image in IMAGES}
    names = image_names(ROOT)
    values = (ROOT / "charts" / "modelmonitor" / "values.yaml").read_text()
    chart = (ROOT / "charts" / "modelmonitor" / "Chart.yaml").read_text()
    repository, _, tag = names["operator"].partition(":")
    assert exposed["operator"] == ["8080"] and f"repository: {repository}" in values
    assert f'appVersion: "{tag}"' in chart  # the chart's default tag is the tag `make images` gives
    assert re.search(r"^\s+port: 8080$", values, re.M)
    example = (ROOT / "examples" / "model-with-sidecar.yaml").read_text()
    assert exposed["sidecar"] == ["8081"] and "--listen=0.0.0.0:8081" in example
    assert f"image: {names['sidecar']}" in example
