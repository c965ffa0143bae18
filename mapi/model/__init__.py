"""The property model: tags, types, values, errors, limits, entry ids, named properties
and folder rights (pure: no store, no I/O)."""
