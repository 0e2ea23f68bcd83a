"""Copy mode: a builder container on an engine that cannot see this machine's files.

A remote engine (``DOCKER_HOST=ssh://...``, ``tcp://...``, another docker context), or
any engine with ``--transfer copy``, gets no bind mounts.  Everything crosses through
the Engine API instead, and the container still sees every path where the host has it,
so messages, lock files and metadata read the same as in mount mode:

- **in**, before the container starts (:meth:`CopySession.__enter__`): the stack file,
  ``venvstacks.uv.toml``, ``requirements/``, the launch and support modules, local wheel
  folders, local runtime sources and an unpacked bundle go into per-run volumes
  mounted read-only at their host folders (``requirements/`` writable when locking);
  the wheels and runtime archives the plan needs go into the engine's content-addressed
  store (only those it lacks), and the run's own volume gets the plan and a view of the
  store laid out as the tool's cache; the build folder, the uv cache and the output
  folder are per-project volumes kept between runs (:mod:`~venvstacks_docker.host.volumes`,
  :mod:`~venvstacks_docker.host.transfer_output`);
- **out**, after it ends (:meth:`CopySession.bring_back`): the lock files when locking,
  the publication (transactionally, verified against its metadata) when publishing,
  the exported environments for ``local-export``.  The built environments stay in the
  engine's build volume, where the next ``build``, ``publish`` or ``local-export`` in
  copy mode finds them.

Every tar is written in a fixed order with fixed owners (:mod:`~venvstacks_docker.host.transfer_tar`).
Per-run volumes are removed when the run ends, whatever happened; those of a run that
was killed are removed by the next one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker import _testhooks, ui
from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.container import VolumeMount
from venvstacks_docker.host.ownership import sandbox_user
from venvstacks_docker.host.transfer_back import bring_back_export, bring_back_requirements
from venvstacks_docker.host.transfer_output import (
    bring_back_publication,
    host_listing,
    mirror_is_current,
    publication_entries,
    record_entries,
)
from venvstacks_docker.host.transfer_tar import Entry, tar_stream, tree_entries
from venvstacks_docker.host.volumes import (
    STORE_VOLUME,
    Porter,
    engine_errors,
    ensure_volume,
    porter,
    project_volume,
    remove_orphan_volumes,
    remove_volume,
    run_volume,
    volume_labels,
)
from venvstacks_docker.locking import RUN_ID, cache_lock
from venvstacks_docker.metadata import sha256_file

if TYPE_CHECKING:
    import docker

    from venvstacks_docker.plan import Plan
    from venvstacks_docker.spec import StackSpec

#: The run's own volume (the plan, the cache's view of the store, credentials).
RUN_ROOT: Final = "/run/venvstacks-docker/run"
#: The engine's content-addressed store of wheels and runtime archives.
STORE_ROOT: Final = "/run/venvstacks-docker/store"
#: ``VENVSTACKS_DOCKER_CACHE`` inside a copy-mode container.
CACHE_ROOT: Final = f"{RUN_ROOT}/cache"
PLAN_PATH: Final = f"{RUN_ROOT}/plan.json"
NETRC_PATH: Final = f"{RUN_ROOT}/netrc"
CA_PATH: Final = f"{RUN_ROOT}/ca-certificates.crt"


@dataclass(frozen=True, kw_only=True)
class CacheFile:
    """A wheel or runtime archive of the host's cache that the plan needs."""

    filename: str
    sha256: str
    path: Path
    kind: str
    """``wheel`` or ``runtime``."""


@dataclass(frozen=True, kw_only=True)
class _Volume:
    mount: VolumeMount
    kind: str
    per_run: bool


def anchors(paths: Sequence[Path]) -> list[Path]:
    """The fewest folders holding every path: a folder for itself, a file's folder."""
    folders = sorted({Path(os.path.normpath(p if p.is_dir() else p.parent)) for p in paths},
                     key=lambda p: (len(p.parts), str(p)))
    chosen: list[Path] = []
    for folder in folders:
        if not any(folder == c or c in folder.parents for c in chosen):
            chosen.append(folder)
    return sorted(chosen)


class CopySession:
    """The volumes of one copy-mode run: filled on entry, emptied by :meth:`bring_back`,
    the per-run ones removed on exit.

    :param inputs: host files and folders the container reads (at their paths).
    :param cache_files: wheels and runtime archives the plan needs from the cache.
    :param secrets: file name in the run's volume -> bytes (netrc, CA bundle), private
        to the container's user.
    """

    def __init__(self, client: docker.DockerClient, *, where: str, image_id: str, spec: StackSpec, plan: Plan,
                 inputs: Sequence[Path], cache_files: Sequence[CacheFile], secrets: Mapping[str, bytes]) -> None:
        self.client, self.where, self.image_id = client, where, image_id
        self.spec, self.plan = spec, plan
        self.inputs = [Path(os.path.normpath(p)) for p in inputs]
        self.cache_files = list(cache_files)
        self.secrets = dict(secrets)
        self.uid, self.gid = sandbox_user()
        self.volumes = self._volumes()
        self.uploaded_requirements: dict[str, bytes] = {}
        self.listing: dict[str, str] = {}
        """The host's publication when the run started (relative path -> sha256)."""

    # -- the volumes -----------------------------------------------------------------

    def _volumes(self) -> list[_Volume]:
        from venvstacks_docker.host.orchestrator import same_path_mounts

        plan, uid = self.plan, self.uid
        found = [_Volume(mount=VolumeMount(STORE_VOLUME, STORE_ROOT, True), kind="store", per_run=False),
                 _Volume(mount=VolumeMount(run_volume("run", 0, RUN_ID), RUN_ROOT, True), kind="run", per_run=True),
                 _Volume(mount=VolumeMount(project_volume("uv", self.spec.path, uid), f"{CACHE_ROOT}/uv", False),
                         kind="uv", per_run=False),
                 _Volume(mount=VolumeMount(project_volume("build", plan.build_dir, uid), str(plan.build_dir), False),
                         kind="build", per_run=False)]
        if plan.output_dir is not None:
            kind = "export" if plan.command == "local-export" else "output"
            found.append(_Volume(mount=VolumeMount(project_volume(kind, plan.output_dir, uid), str(plan.output_dir),
                                                   False), kind=kind, per_run=False))
        for folder in (plan.build_dir, plan.output_dir):
            if folder is not None and folder.exists():
                same_path_mounts({folder: False})  # the same folders are refused as in mount mode
        folders = anchors(self.inputs)
        if plan.lock:
            folders.append(self.spec.requirements_dir.absolute())
        for index, folder in enumerate(folders, start=1):
            same_path_mounts({folder: True})  # refuses /, /usr, /tmp... as in mount mode
            writable = plan.lock and folder == self.spec.requirements_dir.absolute()
            found.append(_Volume(mount=VolumeMount(run_volume("input", index, RUN_ID), str(folder), not writable),
                                 kind="input", per_run=True))
        return found

    @property
    def mounts(self) -> list[VolumeMount]:
        """The builder container's volumes."""
        return [v.mount for v in self.volumes]

    def _by_kind(self, *kinds: str) -> list[VolumeMount]:
        return [v.mount for v in self.volumes if v.kind in kinds]

    def environment(self) -> dict[str, str]:
        """What the container's environment says differently in copy mode."""
        env = {"VENVSTACKS_DOCKER_CACHE": CACHE_ROOT, "UV_CACHE_DIR": f"{CACHE_ROOT}/uv"}
        if "netrc" in self.secrets:
            env["NETRC"] = NETRC_PATH
        if "ca-certificates.crt" in self.secrets:
            env["SSL_CERT_FILE"] = CA_PATH
        return env

    # -- in --------------------------------------------------------------------------

    def __enter__(self) -> CopySession:
        from venvstacks_docker.host.orphans import remove_orphans

        reporter = ui.current()
        with engine_errors(self.where, "removing what killed runs left"):
            remove_orphans(self.client)  # first the containers (a killed run's porter), then their volumes
        remove_orphan_volumes(self.client)
        try:
            with engine_errors(self.where, "creating volumes"):
                for volume in self.volumes:
                    mirrors = {"store": None, "run": None, "uv": str(self.spec.path)}
                    labels = volume_labels(volume.kind, mirrors.get(volume.kind, volume.mount.container_path),
                                           owned=volume.per_run)
                    ensure_volume(self.client, volume.mount.volume, labels)
            with reporter.phase("copying the inputs to the engine"):
                self._fill()
        except BaseException:
            self._remove_run_volumes()
            raise
        return self

    def _fill(self) -> None:
        out = self.plan.output_dir
        output = self._by_kind("output", "export")
        listing = host_listing(out) if out is not None and self.plan.command != "local-export" else {}
        self.listing = listing
        with porter(self.client, self.image_id, [*self._by_kind("store"), *output], self.where) as box:
            self._fill_store(box)
            fresh = not output or self.plan.command == "local-export" or \
                (out is not None and not mirror_is_current(box, out, listing))
        if fresh and output and self.plan.command != "local-export":
            ui.current().detail(f"the engine's copy of {out} is not the host's: making it anew")
            with engine_errors(self.where, "making the output folder's volume anew"):
                remove_volume(self.client, output[0].volume)
                ensure_volume(self.client, output[0].volume, volume_labels("output", out))
        entries = self._entries(fresh=fresh, listing=listing)
        mounts = [v.mount for v in self.volumes if v.kind != "store"]
        with porter(self.client, self.image_id, mounts, self.where) as box:
            _testhooks.pause("transfer-upload")
            box.put("/", tar_stream(entries, uid=self.uid, gid=self.gid), "copying the inputs to the engine")

    def _fill_store(self, box: Porter) -> None:
        """Put the wheels and runtime archives the store lacks (under this host's lock)."""
        key = hashlib.sha256(self.where.encode()).hexdigest()[:16]
        with cache_lock(f"engine-store-{key}"):
            missing = [f for f in self.cache_files
                       if box.size(f"{STORE_ROOT}/{f.sha256}/{f.filename}") != f.path.stat().st_size]
            if not missing:
                return
            entries = []
            for item in missing:
                if sha256_file(item.path) != item.sha256:
                    raise ContainerError(f"{item.path} no longer has the sha256 {item.sha256} it had when it was "
                                         "fetched", hint="remove it from the cache and run again")
                folder = f"{STORE_ROOT}/{item.sha256}".lstrip("/")
                entries += [Entry(name=folder, kind="dir"),
                            Entry(name=f"{folder}/{item.filename}", kind="file", source=item.path, mode=0o644)]
            size = sum(f.path.stat().st_size for f in missing)
            ui.current().detail(f"copying {len(missing)} wheel(s) and runtime(s) to the engine's store "
                                f"({ui.human_size(size)})")
            box.put("/", tar_stream(entries, uid=0, gid=0), "copying wheels and runtimes to the engine")

    def _entries(self, *, fresh: bool, listing: dict[str, str]) -> list[Entry]:
        from venvstacks_docker.metadata import dumps

        entries = [Entry(name=v.mount.container_path.lstrip("/"), kind="dir") for v in self.volumes
                   if v.kind != "store"]
        run = RUN_ROOT.lstrip("/")
        entries.append(Entry(name=f"{run}/plan.json", kind="file", data=dumps(self.plan.to_dict()).encode()))
        entries += [Entry(name=f"{run}/{name}", kind="file", data=data,
                          mode=0o600 if name == "netrc" else 0o644) for name, data in self.secrets.items()]
        entries += self._cache_view()
        for path in self.inputs:
            entries += tree_entries(path)
        if self.plan.lock:
            req = self.spec.requirements_dir.absolute()
            self.uploaded_requirements = {e.name: e.source.read_bytes() for e in tree_entries(req)
                                          if e.kind == "file" and e.source is not None}
        out = self.plan.output_dir
        if out is not None and self.plan.command != "local-export":
            if fresh:
                entries += publication_entries(out)
            entries += record_entries(out, listing, busy=True)
        return entries

    def _cache_view(self) -> list[Entry]:
        """The cache as the tool expects it, each file a link into the store."""
        cache = CACHE_ROOT.lstrip("/")
        entries = [Entry(name=f"{cache}/wheels", kind="dir"), Entry(name=f"{cache}/runtimes", kind="dir")]
        for item in self.cache_files:
            stored = f"{STORE_ROOT}/{item.sha256}/{item.filename}"
            if item.kind == "wheel":
                entries.append(Entry(name=f"{cache}/wheels/{item.filename}", kind="symlink", target=stored))
            else:
                entries += [Entry(name=f"{cache}/runtimes/{item.sha256}", kind="dir"),
                            Entry(name=f"{cache}/runtimes/{item.sha256}/{item.filename}", kind="symlink",
                                  target=stored)]
        return entries

    # -- out -------------------------------------------------------------------------

    def bring_back(self, outcome: Any | None, *, failed: bool = False) -> None:
        """Copy back what the run changed: lock files; then (after a success) the
        publication or the export."""
        plan = self.plan
        mounts = self._by_kind("output", "export") + [v.mount for v in self.volumes if v.kind == "input"
                                                      and not v.mount.read_only]
        with porter(self.client, self.image_id, mounts, self.where) as box:
            if plan.lock:
                bring_back_requirements(box, self.spec.requirements_dir.absolute(), self.uploaded_requirements)
            if failed or plan.output_dir is None:
                return
            if plan.command == "local-export":
                bring_back_export(box, plan.output_dir, (outcome.exported or {}) if outcome else {})
                return
            listing = self.listing
            if plan.writes_output:
                with ui.current().phase("copying the publication back from the engine"):
                    listing = bring_back_publication(box, plan.output_dir, ui.current().detail, listing)
            # the volume and the host's folder hold the same publication again
            box.put("/", tar_stream(record_entries(plan.output_dir, listing, busy=False), uid=self.uid, gid=self.gid),
                    "recording the output folder's copy")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._remove_run_volumes()

    def _remove_run_volumes(self) -> None:
        for volume in self.volumes:
            if volume.per_run:
                remove_volume(self.client, volume.mount.volume)


__all__ = [
    "CACHE_ROOT",
    "CA_PATH",
    "NETRC_PATH",
    "PLAN_PATH",
    "RUN_ROOT",
    "STORE_ROOT",
    "CacheFile",
    "CopySession",
    "anchors",
]
