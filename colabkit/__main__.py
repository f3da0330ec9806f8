"""``python -m colabkit``: the same as the ``colabkit`` command."""

from colabkit.cli import main

raise SystemExit(main())
