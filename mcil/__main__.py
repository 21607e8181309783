"""`python -m mcil` is the `mcil` command (the pipeline uses it under --use-conda)."""

from mcil.cli import entry

entry()
