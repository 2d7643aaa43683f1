from topology.store.base import (Change, Conflict, Document, HistoryCompacted,  # noqa: F401
                                 ReadTxn, Store, StoreError, Txn, TxnConflict)
from topology.store.sqlite import SqliteStore, open_store  # noqa: F401
