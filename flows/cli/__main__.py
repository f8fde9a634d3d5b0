"""`python -m flows.cli`: the same command as the `secure-pipeline` console script."""

from flows.cli import entry

entry()
