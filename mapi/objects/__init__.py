"""The store's objects: folders and the standard hierarchy, messages, attachments,
streams, submission, sync and quotas."""
