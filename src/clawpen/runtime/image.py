"""Build the agent image (``image/Dockerfile``) with the Docker Engine API.

The base is ``python:3.11-slim`` when a registry can provide it. Without registry access the
base is made locally: debootstrap a minimal Debian bookworm with python3 and import it as
``clawpen-base:bookworm``, once; later builds reuse it. The build context is assembled in a
temp dir with fixed modes and mtimes so an unchanged tree rebuilds from the layer cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import docker
import docker.errors

from clawpen.errors import DockerUnavailable, ImageBuildError

DEFAULT_TAG = "clawpen-agent:latest"
BASE_TAG = "clawpen-base:bookworm"
PYTHON_BASE = "python:3.11-slim"
PULL_TIMEOUT = 15.0  # seconds; a registry that is slow to answer must not stall "auto"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# An imported rootfs has no image config; give it what python:slim has that we rely on.
_BASE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]

Progress = Callable[[str], None]
_DOCKER_ERRORS = (docker.errors.DockerException, OSError)  # requests' errors are OSErrors


def _unreachable(error: BaseException) -> DockerUnavailable:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return DockerUnavailable(
        f"cannot reach the Docker engine at {where} ({error})",
        "start it: dockerd & (or scripts/ensure-docker.sh)",
    )


def image_exists(client: docker.DockerClient, tag: str = DEFAULT_TAG) -> bool:
    """Whether ``tag`` is in the local image store (never pulls)."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    except _DOCKER_ERRORS as error:
        raise _unreachable(error) from error
    return True


def build_agent_image(
    client: docker.DockerClient,
    *,
    tag: str = DEFAULT_TAG,
    base: str = "auto",
    progress: Progress = print,
    repo_root: Path | None = None,
) -> str:
    """Build the agent image as ``tag`` and return its id.

    ``base`` is "auto" (python:3.11-slim if local or pullable, else the debootstrap base),
    "debootstrap" (always the local base) or an image reference to build on.
    """
    try:
        client.ping()
    except _DOCKER_ERRORS as error:
        raise _unreachable(error) from error
    root = repo_root or Path(__file__).resolve().parents[3]
    base_ref = _resolve_base(client, base, progress)
    previous = client.images.get(tag).id if image_exists(client, tag) else None
    with tempfile.TemporaryDirectory(prefix="clawpen-context-") as tmp:
        context = Path(tmp)
        _assemble_context(context, root, progress)
        progress(f"building {tag} on {base_ref}")
        image_id = _build(client, context, tag, base_ref, progress)
    if previous and previous != image_id:
        # the old image is untagged now; drop it unless a running agent still uses it
        with suppress(*_DOCKER_ERRORS):
            client.images.remove(previous)
            progress(f"removed the previous {tag} ({previous[:19]})")
    return image_id


def _resolve_base(client: docker.DockerClient, base: str, progress: Progress) -> str:
    if base == "debootstrap":
        return _debootstrap_base(client, progress)
    if base != "auto":
        return base
    if image_exists(client, PYTHON_BASE) or _pull(client, PYTHON_BASE, progress):
        return PYTHON_BASE
    progress(f"{PYTHON_BASE} cannot be pulled; using the local Debian base {BASE_TAG}")
    return _debootstrap_base(client, progress)


def _pull(client: docker.DockerClient, ref: str, progress: Progress) -> bool:
    """Try to pull ``ref``, giving up after PULL_TIMEOUT (a pull cannot be cancelled)."""
    progress(f"pulling {ref} (up to {PULL_TIMEOUT:.0f} s)")
    pulled: list[bool] = []

    def pull() -> None:
        with suppress(*_DOCKER_ERRORS):
            client.images.pull(ref)
            pulled.append(True)

    worker = threading.Thread(target=pull, name="clawpen-pull", daemon=True)
    worker.start()
    worker.join(PULL_TIMEOUT)
    return bool(pulled)


def _debootstrap_base(client: docker.DockerClient, progress: Progress) -> str:
    """Make BASE_TAG from a debootstrapped Debian, unless it exists already."""
    if image_exists(client, BASE_TAG):
        progress(f"reusing the local base {BASE_TAG}")
        return BASE_TAG
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError(
            f"{PYTHON_BASE} cannot be pulled and debootstrap, needed to make a local base, "
            "is not installed",
            "install it: apt-get install -y debootstrap",
        )
    mirror = _debian_mirror()
    fix = "check free space in /var/tmp and retry; or build on an image with base='IMAGE'"
    tmp = Path(tempfile.mkdtemp(prefix="clawpen-base-", dir="/var/tmp"))
    try:
        rootfs, archive = tmp / "rootfs", tmp / "rootfs.tar"
        progress(f"debootstrap bookworm from {mirror} (a few minutes, once)")
        command = [debootstrap, "--variant=minbase", "--include=python3", "bookworm"]
        _run_debootstrap([*command, str(rootfs), mirror], progress)
        _slim(rootfs)
        progress(f"importing the Debian base as {BASE_TAG}")
        tar = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(archive), "."]
        subprocess.run(tar, check=True, capture_output=True)
        repository, _, version = BASE_TAG.partition(":")
        output = str(
            client.api.import_image(
                src=str(archive), repository=repository, tag=version, changes=_BASE_CHANGES
            )
        )
        if '"error"' in output:  # the engine reports a failed import in the response body
            raise ImageBuildError(f"importing {BASE_TAG} failed: {output.strip()}", fix)
    except subprocess.CalledProcessError as error:
        raise ImageBuildError(f"packing the base failed: {error.stderr!r}", fix) from error
    except _DOCKER_ERRORS as error:
        raise ImageBuildError(f"making {BASE_TAG} failed: {error}", fix) from error
    finally:
        _unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    return BASE_TAG


def _run_debootstrap(command: list[str], progress: Progress) -> None:
    """Run debootstrap, reporting phase changes and every 25th package, not each line."""
    tail: list[str] = []
    phase, count = "", 0
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail = [*tail[-19:], line]
            verb = line.split()[1] if line.startswith("I:") and len(line.split()) > 1 else ""
            if verb == "Validating":  # follows each "Retrieving": not a phase of its own
                continue
            count = count + 1 if verb == phase else 1
            if line.startswith(("E:", "W:")) or verb != phase or count % 25 == 0:
                progress(f"debootstrap: {line}" + (f" ({count})" if count > 1 else ""))
            phase = verb
    if proc.returncode != 0:
        raise ImageBuildError(
            f"debootstrap failed (exit {proc.returncode}):\n" + "\n".join(tail),
            "run as root with access to the Debian mirror, or set CLAWPEN_DEBIAN_MIRROR",
        )


def _debian_mirror() -> str:
    """The host's Debian mirror, so debootstrap goes where apt already goes."""
    if mirror := os.environ.get("CLAWPEN_DEBIAN_MIRROR"):
        return mirror
    with suppress(OSError):
        for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
            if line.startswith("URIs:") and len(line.split()) > 1:
                return line.split()[1]
    with suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            if found := re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line.strip()):
                return found.group(1)
    return DEFAULT_MIRROR


def _slim(rootfs: Path) -> None:
    """Drop docs, manuals, translations and apt caches nobody reads in an agent container."""
    keep = {"partial", "lock", "C", "locale.alias"}
    slimmed = "usr/share/doc usr/share/man usr/share/info usr/share/locale var/lib/apt/lists"
    for relative in [*slimmed.split(), "var/cache/apt/archives"]:
        folder = rootfs / relative
        if folder.is_symlink() or not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.name not in keep and not child.name.startswith("C."):
                _remove(child)
    for cache in (rootfs / "var/cache/apt").glob("*.bin"):
        _remove(cache)


def _remove(path: Path) -> None:
    # Never follow a symlink: absolute ones in a rootfs point into the host.
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def _unmount_under(folder: Path) -> None:
    """A failed debootstrap can leave /proc or /sys mounted in the rootfs: unmount first."""
    with suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{folder}/")), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _assemble_context(context: Path, root: Path, progress: Progress) -> None:
    """Dockerfile, the agent package and its third-party site dir, with fixed metadata."""
    dockerfile = root / "image" / "Dockerfile"
    if not dockerfile.is_file():
        raise ImageBuildError(
            f"the agent Dockerfile is not at {dockerfile}",
            "build from a clawpen checkout installed with `pip install -e .`, or pass repo_root",
        )
    shutil.copyfile(dockerfile, context / "Dockerfile")
    spec = importlib.util.find_spec("clawpen_agent")  # locate without running agent code
    if spec is None or spec.origin is None:
        raise ImageBuildError("the clawpen_agent package is not installed", "pip install -e .")
    shutil.copytree(
        Path(spec.origin).parent,
        context / "clawpen_agent",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    site = context / "site"
    site.mkdir()
    requirements = root / "image" / "agent-requirements.txt"
    if _requirements(requirements):
        progress(f"installing {requirements.name} into the image's site dir")
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
        pip += ["--target", str(site), "-r", str(requirements)]
        done = subprocess.run(pip, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ImageBuildError(
                f"pip could not install {requirements}: {done.stderr.strip()[-2000:]}",
                "fix the requirement or the network to PyPI, then build again",
            )
    _fix_metadata(context)


def _requirements(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _fix_metadata(context: Path) -> None:
    """Same modes and mtime 0 everywhere, so the builder's cache sees only content changes."""
    for folder, dirs, files in os.walk(context):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                executable = os.path.isdir(path) or os.stat(path).st_mode & 0o111
                os.chmod(path, 0o755 if executable else 0o644)
            os.utime(path, (0, 0), follow_symlinks=False)


def _build(
    client: docker.DockerClient, context: Path, tag: str, base_ref: str, progress: Progress
) -> str:
    fix = "see the output above; without registry access use the local base (base='debootstrap')"
    try:
        for item in client.api.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE": base_ref},
            rm=True,
            forcerm=True,  # failed steps leave no containers behind either
            decode=True,
            nocache=False,
        ):
            if "error" in item or "errorDetail" in item:
                message = item.get("error") or item["errorDetail"].get("message", "")
                raise ImageBuildError(f"building {tag} failed: {str(message).strip()}", fix)
            for line in str(item.get("stream", "")).splitlines():
                if line.strip():
                    progress(line.rstrip())
        image_id: str = client.images.get(tag).id
    except docker.errors.APIError as error:
        raise ImageBuildError(f"building {tag} failed: {error.explanation}", fix) from error
    except _DOCKER_ERRORS as error:
        raise _unreachable(error) from error
    return image_id


# -- engine variants: the agent image plus an engine's packages, built on demand ----------------

ENGINES = ("light", "claude-code")


def engine_tag(tag: str, engine: str) -> str:
    """The image an agent of ``engine`` runs: ``clawpen-agent:latest`` for the default light
    engine, ``clawpen-agent:latest-claude-code`` for the claude-code one."""
    if engine == "light":
        return tag
    name, colon, version = tag.rpartition(":")
    if not colon or "/" in version:  # no tag part (a registry port is not one)
        return f"{tag}:latest-{engine}"
    return f"{name}:{version}-{engine}"


def build_hint(image: str) -> str:
    """The command that builds ``image``, an agent image or one of its engine variants."""
    for engine in ENGINES[1:]:
        if image.endswith(f"-{engine}"):
            return f"run: clawpen image build --tag {image[: -len(engine) - 1]} --engine {engine}"
    return f"run: clawpen image build --tag {image}"


def engine_cache_dir() -> Path:
    """Where an engine's site dir is kept between builds (it is large and changes rarely)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clawpen" / "engines"


def build_engine_image(
    client: docker.DockerClient,
    engine: str,
    *,
    tag: str = DEFAULT_TAG,
    base: str = "auto",
    progress: Progress = print,
    repo_root: Path | None = None,
    agent_image_built: bool = False,
) -> str:
    """Build the agent image ``tag`` (cached; skipped when ``agent_image_built``) and on it
    the ``engine`` variant; returns the variant's id. The engine's packages are installed on
    the host once per requirements file content and reused; an unchanged variant rebuilds
    from the layer cache."""
    if engine not in ENGINES:
        raise ImageBuildError(f"unknown engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    if not agent_image_built:
        build_agent_image(client, tag=tag, base=base, progress=progress, repo_root=repo_root)
    if engine == "light":
        return str(client.images.get(tag).id)
    root = repo_root or Path(__file__).resolve().parents[3]
    context = _engine_context(root, engine, progress)
    variant = engine_tag(tag, engine)
    previous = client.images.get(variant).id if image_exists(client, variant) else None
    progress(f"building {variant} on {tag}")
    image_id = _build(client, context, variant, tag, progress)
    if previous and previous != image_id:
        with suppress(*_DOCKER_ERRORS):
            client.images.remove(previous)
    return image_id


def _engine_context(root: Path, engine: str, progress: Progress) -> Path:
    """The variant's build context: its Dockerfile and ``engine/`` (the pip --target dir)."""
    dockerfile = root / "image" / f"{engine}.Dockerfile"
    requirements = root / "image" / f"{engine}-requirements.txt"
    if not dockerfile.is_file() or not requirements.is_file():
        raise ImageBuildError(
            f"the {engine} engine's files are not in {root / 'image'}",
            "build from a clawpen checkout installed with `pip install -e .`",
        )
    digest = hashlib.sha256(requirements.read_bytes() + dockerfile.read_bytes()).hexdigest()
    context = engine_cache_dir() / f"{engine}-{digest[:16]}"
    if (context / "Dockerfile").is_file():
        progress(f"reusing the {engine} packages in {context}")
        return context
    fresh = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=_mkdir(engine_cache_dir())))
    try:
        progress(f"installing {requirements.name} for the {engine} engine (once)")
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
        pip += ["--target", str(fresh / "engine"), "-r", str(requirements)]
        done = subprocess.run(pip, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ImageBuildError(
                f"pip could not install {requirements}: {done.stderr.strip()[-2000:]}",
                "fix the requirement or the network to PyPI, then build again",
            )
        shutil.copyfile(dockerfile, fresh / "Dockerfile")
        _fix_metadata(fresh)
        os.replace(fresh, context)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return context


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
