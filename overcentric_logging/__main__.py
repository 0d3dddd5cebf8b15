"""``python -m overcentric_logging``: see :mod:`overcentric_logging.cli`."""

from overcentric_logging.cli import main

raise SystemExit(main())
