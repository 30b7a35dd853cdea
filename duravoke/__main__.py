"""``python -m duravoke``: the same as the ``duravoke`` command."""

from ._cli import main

raise SystemExit(main())
