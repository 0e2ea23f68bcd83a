"""Builder images: choose a base, render the Dockerfile, build it offline, tag by content.

A builder image is ``base userland + one relocatable CPython + venvstacks-docker``.  The
host gathers every file the image needs (runtime archive, the tool's wheel and its
dependencies) into the build context, so ``docker build`` itself runs with networking
off.  The image tag is a hash over all of those inputs, so an existing tag is reused
as-is and a changed input always yields a new tag.

``bootstrap_base`` makes a small Debian base image with ``debootstrap`` for hosts that
cannot pull from any registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import stat
import tarfile
import tempfile
import tomllib
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from venvstacks_docker import __version__
from venvstacks_docker._run import run
from venvstacks_docker.errors import ContainerError, VenvstacksDockerError
from venvstacks_docker.metadata import sha256_file
from venvstacks_docker.resources import PINNED_IMAGES, dockerfiles_dir, source_root

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

ProgressCallback = Callable[[str], None]

#: Targets a builder container can build for.
CONTAINER_TARGETS: Final = ("linux_x86_64", "linux_aarch64")
#: Engine / Debian architecture names per target.
_ENGINE_ARCH: Final = {"linux_x86_64": "amd64", "linux_aarch64": "arm64"}
_UV_PLATFORM: Final = {
    "linux_x86_64": "x86_64-manylinux_2_28",
    "linux_aarch64": "aarch64-manylinux_2_28",
}

TEMPLATE: Final = "builder.Dockerfile.j2"
#: Where the tool's runtime lives inside builder images.
TOOL_ROOT: Final = "/opt/venvstacks-docker"
TOOL_PYTHON: Final = f"{TOOL_ROOT}/python/bin/python3"
#: The interpreter the tool itself runs on inside the container.
TOOL_PYTHON_VERSION: Final = "3.11.2"
_TOOL_PY_MINOR: Final = ".".join(TOOL_PYTHON_VERSION.split(".")[:2])
CONTAINER_HOME: Final = "/tmp/home"

BUILDER_REPOSITORY: Final = "venvstacks-docker-builder"
BASE_REPOSITORY: Final = "venvstacks-docker-base"
#: Label keys on every image the tool makes.
LABEL_ROLE: Final = "venvstacks-docker.role"
LABEL_INPUTS: Final = "venvstacks-docker.inputs"
LABEL_VERSION: Final = "venvstacks-docker.version"

BASE_IMAGE_ENV: Final = "VENVSTACKS_DOCKER_BASE_IMAGE"
#: Version of the JSON stored in ``LABEL_INPUTS``; bump when its shape changes.
INPUTS_VERSION: Final = 1

DEFAULT_SUITE: Final = "bookworm"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
#: What the builder needs from the base: a shell for the umask wrapper, TLS roots for
#: `lock`'s index access, the dynamic loader cache, and tools to unpack archives.
#: No compilers: builder images install wheels only.
BASE_PACKAGES: Final = ("bash", "ca-certificates", "gzip", "libc-bin", "tar", "xz-utils")

# Fixed mtime for every file in build contexts and bootstrapped root filesystems.
_FIXED_MTIME: Final = 315532800  # 1980-01-01, the earliest date a zip (wheel) can hold
_BUILD_LOG_TAIL: Final = 40


def _ignore(_line: str) -> None:
    pass


# --------------------------------------------------------------------------- targets


def check_target(target: str) -> str:
    """Return ``target`` if a builder container can build it.

    :raises ContainerError: for macOS/Windows targets (they need a native machine) and
        for unknown names.
    """
    if target in CONTAINER_TARGETS:
        return target
    if target.startswith(("macosx", "win")):
        os_name = "macOS" if target.startswith("macosx") else "Windows"
        raise ContainerError(
            f"containers can't build {target}; run `venvstacks-docker ... --native` on a "
            f"{os_name} machine",
            hint=f"builder containers are Linux-only ({', '.join(CONTAINER_TARGETS)})",
        )
    raise ContainerError(
        f"unknown container target {target!r}",
        hint=f"use one of {', '.join(CONTAINER_TARGETS)}",
    )


def host_target() -> str:
    """The container target matching this machine's CPU."""
    machine = platform.machine().lower()
    return "linux_aarch64" if machine in {"aarch64", "arm64"} else "linux_x86_64"


# --------------------------------------------------------------------------- rendering


def builder_context(
    *, target: str, base_image: str, base_image_ref: str | None = None, runtime_archive: str
) -> dict[str, str]:
    """The template context for ``builder.Dockerfile.j2`` (see ``Dockerfiles/README.md``).

    :param target: container target, e.g. ``"linux_x86_64"``.
    :param base_image: what ``FROM`` uses (an image ID for real builds).
    :param base_image_ref: the human-readable reference, for a comment; defaults to
        ``base_image``.
    :param runtime_archive: file name of the runtime archive in the build context.
    """
    return {
        "target": check_target(target),
        "tool_version": __version__,
        "base_image": base_image,
        "base_image_ref": base_image_ref or base_image,
        "tool_root": TOOL_ROOT,
        "python": TOOL_PYTHON,
        "site_packages": f"{TOOL_ROOT}/python/lib/python{_TOOL_PY_MINOR}/site-packages",
        "runtime_archive": f"runtime/{runtime_archive}",
        "site_dir": "site",
        "bin_dir": "bin",
        "home": CONTAINER_HOME,
    }


def render_dockerfile(context: Mapping[str, object], *, template: str = TEMPLATE) -> bytes:
    """Render a template from ``Dockerfiles/`` to bytes (UTF-8, ``\\n`` line ends).

    The same context always gives the same bytes.  A variable the template uses but the
    context lacks raises :class:`ContainerError` instead of rendering as empty text.
    """
    import jinja2

    folder = dockerfiles_dir()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    try:
        text = str(env.get_template(template).render(**context))
    except jinja2.TemplateNotFound:
        raise ContainerError(
            f"Dockerfile template {template!r} not found in {folder}",
            hint="the installation is incomplete; reinstall venvstacks-docker",
        ) from None
    except jinja2.UndefinedError as exc:
        raise ContainerError(
            f"cannot render {template}: {exc.message}",
            hint="the template and its context disagree; see Dockerfiles/README.md for "
            "the variables a template may use",
        ) from None
    return text.replace("\r\n", "\n").encode("utf-8")


# --------------------------------------------------------------------------- base image


@dataclass(frozen=True, kw_only=True)
class BaseImageChoice:
    """Which base image a builder image starts from, and why."""

    reference: str
    #: Where the choice came from: ``"cli"``, ``"spec"``, ``"env"``, ``"bootstrapped"``
    #: or ``"pinned"``.
    source: Literal["cli", "spec", "env", "bootstrapped", "pinned"]


def pinned_base_image(target: str) -> str:
    """The default manylinux_2_28 base for ``target`` from ``resources/pinned_images.toml``."""
    check_target(target)
    try:
        table = tomllib.loads(PINNED_IMAGES.read_text(encoding="utf-8"))
        return str(table[target]["reference"])
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise ContainerError(
            f"no pinned base image for {target} in {PINNED_IMAGES} ({exc})",
            hint="reinstall venvstacks-docker, or pass --base-image",
        ) from None


def bootstrapped_base_tag(target: str, suite: str = DEFAULT_SUITE) -> str:
    """The alias tag ``bootstrap-base`` gives a base for ``target``.

    The base for this machine's own architecture is ``venvstacks-docker-base:<suite>``;
    a foreign-architecture one gets the architecture appended.
    """
    check_target(target)
    if target == host_target():
        return f"{BASE_REPOSITORY}:{suite}"
    return f"{BASE_REPOSITORY}:{suite}-{_ENGINE_ARCH[target]}"


def _image_or_none(client: docker.DockerClient, reference: str) -> Image | None:
    import docker

    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        # An invalid reference is a user error, reported by resolve_base_image.
        if exc.status_code == 400:
            return None
        raise ContainerError(f"cannot inspect image {reference}: {exc.explanation}") from None


def choose_base_image(
    target: str,
    *,
    cli: str | None = None,
    spec: str | None = None,
    env: Mapping[str, str] | None = None,
    client: docker.DockerClient | None = None,
) -> BaseImageChoice:
    """Pick the base image for ``target``.

    Order: ``cli`` (``--base-image``) > ``spec`` (``[tool.venvstacks-docker] base_image``)
    > ``$VENVSTACKS_DOCKER_BASE_IMAGE`` > the bootstrapped Debian base, if the engine has
    it > the pinned manylinux_2_28 default.  Without a ``client`` the bootstrapped base
    is not considered.
    """
    check_target(target)
    environ = os.environ if env is None else env
    if cli:
        return BaseImageChoice(reference=cli, source="cli")
    if spec:
        return BaseImageChoice(reference=spec, source="spec")
    if environ.get(BASE_IMAGE_ENV):
        return BaseImageChoice(reference=environ[BASE_IMAGE_ENV], source="env")
    if client is not None:
        tag = bootstrapped_base_tag(target)
        if _image_or_none(client, tag) is not None:
            return BaseImageChoice(reference=tag, source="bootstrapped")
    return BaseImageChoice(reference=pinned_base_image(target), source="pinned")


def resolve_base_image(client: docker.DockerClient, choice: BaseImageChoice, target: str) -> Image:
    """The local image for ``choice``; images are never pulled implicitly.

    :raises ContainerError: when the engine does not have it (naming
        ``venvstacks-docker image bootstrap-base``) or it is for another architecture.
    """
    image = _image_or_none(client, choice.reference)
    if image is None:
        via = {
            "cli": "--base-image",
            "spec": "[tool.venvstacks-docker] base_image",
            "env": BASE_IMAGE_ENV,
            "bootstrapped": "the bootstrapped base",
            "pinned": "the pinned default",
        }[choice.source]
        raise ContainerError(
            f"base image {choice.reference} (from {via}) is not available in the local "
            "container engine, and venvstacks-docker never pulls images by itself",
            hint=(
                "create a local Debian base without any registry with "
                "`venvstacks-docker image bootstrap-base`, or make the image available "
                f"yourself (`docker pull {choice.reference}` where a registry is reachable, "
                "or `docker load`) and pass its ID or local tag with --base-image; see "
                "docs/how-to/registry-less-base-image.md"
            ),
        )
    arch = str(image.attrs.get("Architecture", ""))
    wanted = _ENGINE_ARCH[target]
    if arch and arch != wanted:
        raise ContainerError(
            f"base image {choice.reference} is built for {arch}, but {target} needs {wanted}",
            hint=f"choose a {wanted} base image with --base-image",
        )
    return image


# --------------------------------------------------------------------------- inputs


def _tree_sha256(root: Path) -> str:
    """Hash a folder by relative path, kind, executable bit and content."""
    digest = hashlib.sha256()
    for path, rel in _sorted_tree(root):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            digest.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif stat.S_ISDIR(st.st_mode):
            digest.update(f"D {rel}\n".encode())
        else:
            exe = "x" if st.st_mode & 0o111 else "-"
            digest.update(f"F {rel} {exe} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _cache_root() -> Path:
    try:
        from venvstacks_docker.runtimes import cache_root
    except ImportError:  # pragma: no cover - runtimes.py ships with the package
        return Path.home() / ".cache" / "venvstacks-docker"
    return cache_root()


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise work on one image across processes (parallel test workers, two shells)."""
    folder = _cache_root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def find_runtime_archive(target: str) -> tuple[Path, str]:
    """The CPython runtime archive the tool runs on in the image: ``(path, sha256)``.

    Only archives already on this machine are used (``offline=True``); fetching or
    building one is the runtime step's job.
    """
    try:
        from venvstacks_docker.runtimes import RuntimeRequest, acquire_runtime
    except ImportError:  # pragma: no cover - runtimes.py ships with the package
        return _runtime_from_cache_folder(target)
    request = RuntimeRequest(implementation="cpython", version=TOOL_PYTHON_VERSION, platform=target)
    try:
        found = acquire_runtime(request, offline=True)
    except VenvstacksDockerError as exc:
        raise ContainerError(
            f"builder images need the CPython {TOOL_PYTHON_VERSION} runtime archive for "
            f"{target}, and none is available offline:\n{exc}",
            hint=(
                f"build it with `scripts/build-python-runtime --version {TOOL_PYTHON_VERSION}` "
                "(or `venvstacks-docker runtime build`), or put an install_only archive in a "
                "folder named by VENVSTACKS_DOCKER_RUNTIME_SOURCES"
            ),
        ) from None
    return Path(found.path), str(found.sha256)


def _runtime_from_cache_folder(target: str) -> tuple[Path, str]:
    arch = target.removeprefix("linux_")
    candidates = sorted(
        (_cache_root() / "runtimes").glob(f"*/cpython-{TOOL_PYTHON_VERSION}*{arch}*install_only.tar.gz")
    )
    if not candidates:
        raise ContainerError(
            f"no CPython {TOOL_PYTHON_VERSION} runtime archive for {target} in "
            f"{_cache_root() / 'runtimes'}",
            hint="fetch or build the runtime first",
        )
    return candidates[-1], sha256_file(candidates[-1])


def find_tool_wheel(dest: Path, *, on_progress: ProgressCallback = _ignore) -> Path:
    """A wheel of the running venvstacks-docker, written into ``dest``.

    From a source checkout it is built with ``uv build --wheel`` (hatchling writes
    reproducible wheels); from an installed wheel it is re-packed from the installed
    files listed in ``RECORD``.
    """
    import uv

    dest.mkdir(parents=True, exist_ok=True)
    root = source_root()
    if root is not None:
        on_progress(f"building the venvstacks-docker wheel from {root}")
        env = dict(os.environ)
        env.setdefault("SOURCE_DATE_EPOCH", str(_FIXED_MTIME))
        run(
            [uv.find_uv_bin(), "build", "--wheel", "--quiet", "--out-dir", dest, root],
            env=env,
            what="building the venvstacks-docker wheel",
            error=ContainerError,
        )
        wheels = sorted(dest.glob("venvstacks_docker-*.whl"))
        if len(wheels) != 1:
            raise ContainerError(f"`uv build` produced {len(wheels)} wheels in {dest}, expected one")
        return wheels[0]
    return _repack_installed_wheel(dest)


def _repack_installed_wheel(dest: Path) -> Path:
    """Rebuild the wheel of the installed distribution from its ``RECORD``."""
    import base64
    import zipfile
    from importlib import metadata

    try:
        dist = metadata.distribution("venvstacks-docker")
    except metadata.PackageNotFoundError:
        raise ContainerError(
            "venvstacks-docker is neither running from a source checkout nor installed as a "
            "distribution, so its wheel cannot be put into the builder image",
            hint="install it with pip or uv (not by copying files)",
        ) from None
    files = [f for f in dist.files or [] if not str(f).startswith("..")]
    dist_info = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if dist_info is None:
        raise ContainerError("the installed venvstacks-docker has no RECORD; reinstall it")
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json"}
    name = f"venvstacks_docker-{dist.version}-py3-none-any.whl"
    target = dest / name
    record: list[str] = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for item in sorted(files, key=str):
            rel = item.as_posix() if hasattr(item, "as_posix") else str(item)
            if "__pycache__" in item.parts or (item.parts[0] == dist_info and item.name in skip):
                continue
            path = Path(str(item.locate()))
            if not path.is_file():
                continue
            data = path.read_bytes()
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{rel},sha256={b64},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, "\n".join(record) + "\n")
    return target


def install_site(wheel: Path, target: str, site: Path, bin_dir: Path) -> None:
    """Install ``wheel`` and its dependencies for the image's interpreter into ``site``.

    Native executables the packages ship (uv) go to ``bin_dir``; other scripts are
    dropped (their shebangs would name a host interpreter).
    """
    import uv

    scratch = site.parent / "site-install"
    run(
        [
            uv.find_uv_bin(), "pip", "install", "--quiet",
            "--target", scratch,
            "--python-platform", _UV_PLATFORM[target],
            "--python-version", _TOOL_PY_MINOR,
            "--only-binary", ":all:",
            "--link-mode", "copy",
            "--no-compile",
            wheel,
        ],
        what="installing venvstacks-docker and its dependencies for the builder image",
        error=ContainerError,
    )  # fmt: skip
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = scratch / "bin"
    if scripts.is_dir():
        for script in sorted(scripts.iterdir()):
            with script.open("rb") as fh:
                is_native = fh.read(4) == b"\x7fELF"
            if is_native:
                shutil.move(script, bin_dir / script.name)
        shutil.rmtree(scripts)
    # Installer records that name host paths would make the image depend on where the
    # host happened to build the wheel.
    for dist_info in scratch.glob("*.dist-info"):
        for name in ("direct_url.json", "uv_cache.json"):
            volatile = dist_info / name
            if volatile.exists():
                volatile.unlink()
                record = dist_info / "RECORD"
                if record.exists():
                    kept = [
                        line
                        for line in record.read_text(encoding="utf-8").splitlines()
                        if not line.startswith(f"{dist_info.name}/{name},")
                    ]
                    record.write_text("\n".join(kept) + "\n", encoding="utf-8")
    for pycache in sorted(scratch.rglob("__pycache__"), reverse=True):
        shutil.rmtree(pycache)
    scratch.rename(site)


def _normalised_tarinfo(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = _FIXED_MTIME
    if info.isdir():
        info.mode = 0o755
    elif info.isreg():
        info.mode = 0o755 if info.mode & 0o111 else 0o644
    return info


def _sorted_tree(root: Path) -> list[tuple[Path, str]]:
    """Every path below ``root`` (not following symlinks) with its relative POSIX name,
    sorted by that name, so a folder always comes before what it contains."""
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            found.append((path, path.relative_to(root).as_posix()))
    found.sort(key=lambda item: item[1])
    return found


def write_context_tar(context_dir: Path, out: Path) -> None:
    """Tar a build context deterministically: sorted, uid/gid 0, fixed mtime, fixed modes."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for path, rel in _sorted_tree(context_dir):
            tf.add(path, arcname=rel, recursive=False, filter=_normalised_tarinfo)


# --------------------------------------------------------------------------- builder image


@dataclass(frozen=True, kw_only=True)
class BuilderImage:
    """A builder image in the local engine, and what went into it."""

    #: ``venvstacks-docker-builder:<16 hex>``.
    tag: str
    #: The engine's image ID (config digest), ``sha256:...``.
    image_id: str
    #: Everything the tag hashes (stored as JSON in the image's
    #: ``venvstacks-docker.inputs`` label); publish records it in metadata.
    inputs: dict[str, Any] = field(default_factory=dict)


def inputs_tag(inputs: Mapping[str, Any]) -> str:
    """``venvstacks-docker-builder:<first 16 hex of sha256(canonical JSON of inputs)>``."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return f"{BUILDER_REPOSITORY}:{hashlib.sha256(canonical).hexdigest()[:16]}"


def _build_failure(what: str, tail: deque[str]) -> ContainerError:
    log_tail = "\n".join("    " + line for line in tail) or "    (no output)"
    return ContainerError(
        f"building the builder image failed: {what}\nlast lines of the build log:\n{log_tail}",
        hint="rerun with --verbose for the whole log; the build runs without network, so a "
        "step that downloads something cannot work",
    )


def _remove_images(client: docker.DockerClient, image_ids: list[str], keep: set[str]) -> None:
    """Best-effort removal of untagged images a failed build left behind."""
    import docker

    for image_id in reversed(image_ids):
        if image_id in keep:
            continue
        try:
            image = client.images.get(image_id)
            if image.tags:
                continue
            client.images.remove(image.id, noprune=False)
        except docker.errors.DockerException:
            # In use as a cached layer of another image, or already gone: leave it.
            pass


def _stream_build(
    client: docker.DockerClient,
    context_tar: Path,
    *,
    tag: str,
    labels: dict[str, str],
    nocache: bool,
    platform_name: str | None,
    keep: set[str],
    on_progress: ProgressCallback,
) -> str:
    """Run the classic-builder build of ``context_tar``; return the new image ID."""
    import docker

    tail: deque[str] = deque(maxlen=_BUILD_LOG_TAIL)
    step_images: list[str] = []
    image_id: str | None = None
    pending = ""
    try:
        with context_tar.open("rb") as fh:
            stream = client.api.build(
                fileobj=fh,
                custom_context=True,
                tag=tag,
                labels=labels,
                nocache=nocache,
                pull=False,
                rm=True,
                forcerm=True,
                network_mode="none",
                platform=platform_name,
                decode=True,
                use_config_proxy=False,  # proxy build args would change the image
            )
            for chunk in stream:
                if "stream" in chunk:
                    pending += str(chunk["stream"])
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        line = line.rstrip()
                        if not line:
                            continue
                        tail.append(line)
                        on_progress(line)
                        # " ---> 0d3d00151c1a": an image this build committed (or reused).
                        if line.startswith(" ---> ") and " " not in line[6:].strip():
                            step_images.append(line[6:].strip())
                elif "status" in chunk:
                    on_progress(str(chunk["status"]))
                elif "aux" in chunk and isinstance(chunk["aux"], dict):
                    image_id = chunk["aux"].get("ID", image_id)
                if "error" in chunk:
                    if pending.strip():
                        tail.append(pending.rstrip())
                    raise _build_failure(str(chunk["error"]).strip(), tail)
    except ContainerError:
        _remove_images(client, step_images, keep)
        raise
    except docker.errors.APIError as exc:
        _remove_images(client, step_images, keep)
        raise _build_failure(str(exc.explanation or exc), tail) from None
    except BaseException:
        _remove_images(client, step_images, keep)
        raise
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id


def _tool_fingerprint() -> str:
    """A cheap hash of the tool's own files: source tree, or the installed RECORD.

    It stands in for the wheel hash when looking up an already-built image, so the
    common case (nothing changed) needs neither `uv build` nor a dependency resolution.
    """
    digest = hashlib.sha256(__version__.encode())
    root = source_root()
    if root is not None:
        for folder in (root / "src" / "venvstacks_docker", root / "Dockerfiles"):
            for path, rel in _sorted_tree(folder):
                if "__pycache__" in rel or path.is_dir() or path.suffix == ".pyc":
                    continue
                digest.update(f"{folder.name}/{rel}\0".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update((root / "pyproject.toml").read_bytes())
        return digest.hexdigest()
    from importlib import metadata

    try:
        record = metadata.distribution("venvstacks-docker").read_text("RECORD") or ""
    except metadata.PackageNotFoundError:
        record = ""
    digest.update(record.encode())
    return digest.hexdigest()


def _memo_path(target: str, base_id: str, runtime_sha: str, tool: str) -> Path:
    key = hashlib.sha256(f"{INPUTS_VERSION}\0{target}\0{base_id}\0{runtime_sha}\0{tool}".encode()).hexdigest()
    return _cache_root() / "builder-images" / f"{key[:32]}.json"


def _memo_lookup(client: docker.DockerClient, memo: Path) -> BuilderImage | None:
    try:
        data = json.loads(memo.read_text(encoding="utf-8"))
        tag, image_id = str(data["tag"]), str(data["image_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    image = _image_or_none(client, tag)
    if image is None or image.id != image_id:
        return None
    return BuilderImage(tag=tag, image_id=image_id, inputs=dict(data.get("inputs", {})))


def _memo_store(memo: Path, image: BuilderImage) -> None:
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".tmp-{uuid.uuid4().hex[:16]}")
    payload = {"tag": image.tag, "image_id": image.image_id, "inputs": image.inputs}
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, memo)


def _existing_builder(client: docker.DockerClient, tag: str) -> BuilderImage | None:
    image = _image_or_none(client, tag)
    if image is None:
        return None
    try:
        inputs = json.loads(image.labels.get(LABEL_INPUTS, "{}"))
    except json.JSONDecodeError:
        inputs = {}
    return BuilderImage(tag=tag, image_id=image.id, inputs=inputs)


def ensure_builder_image(
    target: str = "linux_x86_64",
    *,
    base_image: str | None = None,
    spec_base_image: str | None = None,
    force: bool = False,
    client: docker.DockerClient | None = None,
    runtime_archive: Path | None = None,
    tool_wheel: Path | None = None,
    on_progress: ProgressCallback = _ignore,
) -> BuilderImage:
    """Return the builder image for ``target``, building it only when its tag is missing.

    :param target: ``"linux_x86_64"`` or ``"linux_aarch64"``.
    :param base_image: ``--base-image`` from the command line (wins over everything).
    :param spec_base_image: ``[tool.venvstacks-docker] base_image`` from the stack file.
    :param force: rebuild (without the layer cache) even if the tag exists.
    :param client: engine client; :func:`~venvstacks_docker.host.engine.connect` by default.
    :param runtime_archive: use this install_only archive instead of looking one up.
    :param tool_wheel: use this venvstacks-docker wheel instead of building one.
    :param on_progress: called with each line of progress and build output.
    :raises ContainerError: for every failure, with the build log's tail when the build
        itself fails.
    """
    from venvstacks_docker.host.engine import connect

    check_target(target)
    client = client or connect()
    choice = choose_base_image(target, cli=base_image, spec=spec_base_image, client=client)
    base = resolve_base_image(client, choice, target)
    on_progress(f"base image: {choice.reference} ({choice.source}, {base.id[:19]})")

    if runtime_archive is not None:
        runtime_path, runtime_sha = Path(runtime_archive), sha256_file(Path(runtime_archive))
    else:
        runtime_path, runtime_sha = find_runtime_archive(target)

    # Fast path: the same tool files, base and runtime were turned into an image before.
    # (Skipped with an explicit wheel: its bytes are the input then.)
    memo = None
    if tool_wheel is None:
        memo = _memo_path(target, base.id, runtime_sha, _tool_fingerprint())
        known = None if force else _memo_lookup(client, memo)
        if known is not None:
            on_progress(f"builder image {known.tag} already exists ({known.image_id[:19]})")
            return known

    with _locked(f"builder-{target}"), tempfile.TemporaryDirectory(prefix="venvstacks-docker-ctx-") as tmp:
        work = Path(tmp)
        ctx = work / "context"
        (ctx / "runtime").mkdir(parents=True)
        if tool_wheel is None:
            wheel = find_tool_wheel(work / "wheel", on_progress=on_progress)
        else:
            wheel = Path(tool_wheel)
        on_progress("resolving venvstacks-docker's dependencies for the image")
        install_site(wheel, target, ctx / "site", ctx / "bin")
        context = builder_context(
            target=target,
            base_image=base.id,
            base_image_ref=choice.reference,
            runtime_archive=runtime_path.name,
        )
        dockerfile = render_dockerfile(context)
        inputs: dict[str, Any] = {
            "inputs_version": INPUTS_VERSION,
            "target": target,
            "dockerfile_sha256": hashlib.sha256(dockerfile).hexdigest(),
            "base_image": {"reference": choice.reference, "id": base.id},
            "tool": {
                "name": "venvstacks-docker",
                "version": __version__,
                "wheel": wheel.name,
                "wheel_sha256": sha256_file(wheel),
                "site_sha256": _tree_sha256(ctx / "site"),
                "bin_sha256": _tree_sha256(ctx / "bin"),
            },
            "runtime": {
                "implementation": "cpython",
                "version": TOOL_PYTHON_VERSION,
                "archive": runtime_path.name,
                "sha256": runtime_sha,
            },
        }
        tag = inputs_tag(inputs)
        existing = _existing_builder(client, tag)
        if existing is not None and not force:
            on_progress(f"builder image {tag} already exists ({existing.image_id[:19]})")
            if memo is not None:
                _memo_store(memo, existing)
            return existing

        on_progress(f"building {tag}")
        (ctx / "Dockerfile").write_bytes(dockerfile)
        shutil.copyfile(runtime_path, ctx / "runtime" / runtime_path.name)
        context_tar = work / "context.tar"
        write_context_tar(ctx, context_tar)
        labels = {
            LABEL_ROLE: "builder",
            LABEL_VERSION: __version__,
            LABEL_INPUTS: json.dumps(inputs, sort_keys=True),
            "venvstacks-docker.target": target,
        }
        image_id = _stream_build(
            client,
            context_tar,
            tag=tag,
            labels=labels,
            nocache=force,
            platform_name=None if target == host_target() else f"linux/{_ENGINE_ARCH[target]}",
            keep={base.id, base.short_id.removeprefix("sha256:")},
            on_progress=on_progress,
        )
        if existing is not None and existing.image_id != image_id:
            # A forced rebuild moved the tag; drop the old image if nothing else uses it.
            _remove_images(client, [existing.image_id], keep=set())
        on_progress(f"built {tag} ({image_id[:19]})")
        built = BuilderImage(tag=tag, image_id=image_id, inputs=inputs)
        if memo is not None:
            _memo_store(memo, built)
        return built


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    """A Debian base image made by :func:`bootstrap_base`."""

    #: ``venvstacks-docker-base:<suite>-<12 hex>`` (the hash covers suite, packages, arch).
    tag: str
    #: ``venvstacks-docker-base:<suite>`` (``<suite>-<arch>`` for a foreign architecture).
    alias: str
    image_id: str
    inputs: dict[str, Any]
    #: ``False`` when the tag existed and nothing was done.
    created: bool


def base_inputs(
    *, suite: str, packages: tuple[str, ...] = BASE_PACKAGES, target: str | None = None
) -> dict[str, Any]:
    """What identifies a bootstrapped base (the mirror does not: it serves the same suite)."""
    target = check_target(target or host_target())
    return {
        "inputs_version": INPUTS_VERSION,
        "suite": suite,
        "variant": "minbase",
        "packages": sorted(set(packages)),
        "arch": _ENGINE_ARCH[target],
    }


def base_tag(inputs: Mapping[str, Any]) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return f"{BASE_REPOSITORY}:{inputs['suite']}-{hashlib.sha256(canonical).hexdigest()[:12]}"


def _mounts_below(root: Path) -> list[str]:
    """Mount points at or below ``root`` (debootstrap mounts /proc and /sys while it works)."""
    prefix = os.path.realpath(root)
    found = []
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            for line in fh:
                point = line.split()[1].replace("\\040", " ")
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def _remove_rootfs(root: Path) -> None:
    # Never rmtree through a live /proc or /sys mount: unmount them first.
    for point in _mounts_below(root):
        with contextlib.suppress(VenvstacksDockerError):
            run(["umount", "-l", point], what=f"unmounting {point}", error=ContainerError)
    if _mounts_below(root):
        raise ContainerError(
            f"{root} still has file systems mounted below it; not deleting it",
            hint=f"unmount them (`umount -R {root}`) and remove the folder by hand",
        )
    shutil.rmtree(root, ignore_errors=True)


def strip_volatile_files(root: Path) -> None:
    """Remove what differs from one bootstrap to the next and is useless in an image."""

    def clear_dir(folder: Path, keep: tuple[str, ...] = ()) -> None:
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.name in keep:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    clear_dir(root / "var/lib/apt/lists", keep=("partial", "lock"))
    clear_dir(root / "var/lib/apt/lists/partial")
    clear_dir(root / "var/cache/apt/archives", keep=("partial", "lock"))
    clear_dir(root / "var/cache/apt/archives/partial")
    for binary in (root / "var/cache/apt").glob("*.bin"):
        binary.unlink()
    for name in ("var/cache/ldconfig/aux-cache", "etc/machine-id", "var/lib/dbus/machine-id"):
        path = root / name
        if path.exists() or path.is_symlink():
            path.unlink()
    # Logs: keep the files (their modes and owners matter to some tools), drop the text.
    log_dir = root / "var/log"
    if log_dir.is_dir():
        for path in log_dir.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.write_bytes(b"")
    for pattern in ("var/cache/debconf/*-old", "var/lib/dpkg/*-old", "etc/*-"):
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()
    # debootstrap copies these from the host; the engine provides its own at run time.
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/hostname").write_text("localhost\n")
    for folder in ("dev", "proc", "sys", "tmp", "var/tmp", "run"):
        clear_dir(root / folder)
    for history in root.glob("root/.*_history"):
        history.unlink()


def write_rootfs_tar(root: Path, out: Path) -> None:
    """Tar a root file system deterministically: sorted names, one fixed mtime, numeric
    owners kept, no user/group names, hard links kept, device nodes and sockets left out."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.ischr() or info.isblk() or info.isfifo():
            return None
        info.mtime = _FIXED_MTIME
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for path, rel in _sorted_tree(root):
            if stat.S_ISSOCK(path.lstat().st_mode):
                continue
            tf.add(path, arcname=rel, recursive=False, filter=normalise)


def _check_bootstrap_prerequisites(target: str) -> str:
    if os.geteuid() != 0:
        raise ContainerError(
            "bootstrap-base needs root: debootstrap unpacks packages with their owners, "
            "creates device nodes and runs maintainer scripts in a chroot",
            hint="run it as root (e.g. `sudo venvstacks-docker image bootstrap-base`), or "
            "use an existing image with --base-image",
        )
    exe = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if exe is None:
        raise ContainerError(
            "debootstrap is not installed",
            hint="install it (`apt-get install debootstrap`; on Fedora `dnf install debootstrap`)",
        )
    if target != host_target():
        binfmt = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{target.removeprefix('linux_')}"
        if not binfmt.exists():
            raise ContainerError(
                f"bootstrapping a {target} base on a {host_target()} machine needs qemu "
                "user-mode emulation, which is not registered here",
                hint="install qemu-user-static and binfmt-support, or bootstrap on a "
                f"{target} machine and move the image with `docker save`/`docker load`",
            )
    return exe


def bootstrap_base(
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    target: str | None = None,
    packages: tuple[str, ...] = BASE_PACKAGES,
    force: bool = False,
    client: docker.DockerClient | None = None,
    on_progress: ProgressCallback = _ignore,
) -> BaseImage:
    """Create a minimal Debian base image with debootstrap and import it into the engine.

    Needs root and network access to ``mirror``, but no container registry.  Nothing is
    done when the tag already exists, unless ``force``.

    :param suite: Debian suite (``bookworm``).
    :param mirror: Debian mirror URL.
    :param target: container target whose architecture to bootstrap (default: this
        machine's).
    :param packages: extra packages on top of ``minbase``.
    :param force: bootstrap again and move the tags to the new image.
    :raises ContainerError: when not root, debootstrap is missing or fails, or the
        import fails.
    """
    import docker

    from venvstacks_docker.host.engine import connect

    target = check_target(target or host_target())
    client = client or connect()
    inputs = base_inputs(suite=suite, packages=packages, target=target)
    tag = base_tag(inputs)
    alias = bootstrapped_base_tag(target, suite)
    existing = _image_or_none(client, tag)
    if existing is not None and not force:
        if _image_or_none(client, alias) is None:
            existing.tag(*alias.split(":", 1))
        on_progress(f"{tag} already exists ({existing.id[:19]}); nothing to do")
        return BaseImage(tag=tag, alias=alias, image_id=existing.id, inputs=inputs, created=False)

    debootstrap = _check_bootstrap_prerequisites(target)
    with _locked(f"base-{tag.split(':', 1)[1]}"):
        existing = _image_or_none(client, tag)
        if existing is not None and not force:
            return BaseImage(tag=tag, alias=alias, image_id=existing.id, inputs=inputs, created=False)
        work = Path(tempfile.mkdtemp(prefix="venvstacks-docker-bootstrap-"))
        try:
            rootfs = work / "rootfs"
            cmd: list[str | Path] = [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(inputs['packages'])}",
                f"--arch={inputs['arch']}",
                suite,
                rootfs,
                mirror,
            ]
            on_progress(f"debootstrap {suite} ({inputs['arch']}, minbase + {len(packages)} packages) from {mirror}")
            run(cmd, what=f"debootstrap {suite} from {mirror}", error=ContainerError)
            on_progress("removing volatile files (apt lists and caches, logs, ldconfig aux-cache)")
            strip_volatile_files(rootfs)
            rootfs_tar = work / "rootfs.tar"
            on_progress("writing a deterministic root file system tar")
            write_rootfs_tar(rootfs, rootfs_tar)
            on_progress(f"importing {rootfs_tar.stat().st_size / 1e6:.0f} MB as {tag}")
            label_inputs = {**inputs, "mirror": mirror}
            changes = [
                f"LABEL {LABEL_ROLE}=base",
                f"LABEL {LABEL_VERSION}={__version__}",
                f"LABEL {LABEL_INPUTS}={json.dumps(json.dumps(label_inputs, sort_keys=True))}",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                'CMD ["/bin/bash"]',
            ]
            repository, tag_name = tag.split(":", 1)
            try:
                client.api.import_image_from_file(
                    str(rootfs_tar), repository=repository, tag=tag_name, changes=changes
                )
                image = client.images.get(tag)
                image.tag(*alias.split(":", 1), force=True)
            except docker.errors.APIError as exc:
                raise ContainerError(
                    f"importing the bootstrapped root file system failed: {exc.explanation or exc}"
                ) from None
        finally:
            _remove_rootfs(work)
        if existing is not None and existing.id != image.id:
            _remove_images(client, [existing.id], keep=set())
        on_progress(f"created {tag} and {alias} ({image.id[:19]})")
        return BaseImage(tag=tag, alias=alias, image_id=image.id, inputs=label_inputs, created=True)


# --------------------------------------------------------------------------- listing


def list_tool_images(client: docker.DockerClient) -> list[dict[str, Any]]:
    """Builder and base images this tool made (by their ``venvstacks-docker.role`` label)."""
    rows = []
    for image in client.images.list(filters={"label": LABEL_ROLE}):
        labels = image.labels or {}
        try:
            inputs = json.loads(labels.get(LABEL_INPUTS, "{}"))
        except json.JSONDecodeError:
            inputs = {}
        rows.append(
            {
                "role": labels.get(LABEL_ROLE, ""),
                "tags": sorted(image.tags),
                "id": image.id,
                "created": image.attrs.get("Created", ""),
                "size": int(image.attrs.get("Size", 0)),
                "version": labels.get(LABEL_VERSION, ""),
                "inputs": inputs,
            }
        )
    rows.sort(key=lambda r: (r["role"], r["tags"], r["id"]))
    return rows


def prune_builder_images(client: docker.DockerClient, *, keep: int = 1) -> list[str]:
    """Remove old builder images, keeping the ``keep`` newest per target.

    Base images are never touched.  An image a container still uses is left alone.
    Returns the tags removed.
    """
    import docker

    by_target: dict[str, list[dict[str, Any]]] = {}
    for row in list_tool_images(client):
        if row["role"] == "builder":
            by_target.setdefault(str(row["inputs"].get("target", "")), []).append(row)
    removed: list[str] = []
    for rows in by_target.values():
        rows.sort(key=lambda r: str(r["created"]), reverse=True)
        for row in rows[max(keep, 0):]:
            for tag in row["tags"]:
                try:
                    client.images.remove(tag)
                    removed.append(tag)
                except docker.errors.APIError:
                    pass  # in use by a container: keep it
    return sorted(removed)


def render_for_target(
    target: str,
    *,
    base_image: str | None = None,
    spec_base_image: str | None = None,
    client: docker.DockerClient | None = None,
) -> bytes:
    """The Dockerfile ``image build`` would use, for showing to people.

    Without an engine (``client`` is ``None``) the base reference is shown as chosen; the
    real build puts the resolved image ID into ``FROM`` and the actual runtime file name.
    """
    choice = choose_base_image(target, cli=base_image, spec=spec_base_image, client=client)
    from_ref = choice.reference
    if client is not None:
        image = _image_or_none(client, choice.reference)
        if image is not None:
            from_ref = image.id
    arch = {"linux_x86_64": "x86_64", "linux_aarch64": "aarch64"}[target]
    context = builder_context(
        target=target,
        base_image=from_ref,
        base_image_ref=choice.reference,
        runtime_archive=f"cpython-{TOOL_PYTHON_VERSION}-{arch}-unknown-linux-gnu-install_only.tar.gz",
    )
    return render_dockerfile(context)


__all__ = [
    "BASE_PACKAGES",
    "CONTAINER_TARGETS",
    "DEFAULT_MIRROR",
    "DEFAULT_SUITE",
    "TOOL_PYTHON",
    "BaseImage",
    "BaseImageChoice",
    "BuilderImage",
    "bootstrap_base",
    "builder_context",
    "check_target",
    "choose_base_image",
    "ensure_builder_image",
    "list_tool_images",
    "pinned_base_image",
    "prune_builder_images",
    "render_dockerfile",
    "render_for_target",
    "resolve_base_image",
]
