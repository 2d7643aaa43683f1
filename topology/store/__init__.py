from topology.store.base import (Change, Conflict, Document, HistoryCompacted,  # noqa: F401
                                 ReadTxn, Store, StoreError, Txn)
from topology.store.sqlite import SqliteStore, open_store  # noqa: F401
