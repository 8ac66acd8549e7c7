"""The node's database: users and tokens, the privacy-budget ledger, releases, jobs, budget
requests and the append-only audit log, on SQLite or PostgreSQL.

:class:`Store` is the interface the rest of the node uses, and the owner of the node's one
database engine (``Store.engine``), on which the job store and the budget requests work too;
``ledger`` holds the one write path for spending (``charge``); ``tables`` describes every table
on one ``metadata``; ``migrations`` makes and changes them (``Store.create_all``). Everything
handed out is a plain frozen record; what comes in follows one rule each (``PrivacyLoss``,
``check_request_id``).
"""

from rds_kernel.node.store.records import (
    AuditEntry,
    BudgetLine,
    BudgetView,
    ChargeResult,
    PrivacyLoss,
    Release,
    User,
    check_request_id,
)
from rds_kernel.node.store.store import Store

__all__ = [
    "AuditEntry",
    "BudgetLine",
    "BudgetView",
    "ChargeResult",
    "PrivacyLoss",
    "Release",
    "Store",
    "User",
    "check_request_id",
]
