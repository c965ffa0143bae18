"""The MAPI-style object store: object model, storage, tables (no networking)."""
