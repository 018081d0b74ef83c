"""``python -m rlprune.cli``: the same command line as the ``rlprune`` script."""

from rlprune.cli import app

app(prog_name="rlprune")
