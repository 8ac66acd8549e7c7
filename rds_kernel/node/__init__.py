"""The owner node: HTTP app, services, auth, store (SQL), ledger, jobs, CLI."""
