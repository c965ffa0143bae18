"""Configuration of the HTTPS tunnel: one frozen, self-validating dataclass.

Every limit the proxy enforces lives here (as h2's ``config.py`` and aioquic's
``configuration.py`` keep theirs), so the cores and drivers take one object and the
composition root builds it from the ``[tunnel]`` section of the configuration file.
Times are seconds (floats); sizes are bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from tunnel.http_auth import Scheme, parse_schemes

#: Content-Length of the OUT channel's 200 response ([MS-RPCH] 2.1.2.1.4; Windows,
#: impacket and Samba use 1 GiB). Every byte we send on the channel counts against it.
DEFAULT_OUT_CONTENT_LENGTH = 1073741824


class MailSecurity(enum.Enum):
    """How a mail listener starts TLS; the values are Thunderbird's ``socketType``."""

    #: TLS from the first byte (imaps, pop3s, submissions: RFC 8314 3).
    IMPLICIT = "SSL"
    #: A clear-text greeting, then STARTTLS (or POP3's STLS) before any logon.
    STARTTLS = "STARTTLS"


@dataclass(frozen=True, slots=True)
class MailEndpoint:
    """One mail listener a mail program may use: its port and how TLS starts."""

    port: int
    security: MailSecurity

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"mail endpoint port {self.port} out of range")


def mail_endpoints(starttls_port: int | None, tls_port: int | None) -> tuple[MailEndpoint, ...]:
    """The endpoints of a protocol served on a STARTTLS and an implicit-TLS port (None:
    not listening), implicit TLS first: RFC 8314 3 has clients prefer it."""
    found = []
    if tls_port is not None:
        found.append(MailEndpoint(tls_port, MailSecurity.IMPLICIT))
    if starttls_port is not None:
        found.append(MailEndpoint(starttls_port, MailSecurity.STARTTLS))
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class MailEndpoints:
    """The mail listeners announced to mail programs (Thunderbird's autoconfig, the
    IMAP/POP3/SMTP entries of autodiscover): plain data the composition root gives the
    tunnel, which never reaches the mail services itself. Each tuple is in order of
    preference; an empty one is a protocol not served. The host name announced is the
    tunnel's (its first server name, else its host)."""

    imap: tuple[MailEndpoint, ...] = ()
    pop3: tuple[MailEndpoint, ...] = ()
    #: Message submission with AUTH (RFC 6409 and RFC 8314: 587 and 465).
    submission: tuple[MailEndpoint, ...] = ()

    @property
    def incoming(self) -> bool:
        """Whether a mail program has something to read mail with (IMAP or POP3)."""
        return bool(self.imap or self.pop3)


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelConfig:
    """Settings of the tunnel front end (``serve_tunnel``).

    Attributes:
        host: address the TLS listener binds to.
        port: TLS port; 8443 by default (443 in production needs privileges), 0 picks a
            dynamic port (tests).
        server_names: DNS names (or addresses) this server is known by. They go into the
            self-signed certificate's SAN and are valid RPC targets besides ``localhost``
            and ``127.0.0.1``.
        domain: mail domain served; autodiscover answers for addresses in it only.
        public_url: tunnel URL announced by autodiscover; derived from the first server
            name and the port when empty.
        cert_file, key_file: PEM certificate chain and key. When unset, a self-signed
            certificate is created on first run in the data directory.
        handshake_timeout: bound on the TLS handshake.
        head_timeout: bound on receiving a whole HTTP request head (slowloris defence);
            over HTTP/2, on a header block, and on the time a connection has to carry
            its first authenticated request (pings do not keep an anonymous one open).
        idle_timeout: an HTTP connection with no request in progress is closed after it.
        pair_timeout: how long the first channel of an MS-RPCH virtual connection waits
            for its other half (gromox uses 10 s).
        vc_idle_timeout: an established virtual connection whose IN channel carries
            nothing (not even a ping) for this long is ended (the 15-minute VC timer of
            [MS-RPCH] 3.2.5.2.1 by default).
        connect_timeout: bound on connecting to a backend target.
        send_timeout: a peer that does not read what we send for this long is dropped.
        max_header_bytes: largest request head (request line + headers) accepted.
        max_connections: TLS connections served at once; more are refused.
        max_connections_per_address: TLS connections at once from one client address.
        max_vcs_per_user: virtual connections at once per user (an h2 stream or an
            MS-RPCH channel pair; a lone MS-RPCH channel waiting for its pair counts).
        max_vcs: virtual connections at once in total.
        max_auth_checks: credential checks run at once across all client addresses
            (the cores a KDF may use: one by default, so a flood of guesses leaves the
            other cores to the users already logged on; measured in
            docs/benchmarks.md); more wait their turn, granted round-robin across
            addresses. A check of a password not seen lately costs a scrypt derivation
            (memory-hard, on purpose): this bounds what all clients together can make
            the server spend. Credentials the authenticator has cached as good
            (``is_cached``) skip the checks and never wait.
        max_auth_checks_per_address: credential checks in progress (running or
            waiting) at once for one client address; one more is refused at once
            (``503`` + ``Retry-After``; ``503 RPC Error: 6bb`` on an MS-RPCH channel),
            however many connections and streams the address opens.
        max_auth_waiting: credential checks waiting for one of the ``max_auth_checks``
            at once, across all addresses; one more is refused at once as above, so a
            flood from many addresses is answered at the rate it comes instead of
            queueing without bound.
        out_flow_control: honour the client's OUT receive window from CONN/A1 strictly
            ([MS-RPCH] 3.2.1.1.4); turn off for clients that never acknowledge (Samba).
        in_window: receive window we advertise for the IN channel (CONN/C2).
        out_content_length: Content-Length of OUT responses (the OUT channel's
            lifetime). When it runs low the proxy recycles the channel (OUT_R2); a
            client that does not follow keeps its VC until the Content-Length is
            spent, then the VC ends cleanly (it is never exceeded).
        out_recycle_threshold: the proxy asks for a successor OUT channel (OUT_R2/A2)
            once fewer than this many bytes of the OUT Content-Length are left
            (Windows: 8 KiB). Must be below ``out_content_length``.
        channel_lifetime: client side: Content-Length of the IN channel requests and the
            ChannelLifetime announced in CONN/B1 ([MS-RPCH] 2.2.3.5.5: 128 KiB..2 GiB).
        in_recycle_threshold: client side: a successor IN channel (IN_R2) is opened once
            fewer than this many bytes of the IN Content-Length would be left (Windows:
            4 KiB); at most half of ``channel_lifetime``.
        recycle_timeout: bound on one channel recycle, on both sides: a successor
            channel must complete its hand-over within it, and a client asked for a
            successor OUT channel must open one within it once the OUT channel is full.
        connection_timeout_ms: ConnectionTimeout advertised in CONN/A3 and CONN/C2.
        keepalive_interval: longest quiet time on an OUT channel before we send a Ping
            RTS PDU (capped at half the client's ClientKeepalive).
        h2_window: HTTP/2 initial stream window and connection window we grant.
        h2_max_streams: concurrent HTTP/2 streams per TLS connection.
        h2_max_frame: largest DATA frame we accept (SETTINGS_MAX_FRAME_SIZE): larger
            frames mean fewer per bulk transfer; a peer may still use 16 KiB ones.
        h2_max_early_resets: HTTP/2 "rapid reset" defence (CVE-2023-44487): streams a
            client may reset (RST_STREAM) before we answered them, net of the streams we
            did answer, on one connection; one more and the connection is closed with
            GOAWAY(ENHANCE_YOUR_CALM). Each answered stream pays one back, so only a
            client that cancels far more requests than it lets finish reaches it.
        auth_schemes: the HTTP authentication schemes offered, in the order of the
            ``WWW-Authenticate`` headers of a 401 (clients take the first they
            support): any of ``"negotiate"`` (SPNEGO carrying NTLM), ``"ntlm"`` and
            ``"basic"``. NTLM and Negotiate authenticate an HTTP/1.1 connection
            ([MS-RPCH] 3.2.2.5: each channel's connection does its own 401
            handshake); they need the NT hashes of the user directory, so they are
            offered only when the composition root supplies them
            (:class:`tunnel.http_auth.NtlmDirectory`). HTTP/2 cannot carry them (its
            requests are not bound to a connection): an attempt there is answered with
            RST_STREAM(HTTP_1_1_REQUIRED), as IIS does, and the client retries on
            HTTP/1.1. Basic works on both. A connection whose NTLM handshake stalls
            is bounded by ``head_timeout`` between its legs.
        receive_size: read size on every socket.
        max_fragment: largest DCE/RPC fragment relayed (frag_length is a u16).
        mail: the mail listeners ``serve`` runs, announced without authentication at
            ``/.well-known/autoconfig/mail/config-v1.1.xml`` (Thunderbird) and in the
            autodiscover answers; None (or no IMAP/POP3 endpoint): no autoconfig
            document (404).
    """

    host: str = "127.0.0.1"
    port: int = 8443
    server_names: tuple[str, ...] = ()
    domain: str = ""
    public_url: str = ""
    cert_file: Path | None = None
    key_file: Path | None = None
    handshake_timeout: float = 10.0
    head_timeout: float = 10.0
    idle_timeout: float = 120.0
    pair_timeout: float = 10.0
    vc_idle_timeout: float = 900.0
    connect_timeout: float = 10.0
    send_timeout: float = 30.0
    max_header_bytes: int = 16384
    max_connections: int = 1024
    max_connections_per_address: int = 64
    max_vcs_per_user: int = 64
    max_vcs: int = 1024
    max_auth_checks: int = 1
    max_auth_checks_per_address: int = 4
    max_auth_waiting: int = 32
    out_flow_control: bool = True
    in_window: int = 262144
    out_content_length: int = DEFAULT_OUT_CONTENT_LENGTH
    out_recycle_threshold: int = 8192
    channel_lifetime: int = DEFAULT_OUT_CONTENT_LENGTH
    in_recycle_threshold: int = 4096
    recycle_timeout: float = 30.0
    connection_timeout_ms: int = 120000
    keepalive_interval: float = 150.0
    h2_window: int = 8 * 1024 * 1024
    h2_max_streams: int = 100
    h2_max_frame: int = 256 * 1024
    h2_max_early_resets: int = 100
    auth_schemes: tuple[str, ...] = ("negotiate", "ntlm", "basic")
    receive_size: int = 262144
    max_fragment: int = 0xFFFF
    mail: MailEndpoints | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        if self.mail is not None and not isinstance(self.mail, MailEndpoints):
            # The configuration file's loader offers every field as a key.
            raise ValueError("mail is not a setting: serve fills it from the mail listeners")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        for name in (
            "handshake_timeout",
            "head_timeout",
            "idle_timeout",
            "pair_timeout",
            "vc_idle_timeout",
            "connect_timeout",
            "send_timeout",
            "keepalive_interval",
            "recycle_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 1024 <= self.max_header_bytes <= 1 << 20:
            raise ValueError("max_header_bytes must be within 1 KiB..1 MiB")
        for name in (
            "max_connections",
            "max_connections_per_address",
            "max_vcs_per_user",
            "max_vcs",
            "max_auth_checks",
            "max_auth_checks_per_address",
            "max_auth_waiting",
            "h2_max_streams",
            "h2_max_early_resets",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        # [MS-RPCH] 2.2.3.5.1: a receive window is 8 KiB..256 KiB.
        if not 8192 <= self.in_window <= 262144:
            raise ValueError("in_window must be within 8 KiB..256 KiB")
        if not 4096 <= self.out_content_length <= 0x7FFFFFFF:
            raise ValueError("out_content_length must be within 4 KiB..2 GiB")
        if not 512 <= self.out_recycle_threshold < self.out_content_length:
            raise ValueError("out_recycle_threshold must be within 512..out_content_length")
        # [MS-RPCH] 2.2.3.5.5: ChannelLifetime is 128 KiB..2 GiB.
        if not 131072 <= self.channel_lifetime <= 0x7FFFFFFF:
            raise ValueError("channel_lifetime must be within 128 KiB..2 GiB")
        if not 512 <= self.in_recycle_threshold <= self.channel_lifetime // 2:
            raise ValueError("in_recycle_threshold must be within 512..channel_lifetime/2")
        # [MS-RPCH] 2.2.3.5.3: ConnectionTimeout is 120000..14400000 ms.
        if not 120000 <= self.connection_timeout_ms <= 14400000:
            raise ValueError("connection_timeout_ms must be within 120000..14400000")
        if not 65535 <= self.h2_window <= 0x7FFFFFFF:
            raise ValueError("h2_window must be within 64 KiB..2 GiB")
        # RFC 9113 6.5.2: SETTINGS_MAX_FRAME_SIZE is 2^14..2^24-1.
        if not 16384 <= self.h2_max_frame <= 16777215:
            raise ValueError("h2_max_frame must be within 16 KiB..16 MiB-1")
        parse_schemes(self.auth_schemes)  # raises ValueError for a bad list
        if not 4096 <= self.receive_size <= 1 << 20:
            raise ValueError("receive_size must be within 4 KiB..1 MiB")
        if not 1432 <= self.max_fragment <= 0xFFFF:
            raise ValueError("max_fragment must be within 1432..65535")

    @property
    def schemes(self) -> tuple[Scheme, ...]:
        """``auth_schemes`` as :class:`~tunnel.http_auth.Scheme` values."""
        return parse_schemes(self.auth_schemes)

    @property
    def advertised_url(self) -> str:
        """The tunnel URL announced to clients (autodiscover, logs)."""
        if self.public_url:
            return self.public_url
        name = self.server_names[0] if self.server_names else self.host
        if ":" in name:
            name = f"[{name}]"
        return f"https://{name}:{self.port}/"
