"""The node's database: users and tokens, the privacy-budget ledger, releases, jobs, budget
requests and the append-only audit log, on SQLite or PostgreSQL.

:class:`Store` is the interface the rest of the node uses; ``ledger`` holds the one write
path for spending (``charge``). Everything handed out is a plain frozen record.
"""

from rds_kernel.node.store.records import (
    AuditEntry,
    BudgetLine,
    BudgetView,
    ChargeResult,
    Release,
    User,
)
from rds_kernel.node.store.store import Store

__all__ = ["AuditEntry", "BudgetLine", "BudgetView", "ChargeResult", "Release", "Store", "User"]
