"""`python -m bridge` runs the `ownerlink` command line."""

from bridge.cli import main

raise SystemExit(main())
