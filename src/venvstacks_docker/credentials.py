"""Package index credentials: where uv finds them, for the wheel fetcher, containers and logs.

uv (which locks) finds index credentials itself; the wheel fetcher
(:mod:`venvstacks_docker.wheels`) and the container dispatcher need the same ones.
This module finds them where uv does, in uv's order of precedence:

1. for a *named* index (``[[tool.uv.index]] name = "private"``, or ``name=url`` in
   ``UV_INDEX``/``UV_DEFAULT_INDEX``): ``UV_INDEX_<NAME>_USERNAME`` and
   ``UV_INDEX_<NAME>_PASSWORD``, ``<NAME>`` being the name upper-cased with every
   non-alphanumeric character replaced by ``_``;
2. ``user:password@`` in the index URL (``[tool.uv]`` ``index``/``index-url``/
   ``extra-index-url``/``find-links``, ``UV_INDEX_URL``, ``UV_DEFAULT_INDEX``,
   ``UV_EXTRA_INDEX_URL``, ``UV_INDEX``, ``UV_FIND_LINKS``);
3. the netrc file: ``$NETRC``, else ``~/.netrc`` (a ``machine <host>`` entry, else the
   ``default`` entry; a username given by 1. or 2. must match its ``login``).

uv's credentials store and keyring providers are not read.

It also provides what keeps secrets out of containers' environments and out of
messages: :func:`render_netrc` (the credentials as a netrc file, which uv reads through
``NETRC``), :func:`container_environment` (the index variables without credentials)
and :func:`redact`.
"""

from __future__ import annotations

import base64
import functools
import logging
import netrc as _netrc
import os
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Environment variables naming index URLs (uv's names), and how each separates URLs.
INDEX_URL_VARIABLES: dict[str, str | None] = {
    "UV_INDEX_URL": None,
    "UV_DEFAULT_INDEX": None,
    "UV_EXTRA_INDEX_URL": " ",
    "UV_INDEX": " ",
    "UV_FIND_LINKS": ",",
}
#: Index settings that may be passed into a container (URLs with userinfo stripped).
CONTAINER_INDEX_VARIABLES: tuple[str, ...] = (*INDEX_URL_VARIABLES, "UV_INDEX_STRATEGY", "UV_INSECURE_HOST")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#\s]+)@")
_INDEX_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
#: Secrets shorter than this are redacted inside URLs only (replacing, say, every
#: "ab" in a message would make it unreadable and hide nothing).
MIN_SECRET_LENGTH = 4


def env_var_name(index_name: str) -> str:
    """``UV_INDEX_<NAME>`` stem for an index name, as uv derives it (``my-idx`` -> ``MY_IDX``)."""
    return "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in index_name)


# --- URLs ---------------------------------------------------------------------------


def strip_userinfo(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it removed."""
    return _USERINFO.sub(r"\1", text)


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``(url without userinfo, username, password)``, percent-decoded; ``None`` when absent."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return clean, urllib.parse.unquote(user), urllib.parse.unquote(password) if sep else None


def _realm(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an http(s) URL, the port made explicit."""
    try:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return None
        return scheme, parts.hostname.lower(), parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:  # a malformed port
        return None


# --- credentials ---------------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Credential:
    """HTTP basic credentials for one host (and port), never shown by ``repr``."""

    host: str
    port: int | None
    """``None``: any port (netrc entries name hosts only)."""
    scheme: str | None
    username: str
    password: str = field(repr=False)
    source: str = ""
    """Where it was found, for messages: never the secret itself."""

    def __post_init__(self) -> None:
        _remember_secret(self.password)

    def matches(self, url: str) -> bool:
        """Whether ``url`` is on this credential's host (and port, and scheme)."""
        realm = _realm(url)
        if realm is None:
            return False
        scheme, host, port = realm
        return (host == self.host and (self.port is None or port == self.port)
                and (self.scheme is None or scheme == self.scheme))

    @property
    def where(self) -> str:
        """The host (and port) the credential is for, for messages."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def header(self) -> str:
        """The ``Authorization`` header value."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        _remember_secret(token)
        return f"Basic {token}"


def _remember_secret(value: str | None) -> None:
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


@dataclass(frozen=True)
class IndexLocation:
    """One index (or find-links) URL this process would use, credentials split off."""

    url: str
    name: str | None
    origin: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def _location(raw: str, *, origin: str, name: str | None = None) -> IndexLocation:
    url, user, password = split_userinfo(raw.strip())
    _remember_secret(password)
    return IndexLocation(url=url, name=name, origin=origin, username=user, password=password)


def _named(value: str) -> tuple[str | None, str]:
    """uv's ``name=url`` form of ``UV_INDEX``/``UV_DEFAULT_INDEX`` values."""
    name, sep, url = value.partition("=")
    if sep and _INDEX_NAME.match(name) and "://" not in name:
        return name, url
    return None, value


def config_index_locations(uv_config: Mapping[str, Any]) -> list[IndexLocation]:
    """Index URLs of a ``[tool.uv]`` table (``index``, ``index-url``, ``extra-index-url``, ``find-links``)."""
    found: list[IndexLocation] = []
    for entry in uv_config.get("index", []) or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("url"), str):
            name = entry.get("name") if isinstance(entry.get("name"), str) else None
            found.append(_location(entry["url"], origin=f"[[tool.uv.index]] {name or entry['url']}", name=name))
    single = uv_config.get("index-url")
    if isinstance(single, str):
        found.append(_location(single, origin="[tool.uv] index-url"))
    for key in ("extra-index-url", "find-links"):
        for url in uv_config.get(key, []) or []:
            if isinstance(url, str):
                found.append(_location(url, origin=f"[tool.uv] {key}"))
    return found


def environment_index_locations(environ: Mapping[str, str] | None = None) -> list[IndexLocation]:
    """Index URLs named by ``UV_INDEX_URL``, ``UV_DEFAULT_INDEX``, ``UV_EXTRA_INDEX_URL``,
    ``UV_INDEX`` and ``UV_FIND_LINKS``."""
    environ = os.environ if environ is None else environ
    found: list[IndexLocation] = []
    for variable, separator in INDEX_URL_VARIABLES.items():
        value = environ.get(variable, "")
        for item in (value.split(separator) if separator else [value]):
            if not item.strip():
                continue
            name, url = _named(item.strip()) if variable in ("UV_INDEX", "UV_DEFAULT_INDEX") else (None, item)
            found.append(_location(url, origin=variable, name=name))
    return found


# --- netrc ---------------------------------------------------------------------------


def netrc_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The netrc file uv reads: ``$NETRC``, else ``~/.netrc`` (``None`` if neither exists)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get("NETRC")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        # "~" when there is no home at all (Path.home() would raise)
        home = environ.get("HOME") or os.path.expanduser("~")  # noqa: PTH111
        path = Path(home) / ".netrc"
    return path if path.is_file() else None


def read_netrc(path: Path | None) -> dict[str, tuple[str, str]]:
    """``{machine: (login, password)}`` of a netrc file (``default`` included as is).

    An unreadable or malformed file is ignored with a warning (the message names the
    file and line, never its content).  Parsed once while the file is unchanged.
    """
    if path is None:
        return {}
    try:
        st = path.stat()
    except OSError:
        return {}
    return dict(_parse_netrc(str(path), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=8)
def _parse_netrc(path: str, _mtime_ns: int, _size: int) -> tuple[tuple[str, tuple[str, str]], ...]:
    try:
        parsed = _netrc.netrc(path)
    except (OSError, _netrc.NetrcParseError) as exc:
        where = f"{path}, line {exc.lineno}" if isinstance(exc, _netrc.NetrcParseError) else path
        log.warning("ignoring the netrc file %s: it cannot be read or parsed", where)
        return ()
    entries = []
    for machine, (login, _account, password) in parsed.hosts.items():
        _remember_secret(password)
        entries.append((machine.lower(), (login or "", password or "")))
    return tuple(entries)


def netrc_credential(url: str, entries: Mapping[str, tuple[str, str]], *, username: str | None = None,
                     allow_default: bool = False, source: str = "netrc") -> Credential | None:
    """The netrc credential for ``url``'s host (any port), as uv looks it up."""
    realm = _realm(url)
    if realm is None:
        return None
    entry = entries.get(realm[1]) or (entries.get("default") if allow_default else None)
    if entry is None or (username is not None and username != entry[0]):
        return None
    return Credential(host=realm[1], port=None, scheme=None, username=entry[0], password=entry[1], source=source)


# --- collecting ------------------------------------------------------------------------

_REMEMBERED: list[Mapping[str, Any]] = []
_REMEMBERED_LOCK = threading.Lock()


def remember_indexes(uv_config: Mapping[str, Any]) -> None:
    """Note the ``[tool.uv]`` table of a stack this process works on.

    :func:`collect_credentials` without a ``uv_config`` (what the wheel fetcher uses)
    covers the indexes of every remembered table: a stack's named indexes are only
    known from its stack file.
    """
    with _REMEMBERED_LOCK:
        if not any(c is uv_config or c == uv_config for c in _REMEMBERED):
            _REMEMBERED.append(uv_config)


def _index_credential(loc: IndexLocation, environ: Mapping[str, str],
                      entries: Mapping[str, tuple[str, str]], netrc_name: str) -> Credential | None:
    realm = _realm(loc.url)
    if realm is None:
        return None
    username, password, source = loc.username, loc.password, f"user:password in the URL of {loc.origin}"
    if loc.name is not None:
        stem = f"UV_INDEX_{env_var_name(loc.name)}"
        env_user, env_password = environ.get(f"{stem}_USERNAME"), environ.get(f"{stem}_PASSWORD")
        if env_user is not None or env_password is not None:
            username, password, source = env_user, env_password, f"{stem}_USERNAME/_PASSWORD"
    if password is None:
        found = netrc_credential(loc.url, entries, username=username, allow_default=True,
                                 source=f"{netrc_name} (for {loc.origin})")
        if found is not None:
            return Credential(host=realm[1], port=realm[2], scheme=realm[0], username=found.username,
                              password=found.password, source=found.source)
    if username is None and password is None:
        return None
    return Credential(host=realm[1], port=realm[2], scheme=realm[0], username=username or "",
                      password=password or "", source=source)


def collect_credentials(uv_config: Mapping[str, Any] | None = None, *,
                        environ: Mapping[str, str] | None = None) -> list[Credential]:
    """Every credential this process can see for the indexes it would use.

    :param uv_config: a stack's ``[tool.uv]`` table (``spec.uv_config``); ``None``: every
        table given to :func:`remember_indexes` so far.
    :param environ: the environment to read (default ``os.environ``).
    :returns: one credential per index that has one (indexes of the environment first,
        then those of the table); for each index the first source in uv's order of
        precedence that has credentials wins (see the module docstring).
    """
    environ = os.environ if environ is None else environ
    with _REMEMBERED_LOCK:
        configs = [uv_config] if uv_config is not None else list(_REMEMBERED)
    locations = environment_index_locations(environ)
    for config in configs:
        locations += config_index_locations(config)
    path = netrc_path(environ)
    entries = read_netrc(path)
    netrc_name = f"the netrc file {path}" if path else "the netrc file"
    found: list[Credential] = []
    for loc in locations:
        cred = _index_credential(loc, environ, entries, netrc_name)
        if cred is not None and cred not in found:
            found.append(cred)
    return found


def credential_for(url: str, credentials: Sequence[Credential], *,
                   environ: Mapping[str, str] | None = None) -> tuple[str, Credential | None]:
    """``(url without userinfo, the credential to send to it)``.

    Userinfo in ``url`` itself wins; then the first of ``credentials`` for its host and
    port; then a ``machine`` entry of the netrc file for its host (never the netrc
    ``default`` entry, which would send credentials to any host, PyPI's included).
    """
    clean, user, password = split_userinfo(url)
    realm = _realm(clean)
    if realm is None:
        return clean, None
    if user is not None or password is not None:
        _remember_secret(password)
        return clean, Credential(host=realm[1], port=realm[2], scheme=realm[0], username=user or "",
                                 password=password or "", source="user:password in the wheel URL")
    for cred in credentials:
        if cred.matches(clean):
            return clean, cred
    path = netrc_path(environ)
    return clean, netrc_credential(clean, read_netrc(path), source=f"the netrc file {path}")


# --- for containers -----------------------------------------------------------------------


def render_netrc(credentials: Iterable[Credential]) -> str:
    """A netrc file with one ``machine`` line per host (the first credential of a host wins:
    netrc has no ports).

    :raises ValueError: for a login or password a netrc file cannot hold (whitespace or
        quotes); the message names the host, not the value.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for cred in credentials:
        if cred.host in seen:
            continue
        for what, value in (("login", cred.username), ("password", cred.password)):
            if not value or re.search(r"[\s\"'\\]", value) or value.startswith("#"):
                raise ValueError(f"the {what} for {cred.host} (from {cred.source}) cannot be written to a "
                                 "netrc file: it is empty or has whitespace, quotes or backslashes")
        seen.add(cred.host)
        lines.append(f"machine {cred.host} login {cred.username} password {cred.password}\n")
    return "".join(lines)


def container_netrc(uv_config: Mapping[str, Any] | None = None, *,
                    environ: Mapping[str, str] | None = None) -> str:
    """The netrc text for a container: :func:`render_netrc` of :func:`collect_credentials`
    (``""`` when there are none).  Write it to a file only the caller can read, mount it
    read-only for the one run and set ``NETRC`` to its path inside; uv reads it there."""
    return render_netrc(collect_credentials(uv_config, environ=environ))


def container_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The index settings that may enter a container's environment: the variables of
    :data:`CONTAINER_INDEX_VARIABLES` that are set, with ``user:password@`` removed from
    every URL; ``UV_INDEX_<NAME>_USERNAME``/``_PASSWORD`` are never included."""
    environ = os.environ if environ is None else environ
    return {name: strip_userinfo(environ[name]) for name in CONTAINER_INDEX_VARIABLES if environ.get(name)}


def move_userinfo_to_env(uv_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``[tool.uv]`` with credentials taken out of named index URLs, and the
    ``UV_INDEX_<NAME>_USERNAME/_PASSWORD`` variables that give them to uv instead
    (so a copy of the table written to disk holds no secret)."""
    config = dict(uv_config)
    env: dict[str, str] = {}
    indexes = []
    for entry in config.get("index", []) or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and isinstance(entry.get("url"), str):
            url, user, password = split_userinfo(entry["url"])
            if user is not None or password is not None:
                stem = f"UV_INDEX_{env_var_name(entry['name'])}"
                env[f"{stem}_USERNAME"] = user or ""
                if password is not None:
                    env[f"{stem}_PASSWORD"] = password
                entry = {**entry, "url": url}
        indexes.append(entry)
    if indexes:
        config["index"] = indexes
    return config, env


# --- messages -------------------------------------------------------------------------------


def refused_for_credentials(uv_output: str) -> bool:
    """Whether uv's output says an index refused it for want of (valid) credentials."""
    return any(s in uv_output for s in ("401 Unauthorized", "403 Forbidden", "authentication credentials"))


def where_to_put_credentials(host: str | None = None) -> str:
    """The ways to give credentials, for hints (``host``: the one to name in the netrc line)."""
    return ("UV_INDEX_<NAME>_USERNAME and UV_INDEX_<NAME>_PASSWORD for a named [[tool.uv.index]] "
            "(<NAME>: the name upper-cased, other characters as _), user:password@ in the index URL, "
            f"or a `machine {host or '<host>'} login ... password ...` line in the netrc file "
            "($NETRC, else ~/.netrc)")


# --- redaction ------------------------------------------------------------------------------


def known_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Secret values this process knows: passwords of every credential found so far, the
    ``UV_INDEX_<NAME>_PASSWORD`` values and passwords in index URLs of the environment."""
    environ = os.environ if environ is None else environ
    secrets = {value for name, value in environ.items()
               if name.startswith("UV_INDEX_") and name.endswith("_PASSWORD")}
    for name in INDEX_URL_VARIABLES:
        for match in _USERINFO.finditer(environ.get(name, "")):
            secrets.add(urllib.parse.unquote(match.group(2).partition(":")[2]))
    with _SECRETS_LOCK:
        secrets |= _SECRETS
    return {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every URL's ``user:password@`` (or ``user@``) replaced by ``***@`` and
    every known secret value (see :func:`known_secrets`, plus ``secrets``) by ``***``."""
    text = _USERINFO.sub(r"\1***@", text)
    values = known_secrets() | {s for s in (secrets or ()) if s and len(s) >= MIN_SECRET_LENGTH}
    forms = values | {urllib.parse.quote(s, safe="") for s in values}
    for value in sorted(forms, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


__all__ = [
    "Credential",
    "IndexLocation",
    "collect_credentials",
    "container_environment",
    "container_netrc",
    "credential_for",
    "env_var_name",
    "known_secrets",
    "move_userinfo_to_env",
    "redact",
    "refused_for_credentials",
    "remember_indexes",
    "render_netrc",
    "split_userinfo",
    "strip_userinfo",
    "where_to_put_credentials",
]
