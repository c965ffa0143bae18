"""The store's RPC edge: the DCE/RPC service, batch operations and worker threads."""
