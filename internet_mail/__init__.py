"""The mail front doors: Internet mail protocols served from the store core.

DESIGN.md's "mail front doors" layer: MIME <-> MAPI conversion, SMTP, IMAP and POP3
sit above ``mapi/`` and use the store core in-process, never ``tunnel/`` or ``clients/``.
Each protocol is a sans-IO core (bytes in, events and bytes out) with a thin trio driver.
"""
