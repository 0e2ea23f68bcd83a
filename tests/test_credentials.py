"""Private indexes with HTTP basic auth: lock and build natively, secrets kept out of
locks, archives, logs and container environments.

Real HTTP servers (tests/_private_index.py) serving real wheels from PyPI, real uv,
the real runtime archive; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import netrc
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import cli
from _private_index import PrivateIndex, assert_secret_nowhere, cached_wheels, private_index

from venvstacks_docker import credentials as _cred
from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import BuildError, LockError
from venvstacks_docker.wheels import WheelRef, ensure_wheels

pytestmark = pytest.mark.network  # the served wheels come from PyPI (cached after the first run)

TABULATE = "tabulate-0.9.0-py3-none-any.whl"


# --- helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels() -> list[Path]:
    return cached_wheels()


@pytest.fixture
def index(wheels: list[Path]) -> Iterator[PrivateIndex]:
    with private_index(wheels=wheels) as idx:
        yield idx


def tabulate_ref(idx: PrivateIndex, wheels: list[Path], *, url: str | None = None) -> WheelRef:
    wheel = next(w for w in wheels if w.name == TABULATE)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return WheelRef(filename=TABULATE, sha256=sha, url=url or f"http://127.0.0.1:{idx.port}/files/{TABULATE}")


def cred_for(idx: PrivateIndex, *, host: str = "127.0.0.1", password: str | None = None) -> _cred.Credential:
    return _cred.Credential(host=host, port=idx.port, scheme="http", username=idx.username,
                            password=password or idx.password, source="a test")


def clean_environ() -> dict[str, str]:
    """os.environ without any index settings, credentials or netrc of the caller."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("UV_INDEX") and k not in _cred.INDEX_URL_VARIABLES and k != "NETRC"}


# --- unit level (real files, real servers) ----------------------------------------------


def test_index_names_become_variable_names_as_in_uv() -> None:
    assert _cred.env_var_name("internal-proxy") == "INTERNAL_PROXY"
    assert _cred.env_var_name("my.Index_2") == "MY_INDEX_2"


def test_credentials_are_found_where_uv_finds_them_in_its_order(tmp_path: Path) -> None:
    rc = tmp_path / "netrc"
    rc.write_text("machine netrc.example login nuser password npass-1234\n"
                  "machine named.example login wrong password not-this-one\n")
    config = {
        "index": [{"name": "private", "url": "https://named.example/simple"},
                  {"name": "both", "url": "https://urluser:urlpass-1234@both.example:8443/simple"},
                  {"name": "bare", "url": "https://netrc.example/simple"},
                  {"name": "local", "url": "/some/folder", "format": "flat"}],
        "extra-index-url": ["http://xuser:xpass-1234@extra.example/simple"],
    }
    environ = {
        "NETRC": str(rc),
        "UV_INDEX_PRIVATE_USERNAME": "envuser", "UV_INDEX_PRIVATE_PASSWORD": "envpass-1234",
        "UV_INDEX_BOTH_USERNAME": "envboth", "UV_INDEX_BOTH_PASSWORD": "envboth-1234",
        "UV_INDEX": "team=https://tuser:tpass-1234@team.example/simple https://plain.example/simple",
        "UV_INDEX_TEAM_PASSWORD": "teampass-from-env",
    }
    found = {c.host: c for c in _cred.collect_credentials(config, environ=environ)}
    assert sorted(found) == ["both.example", "extra.example", "named.example", "netrc.example", "team.example"]
    # a named index's variables win over the URL's userinfo and over netrc
    assert (found["named.example"].username, found["named.example"].password) == ("envuser", "envpass-1234")
    assert found["named.example"].source == "UV_INDEX_PRIVATE_USERNAME/_PASSWORD"
    assert (found["both.example"].username, found["both.example"].port) == ("envboth", 8443)
    # a named index's variables replace the URL's userinfo as a whole, as in uv
    assert (found["team.example"].username, found["team.example"].password) == ("", "teampass-from-env")
    assert (found["extra.example"].username, found["extra.example"].password) == ("xuser", "xpass-1234")
    assert "extra-index-url" in found["extra.example"].source
    assert (found["netrc.example"].username, found["netrc.example"].password) == ("nuser", "npass-1234")
    assert found["netrc.example"].port == 443 and str(rc) in found["netrc.example"].source
    assert "npass-1234" not in repr(found["netrc.example"])  # repr hides the secret


def test_netrc_rendering_round_trips_through_a_netrc_parser(tmp_path: Path) -> None:
    creds = [
        _cred.Credential(host="a.example", port=443, scheme="https", username="u1", password="p1-secret"),
        _cred.Credential(host="b.example", port=8080, scheme="http", username="__token__", password="tok:en/1+2="),
        _cred.Credential(host="a.example", port=8443, scheme="https", username="other", password="ignored-1"),
    ]
    text = _cred.render_netrc(creds)
    path = tmp_path / "netrc"
    path.write_text(text)
    parsed = netrc.netrc(str(path)).hosts
    assert parsed == {"a.example": ("u1", "", "p1-secret"), "b.example": ("__token__", "", "tok:en/1+2=")}
    bad = _cred.Credential(host="c.example", port=443, scheme="https", username="u", password="has space")
    with pytest.raises(ValueError, match=r"c\.example") as info:
        _cred.render_netrc([bad])
    assert "has space" not in str(info.value)


def test_container_environment_strips_userinfo_and_drops_credential_variables() -> None:
    environ = {
        "UV_INDEX_URL": "https://user:pw-1234@idx.example/simple",
        "UV_EXTRA_INDEX_URL": "https://a:b-1234@one.example/simple https://two.example/simple",
        "UV_INDEX": "team=https://t:tt-1234@team.example/simple",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
        "UV_INDEX_TEAM_USERNAME": "t", "UV_INDEX_TEAM_PASSWORD": "tt-1234",
        "HOME": "/root", "UV_CACHE_DIR": "/x",
    }
    assert _cred.container_environment(environ) == {
        "UV_INDEX_URL": "https://idx.example/simple",
        "UV_EXTRA_INDEX_URL": "https://one.example/simple https://two.example/simple",
        "UV_INDEX": "team=https://team.example/simple",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
    }


def test_redact_hides_userinfo_and_known_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_INDEX_CORP_PASSWORD", "corp-Secret/42")
    text = ("GET https://alice:hunter2-xyz@idx.example/simple failed; token __token__@files.example; "
            "uv says http://alice:****@127.0.0.1:8080/simple; password corp-Secret/42 (corp-Secret%2F42); "
            "the extra one is extra-secret-1")
    out = _cred.redact(text, secrets=["extra-secret-1", "ab"])
    assert out == ("GET https://***@idx.example/simple failed; token __token__@files.example; "
                   "uv says http://***@127.0.0.1:8080/simple; password *** (***); the extra one is ***")
    assert _cred.redact("plain https://pypi.org/simple text") == "plain https://pypi.org/simple text"


def test_wheel_fetch_sends_credentials_to_their_host_only(tmp_path: Path, wheels: list[Path]) -> None:
    with private_index(wheels=wheels) as a, private_index(wheels=wheels) as b:
        creds = [cred_for(a)]
        ensure_wheels([tabulate_ref(a, wheels)], tmp_path / "a", credentials=creds)
        assert [(r.had_auth, r.authorized) for r in a.fetcher_downloads()] == [(True, True)]
        with pytest.raises(BuildError) as info:  # same host, another port: another server
            ensure_wheels([tabulate_ref(b, wheels)], tmp_path / "b", credentials=creds)
        assert not any(r.had_auth for r in b.requests)
        message = str(info.value)
        assert f"127.0.0.1:{b.port} wants credentials and none were found" in message
        assert "UV_INDEX_<NAME>_USERNAME" in message and "netrc" in message
        assert a.password not in message and not (tmp_path / "b" / TABULATE).exists()


def test_redirects_keep_credentials_on_the_host_and_drop_them_elsewhere(tmp_path: Path,
                                                                       wheels: list[Path]) -> None:
    with private_index(wheels=wheels, require_auth=False) as b, private_index(wheels=wheels) as a:
        a.redirects["/files/elsewhere.whl"] = f"http://127.0.0.1:{b.port}/files/{TABULATE}"
        a.redirects["/files/same-host.whl"] = f"/files/{TABULATE}"
        creds = [cred_for(a)]
        ensure_wheels([tabulate_ref(a, wheels, url=f"http://127.0.0.1:{a.port}/files/same-host.whl")],
                      tmp_path / "same", credentials=creds)
        assert [(r.path, r.authorized) for r in a.fetcher_downloads()] == [
            ("/files/same-host.whl", True), (f"/files/{TABULATE}", True)]
        ensure_wheels([tabulate_ref(a, wheels, url=f"http://127.0.0.1:{a.port}/files/elsewhere.whl")],
                      tmp_path / "other", credentials=creds)
        assert [(r.path, r.had_auth) for r in b.requests] == [(f"/files/{TABULATE}", False)]
        assert (tmp_path / "other" / TABULATE).exists()


def test_userinfo_in_a_wheel_url_is_used_for_that_url(tmp_path: Path, index: PrivateIndex,
                                                      wheels: list[Path]) -> None:
    url = f"http://{index.username}:{index.password}@127.0.0.1:{index.port}/files/{TABULATE}"
    ensure_wheels([tabulate_ref(index, wheels, url=url)], tmp_path, credentials=[])
    assert [r.authorized for r in index.fetcher_downloads()] == [True]


def test_rejected_credentials_are_a_clear_error_without_the_secret(tmp_path: Path, index: PrivateIndex,
                                                                    wheels: list[Path]) -> None:
    wrong = cred_for(index, password="wrong-password-123")
    with pytest.raises(BuildError) as info:
        ensure_wheels([tabulate_ref(index, wheels)], tmp_path, credentials=[wrong])
    message = str(info.value)
    assert "HTTP 401" in message and "rejected the credentials from a test" in message
    assert "wrong-password-123" not in message and index.password not in message


def test_netrc_machine_entries_apply_to_wheel_hosts_but_never_the_default_entry(
        tmp_path: Path, index: PrivateIndex, wheels: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    rc = tmp_path / "netrc"
    rc.write_text(f"default login {index.username} password {index.password}\n")
    monkeypatch.setenv("NETRC", str(rc))
    with pytest.raises(BuildError, match="wants credentials"):
        ensure_wheels([tabulate_ref(index, wheels)], tmp_path / "w1", credentials=[])
    assert not any(r.had_auth for r in index.requests)
    rc.write_text(f"machine 127.0.0.1 login {index.username} password {index.password}\n")
    ensure_wheels([tabulate_ref(index, wheels)], tmp_path / "w2", credentials=[])
    assert [r.authorized for r in index.fetcher_downloads()] == [False, True]


# --- end to end: lock, build and publish natively -------------------------------------------

STACK = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []
platforms = ["linux_x86_64"]

[[applications]]
name = "app"
launch_module = "app.py"
runtime = "cpython-3.11"
requirements = ["tabulate"]
"""

NAMED_INDEX = """
[[tool.uv.index]]
name = "private"
url = "{url}"
default = true
"""


def make_stack(folder: Path, index_url: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text("import tabulate\nprint(tabulate.tabulate([[1, 2]]))\n")
    text = textwrap.dedent(STACK) + (textwrap.dedent(NAMED_INDEX).format(url=index_url) if index_url else "")
    path = folder / "venvstacks.toml"
    path.write_text(text)
    return path


def isolated_env(tmp_path: Path, runtime_archive: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without index settings, with a cache of its own (so the
    wheels really are fetched) that finds the real runtime archive as a source."""
    env = clean_environ()
    env.update({"VENVSTACKS_DOCKER_CACHE": str(tmp_path / "cache"), "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
                "VENVSTACKS_DOCKER_RUNTIME_SOURCES": str(runtime_archive)})
    env.update(extra)
    return env


def pylock_text(spec_path: Path) -> str:
    return (spec_path.parent / "requirements" / "app-app" / "pylock.app-app.toml").read_text()


@pytest.mark.slow
@pytest.mark.runtime
def test_env_credentials_lock_build_and_publish_without_leaking(tmp_path: Path, runtime_archive: Path,
                                                                index: PrivateIndex) -> None:
    spec_path = make_stack(tmp_path / "stack", index.url)
    env = isolated_env(tmp_path, runtime_archive, UV_INDEX_PRIVATE_USERNAME=index.username,
                       UV_INDEX_PRIVATE_PASSWORD=index.password)
    locked = cli("-vv", "lock", "--native", spec_path, env=env)
    assert f'index = "http://127.0.0.1:{index.port}/simple"' in pylock_text(spec_path)
    assert any(r.authorized for r in index.requests if r.agent.startswith("uv/"))
    built = cli("-v", "build", "--native", "--publish", spec_path, env=env)
    downloads = index.fetcher_downloads()
    assert downloads and all(r.authorized for r in downloads), index.requests
    assert list((spec_path.parent / "_artifacts").glob("app-app*.tar.xz"))
    assert_secret_nowhere(index.password, spec_path.parent, locked.stdout, locked.stderr,
                          built.stdout, built.stderr)


@pytest.mark.slow
@pytest.mark.runtime
def test_a_netrc_file_and_credential_free_variables_are_enough(tmp_path: Path, runtime_archive: Path,
                                                                index: PrivateIndex) -> None:
    """What a builder container gets: a netrc file rendered from the host's credentials
    and the index variables without credentials (no UV_INDEX_<NAME>_* at all)."""
    spec_path = make_stack(tmp_path / "stack", index.url)
    host_environ = {**clean_environ(), "UV_INDEX_PRIVATE_USERNAME": index.username,
                    "UV_INDEX_PRIVATE_PASSWORD": index.password,
                    "UV_INDEX_STRATEGY": "first-index"}
    creds = _cred.collect_credentials(_spec.load(spec_path).uv_config, environ=host_environ)
    rc = tmp_path / "secrets" / "netrc"
    rc.parent.mkdir()
    rc.write_text(_cred.render_netrc(creds))
    rc.chmod(0o600)
    assert rc.read_text() == f"machine 127.0.0.1 login {index.username} password {index.password}\n"
    inside = _cred.container_environment(host_environ)
    assert inside == {"UV_INDEX_STRATEGY": "first-index"}
    env = isolated_env(tmp_path, runtime_archive, NETRC=str(rc), **inside)
    locked = cli("-v", "lock", "--native", spec_path, env=env)
    uv_simple = [r for r in index.requests if r.agent.startswith("uv/") and r.path.startswith("/simple/")]
    # uv asks without credentials first, then with those of the netrc file
    assert [(r.had_auth, r.authorized) for r in uv_simple[:2]] == [(False, False), (True, True)]
    built = cli("-v", "build", "--native", spec_path, env=env)
    assert [r.authorized for r in index.fetcher_downloads()] == [True]
    assert_secret_nowhere(index.password, spec_path.parent, locked.stdout, locked.stderr,
                          built.stdout, built.stderr)


@pytest.mark.slow
@pytest.mark.runtime
def test_userinfo_in_uv_index_url_locks_and_builds_and_stays_out_of_the_lock(
        tmp_path: Path, runtime_archive: Path, index: PrivateIndex) -> None:
    spec_path = make_stack(tmp_path / "stack", None)
    env = isolated_env(tmp_path, runtime_archive,
                       UV_INDEX_URL=index.url_for(userinfo=f"{index.username}:{index.password}"))
    locked = cli("-v", "lock", "--native", spec_path, env=env)
    text = pylock_text(spec_path)
    assert f'url = "http://127.0.0.1:{index.port}/files/{TABULATE}"' in text and "@" not in text
    built = cli("-v", "build", "--native", spec_path, env=env)
    assert [r.authorized for r in index.fetcher_downloads()] == [True]
    assert_secret_nowhere(index.password, spec_path.parent, locked.stdout, locked.stderr,
                          built.stdout, built.stderr)


@pytest.mark.slow
@pytest.mark.runtime
def test_missing_or_wrong_credentials_are_clear_errors_without_secrets(tmp_path: Path, runtime_archive: Path,
                                                                        index: PrivateIndex) -> None:
    spec_path = make_stack(tmp_path / "stack", index.url_for(userinfo=f"{index.username}:wrong-pass-4567"))
    env = isolated_env(tmp_path, runtime_archive)
    verbose = cli("-vv", "lock", "--native", spec_path, env=env, check=False)
    failed = cli("lock", "--native", spec_path, env=env, check=False)
    assert failed.returncode == verbose.returncode == LockError.return_code, failed.stderr
    message = " ".join(failed.stderr.split())
    assert "401 Unauthorized" in message and "UV_INDEX_<NAME>_USERNAME" in message
    assert "Traceback" not in failed.stderr
    assert "wrong-pass-4567" not in failed.stderr + failed.stdout + verbose.stderr + verbose.stdout
    # the spec's URL credentials went to uv through its environment, not into _build
    assert_secret_nowhere("wrong-pass-4567", spec_path.parent / "_build")

    make_stack(spec_path.parent, index.url)  # no credentials in the stack file any more
    cli("lock", "--native", spec_path, env={**env, "UV_INDEX_PRIVATE_USERNAME": index.username,
                                           "UV_INDEX_PRIVATE_PASSWORD": index.password})
    failed = cli("build", "--native", spec_path, env=env, check=False)
    assert failed.returncode == BuildError.return_code, failed.stderr
    message = " ".join(failed.stderr.split())
    where = f"127.0.0.1:{index.port}"
    assert f"HTTP 401 Unauthorized: {where} wants credentials and none were found" in message
    assert "UV_INDEX_<NAME>_PASSWORD" in message and "machine 127.0.0.1" in message
    assert "Traceback" not in failed.stderr and index.password not in failed.stderr + failed.stdout
