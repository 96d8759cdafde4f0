"""Build the operator and sidecar images with podman: no Docker daemon.

Both come from docker/Dockerfile (targets `operator` and `sidecar`, which share every layer) and are tagged
``modelmonitor/operator:<version>`` and ``modelmonitor/sidecar:<version>`` with the version of pyproject.toml.
The base is python:3.11-slim when it can be pulled; otherwise (no registry reachable, as on the machines this
project is developed on) two bases are bootstrapped from Debian's own packages with mmdebstrap: python3 (and
libstdc++6) for the runtime, python3 and python3-venv for the builder. Their root filesystems are cached as
tarballs in ``~/.cache/modelmonitor/images`` (``MODELMONITOR_CACHE``), named by a hash of what went into them,
and imported into podman's storage when missing, so a rebuild pays only for the layers whose inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from modelmonitor_sandbox.devcluster.build import BuildError, Progress, _debian_binary, _run_logged
from modelmonitor_sandbox.devcluster.paths import cache_dir

# image target in docker/Dockerfile -> repository
IMAGES: dict[str, str] = {"operator": "modelmonitor/operator", "sidecar": "modelmonitor/sidecar"}
DOCKERFILE = Path("docker") / "Dockerfile"
UPSTREAM_BASE = "docker.io/library/python:3.11-slim-bookworm"
# On these machines the default limits of podman's containers are above what the kernel grants.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
# crun, podman's default OCI runtime on Debian 12, refuses hosts whose cgroups are in hybrid mode (v1 hierarchies
# beside a v2 one holding a controller), as these machines' are; runc runs containers on both.
OCI_RUNTIME = "runc"
# A PEM bundle trusted for PyPI inside the build (passed as a build secret, never stored in an image).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

SUITE = "bookworm"  # Debian 12: Python 3.11, what pyproject.toml requires
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
# Documentation, manual pages and translations are left out of the bases; the licences stay.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
# The Essential packages (no apt: nothing is installed in the images later) and what the listed packages depend
# on, not what they recommend; /usr merged with symlinks, as Debian 12 has it, without the usrmerge package and
# the perl it needs. This halves a base's size.
VARIANT = "essential"
APT_OPTIONS = ('APT::Install-Recommends "false"',)
HOOK_DIRS = ("/usr/share/mmdebstrap/hooks/merged-usr",)
# base -> Debian packages on top of the minimal (essential + apt) system
BASE_PACKAGES: dict[str, tuple[str, ...]] = {
    # libstdc++6: numpy's and scipy's wheels (manylinux) expect it from the system, as python:3.11-slim has it.
    "runtime": ("python3", "libstdc++6", "ca-certificates"),
    "builder": ("python3", "python3-venv", "ca-certificates"),
}
# An imported root filesystem carries no image configuration: the usual PATH, and python3 as its command.
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD ["python3"]',
)


def _stderr_progress(message: str) -> None:
    print(f"[modelmonitor images] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Bases:
    """The images the Dockerfile's stages start from, and where they came from."""

    runtime: str
    builder: str
    origin: str  # "python:3.11-slim" or "mmdebstrap"


@dataclass(frozen=True)
class Image:
    """One built image: its name with tag, id, and size in podman's storage (uncompressed, base included)."""

    name: str
    id: str
    size_bytes: int


def podman_command(*args: str) -> list[str]:
    """A podman command line with the OCI runtime the images are built and run with."""
    return ["podman", "--runtime", OCI_RUNTIME, *args]


def install_podman(progress: Progress = _stderr_progress) -> None:
    """podman and runc, installed from Debian when missing (as root), like the sandbox's Prometheus."""
    _debian_binary("podman", "podman", progress)
    _debian_binary(OCI_RUNTIME, OCI_RUNTIME, progress)


def podman_problem() -> str | None:
    """Why podman cannot build or run containers on this machine, or None when it can."""
    for name in ("podman", OCI_RUNTIME):
        if shutil.which(name) is None:
            return f"{name} is not installed (Debian package {name}; `make images` installs it as root)"
    info = _podman("info", "--format", "json", timeout=120)
    if info.returncode != 0:
        return f"`podman info` failed: {info.stderr.strip()[-500:]}"
    return None


def _podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(podman_command(*args), capture_output=True, text=True, timeout=timeout, check=False)


def image_exists(name: str) -> bool:
    return _podman("image", "exists", name).returncode == 0


def version(context: Path) -> str:
    """The runtime distribution's version: the images' tag."""
    with (context / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def image_names(context: Path) -> dict[str, str]:
    """target -> the name and tag `make images` gives it (the chart's image.repository and appVersion)."""
    tag = version(context)
    return {target: f"{repository}:{tag}" for target, repository in IMAGES.items()}


def _pulled_base(progress: Progress) -> str | None:
    if image_exists(UPSTREAM_BASE):
        return UPSTREAM_BASE
    progress(f"pulling {UPSTREAM_BASE}")
    pulled = _podman("pull", "--quiet", UPSTREAM_BASE, timeout=300)
    if pulled.returncode == 0:
        return UPSTREAM_BASE
    reason = pulled.stderr.strip().splitlines()[-1] if pulled.stderr.strip() else f"exit {pulled.returncode}"
    progress(f"cannot pull {UPSTREAM_BASE} ({reason}); using bases bootstrapped from Debian's packages")
    return None


def debian_base(kind: str, progress: Progress = _stderr_progress) -> str:
    """The `kind` base ("runtime" or "builder") bootstrapped with mmdebstrap, cached and imported into podman."""
    packages = BASE_PACKAGES[kind]
    recipe = json.dumps(
        {
            "suite": SUITE,
            "variant": VARIANT,
            "mirrors": MIRRORS,
            "apt": APT_OPTIONS,
            "hooks": HOOK_DIRS,
            "dpkg": DPKG_OPTIONS,
            "packages": packages,
        }
    )
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    name = f"localhost/modelmonitor/python-base:{SUITE}-{kind}-{key}"
    if image_exists(name):
        return name
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / f"python-base-{SUITE}-{kind}-{key}.tar"
    log = folder / "mmdebstrap.log"
    if not tarball.exists():
        mmdebstrap = _debian_binary("mmdebstrap", "mmdebstrap", progress)
        partial = tarball.with_suffix(".tar.partial")
        partial.unlink(missing_ok=True)
        _run_logged(
            [
                str(mmdebstrap),
                f"--variant={VARIANT}",
                *(f"--aptopt={option}" for option in APT_OPTIONS),
                *(f"--hook-dir={directory}" for directory in HOOK_DIRS),
                f"--include={','.join(packages)}",
                *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
                "--format=tar",
                SUITE,
                str(partial),
                *MIRRORS,
            ],
            cwd=folder,
            log=log,
            what=f"mmdebstrap: the {kind} base ({', '.join(packages)})",
            progress=progress,
        )
        partial.replace(tarball)  # only a complete root filesystem is ever cached
        for stale in folder.glob(f"python-base-{SUITE}-{kind}-*.tar"):
            if stale != tarball:  # a base of an earlier recipe: never used again
                stale.unlink()
    progress(f"importing {tarball.name} as {name}")
    changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
    imported = _podman("import", *changes, str(tarball), name)
    if imported.returncode != 0:
        raise BuildError(f"podman import {tarball} failed: {imported.stderr.strip()}")
    return name


def ensure_bases(progress: Progress = _stderr_progress, use_upstream: bool = True) -> Bases:
    """python:3.11-slim when it can be pulled (and `use_upstream`), else the cached Debian bases."""
    pulled = _pulled_base(progress) if use_upstream else None
    if pulled is not None:
        return Bases(runtime=pulled, builder=pulled, origin="python:3.11-slim")
    # Both bootstraps mostly wait on downloads and dpkg: side by side they take little longer than one. The
    # tool is installed first, so the two never run apt-get at the same time.
    _debian_binary("mmdebstrap", "mmdebstrap", progress)
    with ThreadPoolExecutor(max_workers=2) as pool:
        runtime, builder = pool.map(lambda kind: debian_base(kind, progress), ("runtime", "builder"))
    return Bases(runtime=runtime, builder=builder, origin="mmdebstrap")


def inspect(name: str) -> Image:
    found = _podman("image", "inspect", "--format", "{{.Id}} {{.Size}}", name)
    if found.returncode != 0:
        raise BuildError(f"no image {name}: {found.stderr.strip()}")
    image_id, size = found.stdout.split()
    return Image(name=name, id=image_id, size_bytes=int(size))


def build(context: Path, progress: Progress = _stderr_progress, use_upstream: bool = True) -> list[Image]:
    """Build both images from `context` (the repository root) and return them; unchanged layers are reused."""
    dockerfile = context / DOCKERFILE
    if not dockerfile.exists():
        raise BuildError(f"{dockerfile} not found: run from the repository root (or pass --context)")
    install_podman(progress)
    problem = podman_problem()
    if problem:
        raise BuildError(problem)
    bases = ensure_bases(progress, use_upstream)
    progress(f"bases ({bases.origin}): runtime {bases.runtime}, builder {bases.builder}")
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    secret = os.environ.get("PIP_CERT") or (str(CA_BUNDLE) if CA_BUNDLE.exists() else "")
    built: list[Image] = []
    for target, name in image_names(context).items():
        started = time.monotonic()
        command = podman_command("build", "--file", str(dockerfile), "--target", target, "--tag", name)
        command += ["--pull=never", "--layers", *ULIMITS]
        command += ["--build-arg", f"PYTHON_IMAGE={bases.runtime}", "--build-arg", f"BUILDER_IMAGE={bases.builder}"]
        if secret:
            command += ["--secret", f"id=ca-certificates,src={secret}"]
        _run_logged(
            [*command, str(context)],
            cwd=context,
            log=folder / f"build-{target}.log",
            what=f"podman build --target {target}",
            progress=progress,
        )
        image = inspect(name)
        progress(f"{name}: {image.size_bytes / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s")
        built.append(image)
    return built
