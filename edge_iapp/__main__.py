"""``python -m edge_iapp``: the ``edge-iapp`` command where it is not installed as a script."""

from .cli.main import app

if __name__ == "__main__":
    app(prog_name="edge-iapp")
