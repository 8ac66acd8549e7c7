"""The ``rds`` command: the owner's CLI (node, datasets, users, budgets, jobs, audit, demo)."""
