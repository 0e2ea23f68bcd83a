"""``python -m venvstacks_docker.runtime_build``: the same as ``venvstacks-docker runtime build``."""

import sys

from venvstacks_docker.cli import run

if __name__ == "__main__":
    sys.exit(run(["runtime", "build", *sys.argv[1:]]))
