"""Stack files that cannot be read: one clear error (exit 2), never an internal error.

Each case runs the real command line and checks for exactly one ``error:`` line naming
the file, no traceback and no "internal error".
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _helpers import CliResult, cli

RUNTIME = """\
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []
"""


def show(path: Path | str) -> CliResult:
    return cli("show", path, env={**os.environ, "COLUMNS": "500"}, check=False)


def assert_clear(result: CliResult, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "internal error" not in result.stderr


def good_spec(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "venvstacks.toml"
    path.write_text(RUNTIME)
    return path


@pytest.mark.parametrize("given", ["parent folder", "the folder itself"])
def test_folder_named_venvstacks_toml(tmp_path: Path, given: str) -> None:
    (tmp_path / "venvstacks.toml").mkdir()
    result = show(tmp_path if given == "parent folder" else tmp_path / "venvstacks.toml")
    assert_clear(result, f"{tmp_path / 'venvstacks.toml'} is a folder, not a stack file")


def test_stack_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "venvstacks.toml"
    path.write_bytes(RUNTIME.encode() + b"# caf\xe9\n")
    assert_clear(show(path), f"{path} is not UTF-8 text (byte 0xe9 at offset")


def test_uv_file_not_utf8(tmp_path: Path) -> None:
    spec = good_spec(tmp_path)
    uv_file = tmp_path / "venvstacks.uv.toml"
    uv_file.write_bytes(b'exclude-newer = "2026-01-01T00:00:00Z"\n# \xff\xfe\n')
    assert_clear(show(spec), f"{uv_file} is not UTF-8 text", "save the uv settings file with the UTF-8")


def test_uv_file_that_is_a_folder(tmp_path: Path) -> None:
    spec = good_spec(tmp_path)
    (tmp_path / "venvstacks.uv.toml").mkdir()
    assert_clear(show(spec), f"{tmp_path / 'venvstacks.uv.toml'} is a folder, not a uv settings file")


def test_uv_file_not_toml(tmp_path: Path) -> None:
    spec = good_spec(tmp_path)
    (tmp_path / "venvstacks.uv.toml").write_text("exclude-newer = \n")
    assert_clear(show(spec), "venvstacks.uv.toml is not valid TOML")


def test_path_too_long_is_an_oserror_reported_clearly(tmp_path: Path) -> None:
    # a real OSError (ENAMETOOLONG) while looking for the file, for any user
    path = tmp_path / ("x" * 300) / "venvstacks.toml"
    assert_clear(show(path), f"cannot read the stack file {path}: File name too long")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_stack_file(tmp_path: Path) -> None:
    path = good_spec(tmp_path)
    path.chmod(0)
    try:
        assert_clear(show(path), f"cannot read the stack file {path}: Permission denied",
                     "make it readable")
    finally:
        path.chmod(0o644)


DENY_READ = textwrap.dedent("""
    import pathlib, sys
    real_read_text = pathlib.Path.read_text

    def deny(self, *args, **kwargs):
        if self.name == sys.argv[2]:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    pathlib.Path.read_text = deny
    from venvstacks_docker.cli import main
    main(["show", sys.argv[1]])
""")


@pytest.mark.parametrize("denied", ["venvstacks.toml", "venvstacks.uv.toml"])
def test_permission_denied_through_the_real_cli(tmp_path: Path, denied: str) -> None:
    # the same as the test above, but works as root too: the read itself is made to fail
    spec = good_spec(tmp_path)
    (tmp_path / "venvstacks.uv.toml").write_text("")
    proc = subprocess.run([sys.executable, "-c", DENY_READ, str(spec), denied], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "500"}, check=False, timeout=60)
    what = "stack file" if denied == "venvstacks.toml" else "uv settings file"
    assert_clear(CliResult(proc.returncode, proc.stdout, proc.stderr),
                 f"cannot read the {what} {tmp_path / denied}: Permission denied",
                 "make it readable for the user running venvstacks-docker")
