"""`python -m bridge` runs the `ownerlink` command line."""

from bridge.cli import entry

raise SystemExit(entry())
