"""Mail client autoconfiguration: Thunderbird's ``config-v1.1.xml``.

Theory of operation
-------------------
A mail program that is given only an e-mail address and a password looks for its
settings before it logs on anywhere. Thunderbird (and K-9/Thunderbird for Android,
Evolution, KMail) fetch a *clientConfig* document, Mozilla's ISPDB format
(``clientConfig version="1.1"``), from the mail domain's web server at
``/.well-known/autoconfig/mail/config-v1.1.xml`` and from ``autoconfig.<domain>`` at
``/mail/config-v1.1.xml``, each with ``?emailaddress=<address>``. The tunnel answers
both paths with one ``emailProvider``: its ``incomingServer`` entries (IMAP, then
POP3; for each the implicit-TLS port first, ``socketType SSL``, then the STARTTLS one)
and ``outgoingServer`` entries (submission, same order), all on the tunnel's announced
host name, ``authentication password-cleartext`` (the password goes inside TLS: the
listeners offer a logon only after TLS) and ``username %EMAILADDRESS%``: the mail
listeners take the e-mail address or the login name, and the address is what the user
just typed.

Decision: **no authentication** (the client asks before it has a password to give),
and therefore **nothing that depends on who asks**: the document is the same for every
``emailaddress`` (it is not even read), so it never tells whether a user exists; it
names the domain's settings only. The document is served only when ``serve`` runs an
IMAP or POP3 listener (:class:`~tunnel.config.MailEndpoints`); otherwise 404. Every
value written into the XML is escaped. Only ``GET`` is answered (405 otherwise); a
request body, which a ``GET`` does not carry, is bounded by :data:`MAX_BODY` like an
autodiscover request's.
"""

from __future__ import annotations

from html import escape

from tunnel.autodiscover import Reply, Site
from tunnel.config import MailEndpoint

WELL_KNOWN_PATH = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTOCONFIG_HOST_PATH = "/mail/config-v1.1.xml"
PATHS = (WELL_KNOWN_PATH, AUTOCONFIG_HOST_PATH)
#: Largest request body read (and dropped); more: 413.
MAX_BODY = 4096
#: What ``username`` tells the client to log on with (Thunderbird fills it in).
USERNAME = "%EMAILADDRESS%"


def is_autoconfig_path(path: str) -> bool:
    """Whether ``path`` (with its query) asks for the autoconfig document."""
    return path.partition("?")[0].lower() in PATHS


def answer(site: Site, method: str, path: str, body: bytes) -> Reply:
    """The answer to an autoconfig request (unauthenticated, the same for everyone).

    Args:
        site: what the tunnel announces; ``site.mail`` are the mail listeners.
        method: the HTTP method; only ``GET`` is answered.
        path: the request target; its query (``emailaddress``) changes nothing.
        body: the request body read so far (none is expected).

    Returns:
        200 with the document, 404 when no mail listener reads mail, 405, or 413.
    """
    if not is_autoconfig_path(path):
        return Reply(404, "text/plain; charset=utf-8", b"no such document\n")
    if method != "GET":
        return Reply(405, "text/plain; charset=utf-8", b"method not allowed\n")
    if len(body) > MAX_BODY:
        return Reply(413, "text/plain; charset=utf-8", b"request body too large\n")
    document = client_config(site)
    if document is None:
        return Reply(404, "text/plain; charset=utf-8", b"no mail service here\n")
    return Reply(200, "text/xml; charset=utf-8", document)


def provider_domains(site: Site) -> tuple[str, ...]:
    """The domains the document names: the configured mail domain and the server name."""
    names = [n.lower() for n in (site.domain, site.server_name) if n]
    return tuple(dict.fromkeys(names))


def client_config(site: Site) -> bytes | None:
    """The ``clientConfig`` document of ``site``'s mail listeners (None: no IMAP or
    POP3 listener, so nothing a mail program could be set up with)."""
    mail = site.mail
    if mail is None or not mail.incoming:
        return None
    e = escape
    domains = provider_domains(site) or ("localhost",)
    host = site.server_name
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        '<clientConfig version="1.1">\n',
        f'  <emailProvider id="{e(domains[0])}">\n',
        *(f"    <domain>{e(d)}</domain>\n" for d in domains),
        f"    <displayName>{e(domains[0])} (mapi-anywhere)</displayName>\n",
        f"    <displayShortName>{e(domains[0])}</displayShortName>\n",
    ]
    for kind, endpoints in (("imap", mail.imap), ("pop3", mail.pop3)):
        parts.extend(_server("incomingServer", kind, host, ep) for ep in endpoints)
    parts.extend(_server("outgoingServer", "smtp", host, ep) for ep in mail.submission)
    parts.append("  </emailProvider>\n</clientConfig>\n")
    return "".join(parts).encode("utf-8")


def _server(element: str, kind: str, host: str, endpoint: MailEndpoint) -> str:
    e = escape
    return (
        f'    <{element} type="{kind}">\n'
        f"      <hostname>{e(host)}</hostname>\n"
        f"      <port>{endpoint.port}</port>\n"
        f"      <socketType>{endpoint.security.value}</socketType>\n"
        f"      <username>{USERNAME}</username>\n"
        "      <authentication>password-cleartext</authentication>\n"
        f"    </{element}>\n"
    )


__all__ = [
    "MAX_BODY",
    "PATHS",
    "USERNAME",
    "answer",
    "client_config",
    "is_autoconfig_path",
    "provider_domains",
]
