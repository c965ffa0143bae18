"""The server's configuration file (TOML), with the defaults documented in one place.

Every key is optional; :data:`DEFAULT_CONFIG_TOML` is the documented default file
(``mapi-anywhere config`` prints it). Unknown sections or keys are errors, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dcerpc.config import RpcConfig
from dcerpc.security import AuthLevel
from tunnel.config import TunnelConfig

DEFAULT_CONFIG_TOML = """\
# mapi-anywhere configuration. Every key is optional; these are the defaults.

[server]
# Where the SQLite databases, the generated certificate and the state live.
data_dir = "mapi-anywhere-data"
# Address every listener binds to. Use "0.0.0.0" or "::" to serve the network.
host = "127.0.0.1"
# Log level: DEBUG, INFO, WARNING, ERROR.
log_level = "INFO"
# Log to this file instead of standard error (created mode 0600). It is reopened when
# it is moved or removed, so logrotate needs no copytruncate and no signal.
# log_file = "/var/log/mapi-anywhere/serve.log"
# Seconds SIGTERM or Ctrl-C may take to stop everything; past it the process logs one
# line and exits at once with status 70. A second Ctrl-C exits at once.
shutdown_timeout = 10.0

[endpoint_mapper]
# The endpoint mapper's port: 135 in production (needs privileges), 1135 by default.
port = 1135

[services]
# Port for the services' dynamic listeners; 0 = let the OS choose.
dynamic_port = 0

[store]
# On first run with no users, create user "demo" with a random password, printed in
# the log and kept in <data_dir>/demo-password.txt (mode 0600).
demo_user = true
# Seconds one batch of store operations may run (restrictions and sorts included);
# past it the client gets MAPI_E_TIMEOUT and nothing of the batch's write is kept.
batch_seconds = 30
# Worker threads for store batches, in all and for one user (a user's further calls
# wait their turn without taking a thread).
batch_threads = 32
batch_threads_per_user = 4
# Seconds a session whose connections all closed is kept for its client to resume.
detached_grace = 60
# Size limit of a mailbox, in bytes: the sum of its messages' sizes, Deleted Items
# included. A save, copy or delivery past it answers MAPI_E_NOT_ENOUGH_DISK. A mailbox
# may have its own (mapi.objects.quota.set_mailbox_quota). 0 = no limit.
mailbox_quota_bytes = 0
# Percent of a mailbox's limit where clients are told to warn (PR_STORAGE_QUOTA_LIMIT).
quota_warning_percent = 90
# Largest message, attachments included, in bytes: a save or stream write past it
# answers MAPI_E_TOO_BIG. 0 = no limit.
max_message_bytes = 0

[addressbook]
# The address book (NSPI and the referral service, docs/addressbook.md).
# The organisation named in every user's X.500-style address (legacy DN,
# "/o=<organization>/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/
# cn=<login name>"). Clients keep these addresses in recipients and caches: set it
# before the first mail. Printable ASCII, at most 64 characters, no "/" or "=".
organization = "mapi-anywhere"
# Worker threads for the heavy calls (pages, searches, name resolution), a pool of
# their own; and the seconds one such call may run (past it: the fault
# nca_s_server_too_busy).
threads = 8
call_seconds = 5.0
# Seconds before a directory change made by another process shows in the address book
# (changes made through this server show at once).
refresh_seconds = 5.0

[tunnel]
# The HTTPS front end: RPC over HTTP v2 (HTTP/1.1) and HTTP/2, on one TLS port.
enabled = true
# 443 in production (needs privileges); 0 = a dynamic port.
port = 8443
host = "127.0.0.1"
# Names clients use for this server: they go into the self-signed certificate and are
# valid RPC targets besides localhost and 127.0.0.1.
server_names = []
# Mail domain for autodiscover (e.g. "example.org"); empty answers no address.
domain = ""
# PEM certificate and key; when unset a self-signed pair is made in the data directory
# and its SHA-256 fingerprint is logged (clients pin it).
# cert_file = "/etc/mapi-anywhere/cert.pem"
# key_file = "/etc/mapi-anywhere/key.pem"
# Limits and timeouts (seconds): see tunnel/config.py for every key.
max_connections = 1024
max_vcs_per_user = 64
head_timeout = 10.0
idle_timeout = 120.0
# HTTP authentication the proxy offers in its 401, in this order: "negotiate" (SPNEGO
# carrying NTLM), "ntlm", "basic". NTLM and Negotiate authenticate one HTTP/1.1
# connection each; on HTTP/2 only Basic is accepted (docs/security.md).
auth_schemes = ["negotiate", "ntlm", "basic"]
# Least DCE/RPC auth level of connections that come through the tunnel (none, connect,
# integrity, privacy). "none": TLS already protects them from the network, and the
# proxy authenticated the user before forwarding a byte; the store still asks every
# client to log on (docs/security.md). Never above [rpc] min_auth_level's effect on
# the LAN: this only lowers what tunnel connections need.
min_auth_level = "none"

[smtp]
# Incoming Internet mail (SMTP, RFC 5321) for the local domains, delivered into the
# users' Inboxes. Submission (587/465, AUTH) and relaying come later: this listener
# offers no AUTH and refuses mail for other domains (550 5.7.1, no open relay).
enabled = true
# 25 in production (needs privileges, see docs/operating.md); 0 = a dynamic port.
port = 2525
host = "127.0.0.1"
# Largest message accepted, in bytes (advertised as SIZE; more: 552 5.3.4).
max_message_bytes = 33554432
# Mail domains delivered here; empty: the domains of the users' e-mail addresses
# (login names count as "name@localhost", so user "demo" receives demo@localhost).
local_domains = []
# Connections served at once; more get 421 4.3.2.
max_connections = 256
# The login that receives mail for <postmaster> and postmaster@ each local domain,
# which every mail server must accept (RFC 5321 4.5.1); empty: a user named
# "postmaster", else the first account by login name (the demo user at first).
postmaster = ""

[submission]
# Mail submission for the users' mail programs (RFC 6409, RFC 8314): AUTH PLAIN or
# LOGIN with the user's password, offered only under TLS; then mail to local users is
# delivered, mail to other domains goes to the outbound queue, and the sender's copy is
# filed in their Sent Items. The envelope sender must be one of the user's addresses.
# Message size and local domains are those of [smtp].
enabled = true
host = "127.0.0.1"
# STARTTLS submission: 587 in production; 0 = a dynamic port.
port = 1587
# Implicit TLS submission ("submissions"): 465 in production; 0 = a dynamic port.
tls_port = 1465
# Connections served at once on each port; more get 421 4.3.2.
max_connections = 256

[imap]
# IMAP4rev2 (RFC 9051; IMAP4rev1 clients too) on the users' mailboxes: every folder, live
# (IDLE). Logon (LOGIN, AUTHENTICATE PLAIN) only under TLS, throttled like every other
# logon; see docs/imap.md.
enabled = true
host = "127.0.0.1"
# STARTTLS: 143 in production; 0 = a dynamic port.
port = 1143
# Implicit TLS ("imaps"): 993 in production; 0 = a dynamic port.
tls_port = 1993
# Connections served at once on both ports together; more get "* BYE [UNAVAILABLE]".
max_connections = 256

[pop3]
# POP3 (RFC 1939) on each user's Inbox; logon (USER/PASS, AUTH PLAIN) only under TLS;
# see docs/pop3.md.
enabled = true
host = "127.0.0.1"
# STLS: 110 in production; 0 = a dynamic port.
port = 1110
# Implicit TLS ("pop3s"): 995 in production; 0 = a dynamic port.
tls_port = 1995
# Connections served at once on both ports together; more get "-ERR [SYS/TEMP]".
max_connections = 256

[outbound]
# Mail to other domains (MAPI submissions, SMTP submission): a durable queue in
# <data_dir>/queue/, delivered by SMTP to the smarthost, or to the domains' MX hosts
# when none is set, DKIM-signed; see docs/smtp.md "Outbound mail".
enabled = true
# Relay host; "" = deliver by MX lookup (port 25, STARTTLS when offered).
smarthost = ""
smarthost_port = 587
# "starttls" (required), "tls" (implicit TLS, port 465) or "none" (clear text).
smarthost_tls = "starttls"
# AUTH PLAIN to the smarthost (only under TLS); the password inline or in a file.
smarthost_user = ""
smarthost_password = ""
# smarthost_password_file = "/etc/mapi-anywhere/smarthost.pw"
# smarthost_ca_file = "/etc/mapi-anywhere/smarthost-ca.pem"   (default: system CAs)
# Seconds before the first retry; each next one waits twice as long, up to retry_max.
retry_initial = 300.0
retry_max = 14400.0
# Seconds after which undelivered mail is returned to the sender (5 days).
expiry = 432000.0
# Our name in EHLO and in reports; "" = the machine's name.
hostname = ""
# DKIM: the key is made on first run in <data_dir>/dkim/; `mapi-anywhere dkim` prints
# the DNS record. dkim_domain "" = the first local domain.
dkim_selector = "mail"
dkim_domain = ""

[rpc]
# Least DCE/RPC auth level (NTLM or SPNEGO) a LAN client needs to reach the store:
# "privacy" (signed and sealed: nobody on the LAN reads or changes the traffic),
# "integrity" (signed: readable, not changeable), "connect" (authenticated once, then
# in clear) or "none" (no DCE/RPC authentication: everything in clear on the LAN).
# Anonymous NTLM is always refused by the store; the endpoint mapper and the
# management interface stay open to everyone, as on Windows. See docs/security.md.
min_auth_level = "privacy"
# Largest fragment sent or accepted before negotiation (1432 .. 65535).
max_fragment = 65528
# Largest reassembled request, in bytes.
max_request_size = 4194304
# Calls outstanding at once on one connection.
max_concurrent_calls = 32
# Seconds a connection may stay silent with no call running.
idle_timeout = 300.0
# Seconds an incomplete PDU may take to arrive whole.
receive_timeout = 30.0
# Seconds a peer may take to read our replies.
send_timeout = 30.0
# Stream connections served at once by one service; tunnel connections are counted
# apart, against the same number, so LAN sockets cannot lock tunnel users out.
max_connections = 1024
# Stream connections at once from one client address (loopback included). Raise it
# for a front end that relays many users over TCP from one address.
max_connections_per_address = 64
# Seconds a new connection may take to complete its bind.
bind_timeout = 10.0
# Bytes of unfinished fragmented requests all connections of one service may hold;
# a request past it is refused with a fault (the client may retry).
reassembly_budget = 268435456
"""


class ConfigError(ValueError):
    """The configuration file is unreadable or holds an unknown or invalid value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSection:
    data_dir: Path = Path("mapi-anywhere-data")
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_file: Path | None = None
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not (0 < self.shutdown_timeout <= 3600):
            raise ValueError(f"shutdown_timeout: {self.shutdown_timeout} is not in (0, 3600]")


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointMapperSection:
    port: int = 1135


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicesSection:
    dynamic_port: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSection:
    demo_user: bool = True
    #: Seconds one batch of store operations may run before it answers MAPI_E_TIMEOUT.
    batch_seconds: float = 30.0
    #: Worker threads for store batches in all, and for one user.
    batch_threads: int = 32
    batch_threads_per_user: int = 4
    #: Seconds a session whose connections all closed waits for its client to resume.
    detached_grace: float = 60.0
    #: Quotas (:mod:`mapi.objects.quota`): the mailbox size limit (0: none), where warnings
    #: start (percent of it), the message size limit (0: none); all bytes.
    mailbox_quota_bytes: int = 0
    quota_warning_percent: int = 90
    max_message_bytes: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.batch_seconds <= 3600:
            raise ValueError(f"batch_seconds: {self.batch_seconds} is not in (0, 3600]")
        if not 1 <= self.batch_threads_per_user <= self.batch_threads <= 1024:
            raise ValueError(
                "batch_threads_per_user and batch_threads: need "
                "1 <= batch_threads_per_user <= batch_threads <= 1024"
            )
        if not 0 <= self.detached_grace <= 86400:
            raise ValueError(f"detached_grace: {self.detached_grace} is not in [0, 86400]")
        for key in ("mailbox_quota_bytes", "max_message_bytes"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: {getattr(self, key)} is negative (0 = no limit)")
        if not 1 <= self.quota_warning_percent <= 100:
            raise ValueError(
                f"quota_warning_percent: {self.quota_warning_percent} is not in [1, 100]"
            )


#: The longest organisation name (X.500's upper bound for an organization name).
MAX_ORGANIZATION = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressBookSection:
    """``[addressbook]`` (see :data:`DEFAULT_CONFIG_TOML`)."""

    organization: str = "mapi-anywhere"
    threads: int = 8
    call_seconds: float = 5.0
    refresh_seconds: float = 5.0

    def __post_init__(self) -> None:
        org = self.organization
        if not org or org != org.strip() or len(org) > MAX_ORGANIZATION:
            raise ValueError(
                f"organization: {org!r} must be 1 to {MAX_ORGANIZATION} characters, "
                "without leading or trailing spaces"
            )
        bad = sorted({c for c in org if c in "/=" or not (c.isascii() and c.isprintable())})
        if bad:
            raise ValueError(
                f"organization: {org!r} cannot be part of a legacy DN (/o=...): "
                f"it holds {', '.join(repr(c) for c in bad)} (printable ASCII only, no / or =)"
            )
        if not 1 <= self.threads <= 256:
            raise ValueError(f"threads: {self.threads} is not in [1, 256]")
        if not 0 < self.call_seconds <= 3600:
            raise ValueError(f"call_seconds: {self.call_seconds} is not in (0, 3600]")
        if not 0 < self.refresh_seconds <= 3600:
            raise ValueError(f"refresh_seconds: {self.refresh_seconds} is not in (0, 3600]")


#: ``min_auth_level`` values and the DCE/RPC auth levels they stand for.
AUTH_LEVELS: dict[str, int] = {
    "none": AuthLevel.NONE,
    "connect": AuthLevel.CONNECT,
    "integrity": AuthLevel.PKT_INTEGRITY,
    "privacy": AuthLevel.PKT_PRIVACY,
}


def auth_level(name: str) -> int:
    """The auth level a ``min_auth_level`` value names.

    Raises:
        ValueError: not one of :data:`AUTH_LEVELS`.
    """
    try:
        return AUTH_LEVELS[name]
    except KeyError:
        raise ValueError(
            f"min_auth_level: {name!r} is not one of {', '.join(AUTH_LEVELS)}"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelSection:
    enabled: bool = True
    settings: TunnelConfig = field(default_factory=TunnelConfig)
    #: Least DCE/RPC auth level of tunnel connections (see :data:`DEFAULT_CONFIG_TOML`).
    min_auth_level: str = "none"

    def __post_init__(self) -> None:
        auth_level(self.min_auth_level)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSection:
    """``[smtp]``: the incoming SMTP listener (see :data:`DEFAULT_CONFIG_TOML`)."""

    enabled: bool = True
    port: int = 2525
    host: str = "127.0.0.1"
    max_message_bytes: int = 32 * 1024 * 1024
    local_domains: tuple[str, ...] = ()
    max_connections: int = 256
    postmaster: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        if not 1 <= self.max_message_bytes <= 1 << 31:
            raise ValueError(f"max_message_bytes: {self.max_message_bytes} is not in [1, 2**31]")
        if not 1 <= self.max_connections <= 65536:
            raise ValueError(f"max_connections: {self.max_connections} is not in [1, 65536]")
        for domain in self.local_domains:
            if not domain or "@" in domain or any(c.isspace() for c in domain):
                raise ValueError(f"local_domains: {domain!r} is not a domain")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmissionSection:
    """``[submission]``: the SMTP submission listeners (see :data:`DEFAULT_CONFIG_TOML`)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 1587
    tls_port: int = 1465
    max_connections: int = 256

    def __post_init__(self) -> None:
        for name in ("port", "tls_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} {getattr(self, name)} out of range")
        if self.port == self.tls_port != 0:
            raise ValueError(f"port and tls_port are both {self.port}")
        if not 1 <= self.max_connections <= 65536:
            raise ValueError(f"max_connections: {self.max_connections} is not in [1, 65536]")


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxAccessSection:
    """``[imap]`` and ``[pop3]``: a STARTTLS and an implicit-TLS listener."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 1143
    tls_port: int = 1993
    max_connections: int = 256

    def __post_init__(self) -> None:
        for name in ("port", "tls_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} {getattr(self, name)} out of range")
        if self.port == self.tls_port != 0:
            raise ValueError(f"port and tls_port are both {self.port}")
        if not 1 <= self.max_connections <= 65536:
            raise ValueError(f"max_connections: {self.max_connections} is not in [1, 65536]")


@dataclass(frozen=True, slots=True, kw_only=True)
class ImapSection(MailboxAccessSection):
    """``[imap]`` (see :data:`DEFAULT_CONFIG_TOML`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pop3Section(MailboxAccessSection):
    """``[pop3]`` (see :data:`DEFAULT_CONFIG_TOML`)."""

    port: int = 1110
    tls_port: int = 1995


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcAuthSection:
    """``[rpc] min_auth_level`` (the rest of ``[rpc]`` is :class:`RpcConfig`)."""

    min_auth_level: str = "privacy"

    def __post_init__(self) -> None:
        auth_level(self.min_auth_level)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundSection:
    """``[outbound]``: the outbound queue and its delivery (see :data:`DEFAULT_CONFIG_TOML`)."""

    enabled: bool = True
    smarthost: str = ""
    smarthost_port: int = 587
    smarthost_tls: str = "starttls"
    smarthost_user: str = ""
    smarthost_password: str = ""
    smarthost_password_file: Path | None = None
    smarthost_ca_file: Path | None = None
    retry_initial: float = 300.0
    retry_max: float = 14400.0
    expiry: float = 432000.0
    hostname: str = ""
    dkim_selector: str = "mail"
    dkim_domain: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.smarthost_port <= 65535:
            raise ValueError(f"smarthost_port {self.smarthost_port} out of range")
        if self.smarthost_tls not in ("starttls", "tls", "none"):
            raise ValueError(f"smarthost_tls: {self.smarthost_tls!r} is not starttls, tls or none")
        if not 0 < self.retry_initial <= self.retry_max:
            raise ValueError("retry_initial must be > 0 and <= retry_max")
        if not self.expiry > 0:
            raise ValueError("expiry must be > 0")
        selector = self.dkim_selector
        if not selector or not all(c.isalnum() or c in "-_" for c in selector):
            raise ValueError(f"dkim_selector: {selector!r} is not a DNS label")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    endpoint_mapper: EndpointMapperSection = field(default_factory=EndpointMapperSection)
    services: ServicesSection = field(default_factory=ServicesSection)
    store: StoreSection = field(default_factory=StoreSection)
    addressbook: AddressBookSection = field(default_factory=AddressBookSection)
    tunnel: TunnelSection = field(default_factory=TunnelSection)
    smtp: SmtpSection = field(default_factory=SmtpSection)
    submission: SubmissionSection = field(default_factory=SubmissionSection)
    imap: ImapSection = field(default_factory=ImapSection)
    pop3: Pop3Section = field(default_factory=Pop3Section)
    rpc: RpcConfig = field(default_factory=RpcConfig)
    #: ``[rpc] min_auth_level``: the store's least auth level on the LAN.
    rpc_auth: RpcAuthSection = field(default_factory=RpcAuthSection)
    outbound: OutboundSection = field(default_factory=OutboundSection)


#: Config fields that are not TOML sections of their own.
_NOT_SECTIONS = {"rpc_auth"}


def _min_auth_level(section: str, table: dict[str, Any], default: str) -> str:
    value = table.pop("min_auth_level", default)
    if not isinstance(value, str) or value not in AUTH_LEVELS:
        raise ConfigError(
            f"[{section}] min_auth_level: expected one of {', '.join(AUTH_LEVELS)}, got {value!r}"
        )
    return value


def _section(cls: type[Any], name: str, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(sorted(unknown))}")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        converted[key] = _convert(name, key, getattr(cls(), key), value)
    try:
        return cls(**converted)
    except ValueError as exc:
        raise ConfigError(f"[{name}]: {exc}") from exc


def _convert(section: str, key: str, default: Any, value: Any) -> Any:
    """Check ``value`` against the type of the key's default; paths and lists convert."""
    where = f"[{section}] {key}"
    if default is None or isinstance(default, Path):  # optional paths (cert_file, ...)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string")
        return Path(value).expanduser()
    if isinstance(default, tuple):
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, type(default)):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def parse_config(text: str) -> Config:
    """Parse a TOML configuration; raises :class:`ConfigError` on any problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    sections = {f.name: f for f in fields(Config) if f.name not in _NOT_SECTIONS}
    unknown = set(doc) - set(sections)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in doc.items():
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
        if name == "tunnel":
            enabled = value.pop("enabled", True)
            if not isinstance(enabled, bool):
                raise ConfigError("[tunnel] enabled: expected bool")
            level = _min_auth_level(name, value, "none")
            values[name] = TunnelSection(
                enabled=enabled, settings=_section(TunnelConfig, name, value), min_auth_level=level
            )
        elif name == "rpc":
            values["rpc_auth"] = RpcAuthSection(
                min_auth_level=_min_auth_level(name, value, "privacy")
            )
            values[name] = _section(RpcConfig, name, value)
        else:
            values[name] = _section(type(getattr(Config(), name)), name, value)
    config = Config(**values)
    if config.server.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"[server] log_level: unknown level {config.server.log_level!r}")
    for port in (
        config.endpoint_mapper.port,
        config.services.dynamic_port,
        config.tunnel.settings.port,
    ):
        if not 0 <= port <= 65535:
            raise ConfigError(f"port {port} out of range")
    return config


def load_config(path: Path | None) -> Config:
    """Load ``path``, or the defaults when ``path`` is None."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    return parse_config(text)


def with_overrides(config: Config, **server: Any) -> Config:
    """``config`` with command-line overrides (None values are ignored)."""
    changes = {k: v for k, v in server.items() if v is not None}
    epm_port = changes.pop("epm_port", None)
    tunnel_port = changes.pop("tunnel_port", None)
    no_tunnel = changes.pop("no_tunnel", False)
    smtp_port = changes.pop("smtp_port", None)
    no_smtp = changes.pop("no_smtp", False)
    submission_port = changes.pop("submission_port", None)
    submissions_port = changes.pop("submissions_port", None)
    no_submission = changes.pop("no_submission", False)
    access = {
        (name, key): changes.pop(f"{name}{suffix}_port", None)
        for name, suffix, key in (
            ("imap", "", "port"), ("imap", "s", "tls_port"),
            ("pop3", "", "port"), ("pop3", "s", "tls_port"),
        )
    }  # fmt: skip
    disabled = {name: changes.pop(f"no_{name}", False) for name in ("imap", "pop3")}
    for key in ("data_dir", "log_file"):
        if key in changes:
            changes[key] = Path(changes[key]).expanduser()
    out = replace(config, server=replace(config.server, **changes))
    if "host" in changes:  # one address for every listener, the tunnel's and SMTP's included
        settings = replace(out.tunnel.settings, host=changes["host"])
        out = replace(out, tunnel=replace(out.tunnel, settings=settings))
        out = replace(out, smtp=replace(out.smtp, host=changes["host"]))
        out = replace(out, submission=replace(out.submission, host=changes["host"]))
        out = replace(out, imap=replace(out.imap, host=changes["host"]))
        out = replace(out, pop3=replace(out.pop3, host=changes["host"]))
    if epm_port is not None:
        out = replace(out, endpoint_mapper=replace(out.endpoint_mapper, port=epm_port))
    if tunnel_port is not None:
        settings = replace(out.tunnel.settings, port=tunnel_port)
        out = replace(out, tunnel=replace(out.tunnel, settings=settings))
    if no_tunnel:
        out = replace(out, tunnel=replace(out.tunnel, enabled=False))
    for flag, port in (
        ("--epm-port", epm_port),
        ("--tunnel-port", tunnel_port),
        ("--smtp-port", smtp_port),
        ("--submission-port", submission_port),
        ("--submissions-port", submissions_port),
        *((f"--{n}{'s' if k == 'tls_port' else ''}-port", v) for (n, k), v in access.items()),
    ):
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"{flag}: port {port} out of range (0 .. 65535)")
    if smtp_port is not None:
        out = replace(out, smtp=replace(out.smtp, port=smtp_port))
    if no_smtp:
        out = replace(out, smtp=replace(out.smtp, enabled=False))
    if submission_port is not None:
        out = replace(out, submission=replace(out.submission, port=submission_port))
    if submissions_port is not None:
        out = replace(out, submission=replace(out.submission, tls_port=submissions_port))
    if no_submission:
        out = replace(out, submission=replace(out.submission, enabled=False))
    for (name, key), port in access.items():
        if port is not None:
            out = replace(out, **{name: replace(getattr(out, name), **{key: port})})
    for name, off in disabled.items():
        if off:
            out = replace(out, **{name: replace(getattr(out, name), enabled=False)})
    return out
