"""``bundle`` on sample_project, and a native publish from the bundle with no network at all.

The offline side runs in a network namespace of its own (``unshare -n``: only a
loopback interface, which is down), with an empty tool cache and an empty uv cache, so
anything that tries the network fails the run.  Its archives must equal those of the
connected publish of the same lock (the ``published_sample`` fixture).  The container
variant, which also loads the builder image from the bundle, is in
``tests/docker/test_bundle_offline.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import Published, cli, copy_sample

from venvstacks_docker import bundle_use

pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.runtime]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.xz"))}


def offline(*args: str | os.PathLike[str], home: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a network namespace of its own, with empty caches below ``home``."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to run the offline side without a network")
    env = {**os.environ, "VENVSTACKS_DOCKER_CACHE": str(home / "cache"), "UV_CACHE_DIR": str(home / "uv"),
           "HOME": str(home), "XDG_CACHE_HOME": str(home / "xdg")}
    for var in ("VENVSTACKS_DOCKER_RUNTIME_SOURCES", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "PIP_INDEX_URL"):
        env.pop(var, None)
    return subprocess.run(["unshare", "--net", "--", sys.executable, "-m", "venvstacks_docker", *map(str, args)],
                          capture_output=True, text=True, env=env, check=False)


def test_no_network_in_the_offline_namespace(tmp_path: Path) -> None:
    # the namespace really has no network: the same probe works outside it
    probe = [sys.executable, "-c", "import socket; socket.create_connection(('pypi.org', 443), timeout=5)"]
    inside = subprocess.run(["unshare", "--net", "--", *probe], capture_output=True, text=True, check=False)
    assert inside.returncode != 0 and ("gaierror" in inside.stderr or "unreachable" in inside.stderr.lower())


@pytest.fixture(scope="module")
def bundle(published_sample: Published, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the published sample's stack (no builder image: the native side)."""
    out = tmp_path_factory.mktemp("bundle") / "sample.bundle.tar"
    cli("bundle", published_sample.spec, "-o", out, "--no-image")
    return out


def test_two_bundles_of_the_same_lock_are_byte_identical(bundle: Path, published_sample: Published,
                                                         tmp_path: Path) -> None:
    again = tmp_path / "again.tar"
    cli("bundle", published_sample.spec, "-o", again, "--no-image")
    assert again.read_bytes() == bundle.read_bytes()
    checked = bundle_use.verify(bundle)
    roles = {e.role for e in checked.entries}
    assert roles == {"stack", "wheel", "runtime", "tool-wheel"}
    tool = [e.name for e in checked.entries if e.role == "tool-wheel"]
    assert any(n.startswith("tool/venvstacks_docker-") for n in tool) and any("typer" in n for n in tool)
    numpy = next(e for e in checked.entries if e.name.startswith("wheels/numpy-"))  # the runtime layer's
    assert numpy.layers == ("cpython-3.11",) and numpy.platforms == ("linux_x86_64",)
    sklearn = next(e for e in checked.entries if e.name.startswith("wheels/scikit_learn-"))
    assert sklearn.layers == ("framework-sklearn",)


def test_offline_publish_from_the_bundle_gives_the_connected_bytes(bundle: Path, published_sample: Published,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "offline out"
    result = offline("publish", "--native", "--from-bundle", bundle, "--output-dir", out,
                     "--build-dir", tmp_path / "offline build", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert digests(out) == digests(published_sample.output_dir)
    assert cli("verify", out).returncode == 0
    # nothing was written next to the bundle or into the caller's folders
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]


def test_the_unpacked_bundle_and_the_users_stack_file_work_too(bundle: Path, published_sample: Published,
                                                              tmp_path: Path) -> None:
    unpacked = tmp_path / "unpacked"
    cli("bundle", "unpack", bundle, "-o", unpacked)
    spec = copy_sample(tmp_path / "checkout")
    out = tmp_path / "out"
    result = offline("build", "--native", "--publish", spec, "--from-bundle", unpacked, "--output-dir", out,
                     "--include", "app-report-demo", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    expected = {k: v for k, v in digests(published_sample.output_dir).items() if k.startswith("app-report-demo")}
    assert {k: v for k, v in digests(out).items() if k in expected} == expected


def test_a_stack_whose_lock_changed_does_not_take_the_bundle(bundle: Path, tmp_path: Path) -> None:
    spec = copy_sample(tmp_path / "checkout")
    pylock = spec.parent / "requirements" / "framework-reporting" / "pylock.framework-reporting.toml"
    meta = pylock.with_name("pylock.framework-reporting.meta.json")
    data = json.loads(meta.read_text())
    data["requirements_hash"] = "sha256:" + "0" * 64  # as if relocked to other content
    meta.write_text(json.dumps(data))
    result = cli("publish", "--native", spec, "--from-bundle", bundle, check=False)
    assert result.returncode in (3, 14), result.stderr
    assert "Traceback" not in result.stderr


def test_a_stale_lock_is_not_bundled(tmp_path: Path) -> None:
    spec = copy_sample(tmp_path / "checkout")
    text = spec.read_text()
    spec.write_text(text.replace('"tabulate', '"tabulate>=0.1', 1))
    result = cli("bundle", spec, "-o", tmp_path / "x.tar", check=False)
    assert result.returncode == 3, result.stderr
    assert "cannot bundle layers whose lock is missing or out of date" in result.stderr
    assert "framework-reporting" in result.stderr and not (tmp_path / "x.tar").exists()


def test_include_bundles_only_those_layers_and_what_they_need(published_sample: Published, tmp_path: Path) -> None:
    result = cli("bundle", published_sample.spec, "-o", tmp_path / "p.tar", "--include", "app-report-demo",
                 "--show-only", "--json")
    plan = json.loads(result.stdout)
    assert plan["layers"] == ["cpython-3.11", "framework-sklearn", "framework-reporting", "app-report-demo"]
    only_runtime = json.loads(cli("bundle", published_sample.spec, "-o", tmp_path / "r.tar", "--include",
                                  "cpython-*", "--show-only", "--json").stdout)
    assert only_runtime["layers"] == ["cpython-3.11"]
    assert not any(f["name"].startswith("wheels/scikit_learn-") for f in only_runtime["files"])


def test_since_carries_only_what_changed_and_the_pair_unpacks_whole(bundle: Path, published_sample: Published,
                                                                    tmp_path: Path) -> None:
    spec = copy_sample(tmp_path / "checkout")
    module = spec.parent / "launch_modules" / "sklearn_clustering.py"
    module.write_text(module.read_text() + "# edited\n")
    new = tmp_path / "new.tar"
    # (--no-tool: the tool's own wheel is built from this checkout, which may be edited while tests run)
    cli("bundle", spec, "-o", new, "--no-image", "--no-tool", "--since", bundle)
    checked = bundle_use.verify(new)
    carried = [e.name for e in checked.entries if not e.in_base]
    assert carried == ["stack/launch_modules/sklearn_clustering.py"]
    assert checked.since == bundle_use.verify(bundle).manifest_sha256
    assert new.stat().st_size < 100_000
    both = tmp_path / "both"
    cli("bundle", "unpack", bundle, new, "-o", both)
    assert module.read_bytes() == (both / "stack" / "launch_modules" / "sklearn_clustering.py").read_bytes()
    assert not (both / "tool").exists()  # the newer bundle no longer lists the tool's wheels
    assert bundle_use.verify(both).manifest_sha256 == checked.manifest_sha256
    alone = cli("bundle", "unpack", new, "-o", tmp_path / "alone", check=False)
    assert alone.returncode == 14 and "unpack that bundle together with it" in alone.stderr
    assert not (tmp_path / "alone").exists()


def test_the_tool_installs_from_the_bundle_with_no_network(bundle: Path, tmp_path: Path) -> None:
    # the two commands of docs/how-to/air-gapped-hosts.md, in a network namespace of its own
    from venvstacks_docker import __version__

    subprocess.run(["tar", "-xf", str(bundle), "venvstacks-bundle/tool"], cwd=tmp_path, check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(["unshare", "--net", "--", str(venv / "bin" / "python"), "-m", "pip", "install",
                              "--no-index", "--find-links", str(tmp_path / "venvstacks-bundle" / "tool"),
                              "venvstacks-docker"], capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    version = subprocess.run([str(venv / "bin" / "venvstacks-docker"), "--version"], capture_output=True,
                             text=True, check=True)
    assert version.stdout.strip() == f"venvstacks-docker {__version__}"
