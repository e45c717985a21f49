"""`python -m dashboard …`: the command line over the clinical core."""

from dashboard.cli import main

raise SystemExit(main())
