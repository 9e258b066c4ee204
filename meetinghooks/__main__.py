"""Allow `python -m meetinghooks`."""

from meetinghooks.cli import main

raise SystemExit(main())
