"""NDR descriptions of the interfaces we speak, one module per IDL (wire formats only).

They sit in ``dcerpc`` because both sides use them: the services built on ``mapi`` and
the client library in ``clients``; the semantics of the calls live with the services.
"""
