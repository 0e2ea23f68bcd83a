"""Finding, caching and unpacking Python runtime archives (the "runtime" layer source).

Runtimes are python-build-standalone style ``install_only`` archives: a ``.tar.gz``
with a single ``python/`` folder.  :func:`acquire_runtime` looks for one, in order, in

1. the given ``sources`` and then ``$VENVSTACKS_DOCKER_RUNTIME_SOURCES`` (``os.pathsep``
   separated): archive files, ``file://`` (or ``http(s)://``) URLs of archives, or folders
   ("mirrors") holding archives named the python-build-standalone way;
2. the content-addressed cache ``<cache>/runtimes/<sha256>/<filename>``;
3. upstream python-build-standalone on GitHub, via the URL and sha256 that
   ``pbs-installer`` ships (skipped when ``offline``).

Whatever is found outside the cache is copied into it, so nothing is fetched twice.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from venvstacks_docker._download import DEFAULT_HINT, download
from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.extract import extract_tree
from venvstacks_docker.metadata import sha256_file
from venvstacks_docker.spec_layers import IMPLEMENTATIONS

log = logging.getLogger(__name__)

SOURCES_ENV = "VENVSTACKS_DOCKER_RUNTIME_SOURCES"
CACHE_ENV = "VENVSTACKS_DOCKER_CACHE"

#: venvstacks platform tag -> python-build-standalone target triple
PLATFORM_TRIPLES: dict[str, str] = {
    "linux_x86_64": "x86_64-unknown-linux-gnu",
    "linux_aarch64": "aarch64-unknown-linux-gnu",
    "macosx_arm64": "aarch64-apple-darwin",
    "macosx_x86_64": "x86_64-apple-darwin",
    "win_amd64": "x86_64-pc-windows-msvc",
    "win_arm64": "aarch64-pc-windows-msvc",
}

#: venvstacks platform tag -> (pbs-installer platform, pbs-installer arch)
_PBS_PLATFORMS: dict[str, tuple[str, str]] = {
    "linux_x86_64": ("linux", "x86_64"),
    "linux_aarch64": ("linux", "aarch64"),
    "macosx_arm64": ("macos", "aarch64"),
    "macosx_x86_64": ("macos", "x86_64"),
    "win_amd64": ("windows", "x86_64"),
    "win_arm64": ("windows", "aarch64"),
}

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class RuntimeRequest:
    """The runtime a layer needs: implementation, version and platform."""

    implementation: str
    version: str
    platform: str

    @property
    def triple(self) -> str:
        """The target triple of the platform, as runtime archive names spell it."""
        return PLATFORM_TRIPLES[self.platform]

    def describe(self) -> str:
        """The request, for messages."""
        return f"{self.implementation} {self.version} for {self.platform}"


@dataclass(frozen=True, kw_only=True)
class RuntimeArchive:
    """A runtime archive on this machine, and where it came from."""

    path: Path
    sha256: str
    filename: str
    origin: str


# --------------------------------------------------------------------------- helpers


def cache_root() -> Path:
    """The tool's cache folder: ``$VENVSTACKS_DOCKER_CACHE``, else the platform's user
    cache folder (:func:`platformdirs.user_cache_dir`: on Linux
    ``$XDG_CACHE_HOME/venvstacks-docker``, else ``~/.cache/venvstacks-docker``)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("venvstacks-docker", appauthor=False))


def runtimes_dir() -> Path:
    """The cache folder of runtime archives."""
    return cache_root() / "runtimes"


def _validate(request: RuntimeRequest) -> None:
    if request.implementation not in IMPLEMENTATIONS:
        raise RuntimeArchiveError(
            f"unknown Python implementation {request.implementation!r}",
            hint="use one of: " + ", ".join(IMPLEMENTATIONS),
        )
    if not _VERSION.match(request.version):
        raise RuntimeArchiveError(
            f"runtime version {request.version!r} is not a full X.Y.Z version",
            hint="name an exact release, e.g. 3.11.2",
        )
    if request.platform not in PLATFORM_TRIPLES:
        raise RuntimeArchiveError(
            f"unknown platform {request.platform!r} for a runtime",
            hint="use one of: " + ", ".join(PLATFORM_TRIPLES),
        )


def archive_name_pattern(request: RuntimeRequest) -> re.Pattern[str]:
    """Regex matching python-build-standalone install_only archive names for ``request``."""
    return re.compile(
        rf"^{re.escape(request.implementation)}-{re.escape(request.version)}\+(?P<tag>[^-/]+)"
        rf"-{re.escape(request.triple)}-install_only(?P<stripped>_stripped)?\.tar\.gz$"
    )


def _preference(match: re.Match[str]) -> tuple[bool, str]:
    """Sort key: stripped builds first, then the newest build tag."""
    return (match.group("stripped") is not None, match.group("tag"))


def _best_in_folder(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Matching archives in ``folder``, best first."""
    found: list[tuple[tuple[bool, str], str, Path]] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        log.warning("cannot list runtime mirror %s: %s", folder, exc)
        return []
    for entry in entries:
        name = urllib.parse.unquote(entry.name)
        match = pattern.match(name)
        if match and entry.is_file():
            found.append((_preference(match), name, entry))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [path for _, _, path in found]


def _env_sources() -> list[str]:
    value = os.environ.get(SOURCES_ENV, "")
    return [entry for entry in value.split(os.pathsep) if entry.strip()]


def _file_url_to_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise RuntimeArchiveError(f"cannot use runtime source {url}: remote file:// hosts are not supported")
    return Path(urllib.request.url2pathname(parsed.path))


# --------------------------------------------------------------------------- cache


def _store_in_cache(path: Path, filename: str, sha256: str) -> Path:
    """Copy ``path`` into ``runtimes/<sha256>/<filename>`` unless it is already there."""
    target = runtimes_dir() / sha256 / filename
    if target.is_file() and target.stat().st_size == path.stat().st_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{filename}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        shutil.copyfile(path, tmp)
        tmp.replace(target)
    finally:
        if tmp.exists():
            tmp.unlink()
    for sidecar in (path.with_name(path.name + ".json"),):
        if sidecar.is_file() and not (target.parent / sidecar.name).exists():
            shutil.copyfile(sidecar, target.parent / (filename + ".json"))
    return target


def _cached_candidates(request: RuntimeRequest, expected_sha256: str | None) -> list[Path]:
    pattern = archive_name_pattern(request)
    root = runtimes_dir()
    if expected_sha256:
        folder = root / expected_sha256
        return _best_in_folder(folder, pattern) if folder.is_dir() else []
    if not root.is_dir():
        return []
    found: list[tuple[tuple[bool, str], str, Path]] = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not _SHA256.match(folder.name):
            continue
        for path in _best_in_folder(folder, pattern):
            match = pattern.match(path.name)
            assert match is not None
            found.append((_preference(match), folder.name, path))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [path for _, _, path in found]


# --------------------------------------------------------------------------- acquisition


class _Search:
    """Collects what was tried, for an error message that explains itself."""

    def __init__(self, request: RuntimeRequest, expected: str | None) -> None:
        self.request = request
        self.expected = expected
        self.pattern = archive_name_pattern(request)
        self.tried: list[str] = []
        self.mismatches: list[tuple[str, str]] = []

    def accept(self, path: Path, *, origin: str, in_cache: bool) -> RuntimeArchive | None:
        name = urllib.parse.unquote(path.name)
        if not self.pattern.match(name):
            self.tried.append(f"{path}: name does not match {self.request.describe()}")
            return None
        try:
            sha = sha256_file(path)
        except OSError as exc:
            self.tried.append(f"{path}: cannot read ({exc})")
            return None
        if in_cache and path.parent.name != sha:
            log.warning("ignoring corrupt cache entry %s (content hash %s)", path, sha)
            self.tried.append(f"{path}: corrupt cache entry")
            return None
        if self.expected and sha != self.expected:
            self.mismatches.append((str(path), sha))
            self.tried.append(f"{path}: sha256 {sha} (expected {self.expected})")
            return None
        cached = path
        if not in_cache:
            try:
                cached = _store_in_cache(path, name, sha)
            except OSError as exc:  # a read-only cache (a builder container's): use it where it is
                log.info("not caching %s (%s); using it in place", path, exc.strerror or exc)
        return RuntimeArchive(path=cached, sha256=sha, filename=name, origin=origin)

    def failure(self, offline: bool, upstream_note: str | None) -> RuntimeArchiveError:
        req = self.request
        lines = [f"no runtime archive found for {req.describe()}"]
        if self.mismatches:
            lines = [
                f"no runtime archive for {req.describe()} has the expected sha256 {self.expected}"
            ]
        lines += [f"  tried {entry}" for entry in self.tried]
        if upstream_note:
            lines.append(f"  upstream: {upstream_note}")
        elif offline:
            lines.append("  upstream: skipped (offline)")
        if self.mismatches:
            hint = (
                "the lock/spec pins a different archive than the one available; use the archive "
                f"with sha256 {self.expected} (via {SOURCES_ENV} or --runtime-source), or re-lock "
                "(`venvstacks-docker lock` on the stack file) to pin the available one"
            )
        else:
            hint = (
                f"{build_hint(req)}, or point {SOURCES_ENV} (os.pathsep separated) at an "
                f"install_only archive of {req.describe()} or a folder of them"
            )
        return RuntimeArchiveError("\n".join(lines), hint=hint)


def build_hint(request: RuntimeRequest) -> str:
    """How to get a runtime of ``request``'s Python with ``venvstacks-docker runtime build``,
    naming only a version the builder has pinned sources of: the requested one, else the
    pinned one of the same minor version (else the newest), which the stack must then name."""
    from venvstacks_docker.runtime_build.recipe import BUILD_PLATFORMS, PINS  # it imports this module

    if request.implementation != "cpython" or request.platform not in BUILD_PLATFORMS:
        return ("`venvstacks-docker runtime build` makes CPython for Linux only: get a python-build-standalone "
                "install_only archive of it")
    if request.version in PINS:
        return f"run `venvstacks-docker runtime build --python-version {request.version}` to build one into the cache"
    minor = ".".join(request.version.split(".")[:2])
    same_minor = [v for v in PINS if v.startswith(f"{minor}.")]
    version = same_minor[-1] if same_minor else max(PINS, key=lambda v: tuple(map(int, v.split("."))))
    return (f"the runtime builder makes CPython {' and '.join(PINS)} only, not {request.version}: name "
            f"\"cpython@{version}\" as the runtime's python_implementation and run "
            f"`venvstacks-docker runtime build --python-version {version}`")


def _download(url: str, filename: str, sha256: str | None, what: str, *,
              source: str | None = None, hint: str = DEFAULT_HINT) -> Path:
    """Download ``url`` into the cache as ``<sha256>/<filename>``, checking ``sha256`` when
    known (without it, the file is filed under the hash it turns out to have)."""
    root = runtimes_dir()

    def fetch(target: Path, expected: str | None) -> str:
        return download(url, target, sha256=expected, error=RuntimeArchiveError, what=f"{what} {filename}",
                        source=source, hint=hint, headers={"User-Agent": "venvstacks-docker"})

    if sha256:
        fetch(root / sha256 / filename, sha256)
        return root / sha256 / filename
    incoming = root / ".incoming" / filename
    target = root / fetch(incoming, None) / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming.replace(target)
    return target


def _from_source(entry: str, search: _Search) -> RuntimeArchive | None:
    origin = f"source:{entry}"
    if entry.startswith(("http://", "https://")):
        name = urllib.parse.unquote(entry.rsplit("/", 1)[-1].split("?", 1)[0])
        if not search.pattern.match(name):
            search.tried.append(f"{entry}: name does not match {search.request.describe()}")
            return None
        try:
            path = _download(entry, name, search.expected, "runtime archive")
        except OSError as exc:
            search.tried.append(f"{entry}: download failed ({exc})")
            return None
        except RuntimeArchiveError as exc:
            search.tried.append(f"{entry}: {exc.message}")
            return None
        return search.accept(path, origin=origin, in_cache=True)
    path = _file_url_to_path(entry) if entry.startswith("file:") else Path(entry).expanduser()
    if path.is_dir():
        candidates = _best_in_folder(path, search.pattern)
        if not candidates:
            search.tried.append(f"{path}/: no file named like {search.pattern.pattern}")
        for candidate in candidates:
            found = search.accept(candidate, origin=origin, in_cache=False)
            if found:
                return found
        return None
    if path.is_file():
        return search.accept(path, origin=origin, in_cache=False)
    search.tried.append(f"{entry}: does not exist")
    return None


def _from_upstream(request: RuntimeRequest, search: _Search) -> tuple[RuntimeArchive | None, str]:
    try:
        import pbs_installer
    except ImportError:
        return None, "pbs-installer is not installed"
    pbs_platform, pbs_arch = _PBS_PLATFORMS[request.platform]
    try:
        version, (url, checksum) = pbs_installer.get_download_link(
            request.version,
            arch=pbs_arch,
            platform=pbs_platform,
            implementation=request.implementation,  # type: ignore[arg-type]
        )
    except ValueError:
        return None, (
            f"python-build-standalone (per pbs-installer) has no build of {request.describe()}"
        )
    if Version(f"{version.major}.{version.minor}.{version.micro}") != Version(request.version):
        return None, f"pbs-installer offers {version}, not {request.version}"
    filename = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    if search.expected and checksum and checksum != search.expected:
        search.mismatches.append((url, checksum))
        return None, f"{url} has sha256 {checksum} (expected {search.expected})"
    wanted = search.expected or checksum
    log.info("downloading %s", url)
    path = _download(
        url, filename, wanted, "the python-build-standalone archive", source="GitHub",
        hint=(
            f"{build_hint(request)}, or set {SOURCES_ENV} to an install_only archive or a folder "
            "(mirror) of them"
        ),
    )
    if not search.pattern.match(filename):
        # pbs-installer also knows non-install_only artefacts (e.g. PyPy); accept them by URL
        sha = path.parent.name
        return RuntimeArchive(path=path, sha256=sha, filename=filename, origin="upstream"), ""
    found = search.accept(path, origin="upstream", in_cache=True)
    return found, ""


def acquire_runtime(
    request: RuntimeRequest,
    *,
    sources: Sequence[str] = (),
    expected_sha256: str | None = None,
    offline: bool = False,
) -> RuntimeArchive:
    """Find the runtime archive for ``request`` (see the module docstring for the order)."""
    _validate(request)
    expected = expected_sha256.lower().removeprefix("sha256:") if expected_sha256 else None
    if expected is not None and not _SHA256.match(expected):
        raise RuntimeArchiveError(f"expected runtime sha256 {expected_sha256!r} is not a sha256 hex digest")
    search = _Search(request, expected)

    entries: list[str] = [*sources, *_env_sources()]
    for entry in entries:
        found = _from_source(entry.strip(), search)
        if found:
            log.info("runtime %s from %s", found.filename, entry)
            return found

    for path in _cached_candidates(request, expected):
        found = search.accept(path, origin="cache", in_cache=True)
        if found:
            return found
    search.tried.append(f"cache {runtimes_dir()}: no usable match")
    if expected:
        # an archive of the same version with another hash (e.g. built on a machine with
        # other package versions) is worth naming: the fix is then to relock
        for path in _cached_candidates(request, None):
            search.mismatches.append((str(path), path.parent.name))

    upstream_note: str | None = None
    if not offline:
        found, upstream_note = _from_upstream(request, search)
        if found:
            return found
    raise search.failure(offline, upstream_note or None)


# --------------------------------------------------------------------------- extraction


def extract_runtime(archive: Path, dest: Path) -> None:
    """Unpack the contents of the archive's ``python/`` folder into ``dest``.

    Goes through the same safe extractor as layer archives
    (:func:`venvstacks_docker.extract.extract_tree`): the runtime is unpacked into a
    fresh staging folder next to ``dest`` and renamed into place when complete, and
    anything that could write outside ``dest`` or replace a file the extraction did
    not create is refused with ``RuntimeArchiveError``: absolute member names, ``..``
    components, members outside ``python/``, special files, duplicate names, members
    below a symlink, hard links other than to an earlier file of the archive, and
    symlinks that leave ``dest``.  Symlinks and executable bits are preserved.
    ``dest`` must not exist or be empty.
    """
    archive = Path(archive)
    dest = Path(dest)
    if not archive.is_file():
        raise RuntimeArchiveError(f"runtime archive {archive} does not exist")
    if os.path.lexists(dest) and (not dest.is_dir() or dest.is_symlink() or any(dest.iterdir())):
        raise RuntimeArchiveError(
            f"cannot unpack the runtime into {dest}: it exists and is not an empty folder",
            hint="remove it or choose another destination",
        )
    extract_tree(archive, dest, top="python", error=RuntimeArchiveError)
