"""SQLite storage of the store core: the schema and the per-mailbox database."""
