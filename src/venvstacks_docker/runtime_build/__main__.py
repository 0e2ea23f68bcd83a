"""``python -m venvstacks_docker.runtime_build``: what ``scripts/build-python-runtime`` runs."""

import sys

from venvstacks_docker.runtime_build.cli import main

if __name__ == "__main__":
    sys.exit(main())
