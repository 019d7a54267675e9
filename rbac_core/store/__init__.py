"""The store: engine and transactions, the ORM models, migrations, and the bookkeeping
around the gate (leases, period claims, inbound events taken once, insert-or-ignore).

Only the gate and this bookkeeping open write transactions; surfaces never import it.
"""

from .db import Database
from .statements import Sql, utc
from .transaction import Txn, txn_of

__all__ = ["Database", "Sql", "Txn", "txn_of", "utc"]
