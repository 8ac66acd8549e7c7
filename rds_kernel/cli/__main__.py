"""``python -m rds_kernel.cli``: the same as the ``rds`` command."""

from rds_kernel.cli.main import main

raise SystemExit(main())
