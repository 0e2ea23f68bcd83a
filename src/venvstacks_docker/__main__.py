"""``python -m venvstacks_docker``: the same as the ``venvstacks-docker`` command."""

from venvstacks_docker.cli import main

if __name__ == "__main__":
    main()
