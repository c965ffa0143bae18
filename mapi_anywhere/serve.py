"""The composition root: the one place that starts and wires every service of ``serve``.

The endpoint mapper listens on its well-known port. Every other service (the object
store, and any extra ones a caller passes) gets a dynamic port and registers each
of its interfaces with the endpoint mapper (towers for ncacn_ip_tcp at the address
it listens on, and an annotation), so a LAN client finds it by interface UUID.
Everything runs in one nursery: stopping ``serve`` (SIGINT/SIGTERM or cancellation)
closes every listener and connection, then the store's databases.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import logging.handlers
import os
import secrets
import signal
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import trio

from dcerpc.interface import Interface
from dcerpc.server import RpcServer
from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, Tower, epm_interface, mgmt_interface
from mapi.access.throttle import LogonThrottle
from mapi.addressbook.gal import DEFAULT_ORGANIZATION, Gal, build_gal
from mapi.addressbook.nspi import server_guid_of
from mapi.addressbook.service import AddressBookService, Offload
from mapi.budget import WorkBudget
from mapi.model import errors as mapi_errors
from mapi.model.limits import DEFAULT_LIMITS, Limits
from mapi.rpc.service import ServiceLimits, StoreService
from mapi.rpc.workers import WorkerLimits, WorkerPools, run_budgeted
from mapi.store import ObjectStore
from mapi_anywhere.authenticator import DirectoryAuthenticator
from mapi_anywhere.config import Config, auth_level
from mapi_anywhere.control import AlreadyRunning, ServerError, serve_control
from mapi_anywhere.imap_service import start_imap
from mapi_anywhere.listening import StartupError, listening, port_of, server_names
from mapi_anywhere.outbound_service import start_outbound
from mapi_anywhere.pop3_service import start_pop3
from mapi_anywhere.smtp_service import start_smtp, start_submission
from tunnel.config import MailEndpoints, mail_endpoints
from tunnel.drivers.context import TunnelInfo
from tunnel.http_auth import server_names as tunnel_ntlm_names
from tunnel.policy import OA_NSPI_PORT, OA_REFERRAL_PORT, OA_STORE_PORT, AllowList
from tunnel.proxy import serve_tunnel

log = logging.getLogger("mapi_anywhere")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A DCE/RPC service that ``serve`` starts on a dynamic port and registers."""

    name: str
    interfaces: Sequence[Interface]
    annotation: str


@dataclass(slots=True)
class RunningServer:
    """What ``serve`` started, handed to ``task_status.started`` (tests read the ports)."""

    host: str
    epm_port: int
    database: EndpointDatabase
    store: ObjectStore
    service_ports: dict[str, int] = field(default_factory=dict)
    tunnel: TunnelInfo | None = None
    #: The store's RPC service (sessions, admin operations).
    store_service: StoreService | None = None
    #: Where admin commands reach this server (None: no control channel).
    control_socket: Path | None = None
    #: The tunnel's credential checker (and cache).
    authenticator: DirectoryAuthenticator | None = None
    #: The address book (NSPI and referral) and the keeper of its GAL snapshot.
    addressbook: AddressBookService | None = None
    gal: GalKeeper | None = None
    #: The incoming SMTP listener's port (None: ``[smtp] enabled = false``).
    smtp_port: int | None = None
    #: The submission listeners' ports, STARTTLS and implicit TLS (None: disabled).
    submission_port: int | None = None
    submissions_port: int | None = None
    #: The IMAP and POP3 listeners' ports, STARTTLS and implicit TLS (None: disabled).
    imap_port: int | None = None
    imaps_port: int | None = None
    pop3_port: int | None = None
    pop3s_port: int | None = None


def tunnel_target_names(configured: Sequence[str]) -> list[str]:
    """The names a tunnel client may give as its RPC target: the configured server
    names, and the NetBIOS and DNS names the tunnel's NTLM CHALLENGE announces (a
    client such as impacket that is given no RPC host name takes the NetBIOS one from
    there); ``localhost`` and ``127.0.0.1`` are always added by the allow list."""
    announced = tunnel_ntlm_names(configured)
    return [*configured, announced.netbios_computer, announced.dns_computer]


def well_known_ports(service_ports: dict[str, int]) -> dict[int, int]:
    """Outlook Anywhere's fixed ports to ours: 6001 the store, 6002 and 6004 the
    address book (NSPI and referral answer on both, as on Exchange)."""
    mapping: dict[int, int] = {}
    if "store" in service_ports:
        mapping[OA_STORE_PORT] = service_ports["store"]
    if "addressbook" in service_ports:
        mapping[OA_REFERRAL_PORT] = mapping[OA_NSPI_PORT] = service_ports["addressbook"]
    return mapping


def mail_endpoints_of(running: RunningServer) -> MailEndpoints | None:
    """The mail listeners ``running`` has, for the tunnel to announce (None: none)."""
    mail = MailEndpoints(
        imap=mail_endpoints(running.imap_port, running.imaps_port),
        pop3=mail_endpoints(running.pop3_port, running.pop3s_port),
        submission=mail_endpoints(running.submission_port, running.submissions_port),
    )
    return mail if mail.imap or mail.pop3 or mail.submission else None


def _tower_host(host: str) -> str:
    # A wildcard bind has no single address to advertise: register 0.0.0.0, which the
    # endpoint mapper replaces with the address each client reached it on.
    return "0.0.0.0" if host in ("", "0.0.0.0", "::") else host


def _backend_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


# -- the data directory ----------------------------------------------------------------------

DEMO_USER = "demo"
DEMO_PASSWORD_FILE = "demo-password.txt"


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` with mode 0700 before anything is written in it.

    Missing parents are created as the umask says. An existing directory with a looser
    mode (it holds password verifiers, mailboxes and the TLS key) is tightened to 0700,
    with a warning; one that is not ours or not a directory stops the start.
    """
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        data_dir.mkdir(mode=0o700)
        os.chmod(data_dir, 0o700)  # whatever the umask
        return
    except FileExistsError:
        pass
    info = data_dir.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise StartupError(f"data directory {data_dir} exists and is not a directory")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        try:
            os.chmod(data_dir, 0o700)
        except PermissionError as exc:
            raise StartupError(
                f"data directory {data_dir} has mode {mode:04o} and is not ours to tighten "
                f"({exc.strerror}); make it mode 0700, owned by the user that runs serve"
            ) from exc
        log.warning(
            "data directory %s had mode %04o: now 0700 (it holds password verifiers, "
            "mailboxes and the TLS key)",
            data_dir,
            mode,
        )


def store_limits(config: Config) -> Limits:
    """The store's limits with the ``[store]`` quota keys applied."""
    settings = config.store
    return dataclasses.replace(
        DEFAULT_LIMITS,
        max_mailbox_bytes=settings.mailbox_quota_bytes,
        mailbox_warning_percent=settings.quota_warning_percent,
        max_message_bytes=settings.max_message_bytes,
    )


def ensure_demo_user(store: ObjectStore, data_dir: Path) -> str | None:
    """On a store without users, create ``demo`` with a random password; returns it.

    The password is written once to ``<data_dir>/demo-password.txt`` (mode 0600); it is
    returned (to be logged) only by the call that created the user, None otherwise.
    """
    if store.list_users():
        return None
    password = secrets.token_urlsafe(12)
    store.add_user(DEMO_USER, password, display_name="Demo User", email="demo@localhost")
    fd = os.open(data_dir / DEMO_PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return password


def forget_demo_password(data_dir: Path, username: str) -> None:
    """``demo``'s password changed or ``demo`` is gone: its saved password file goes."""
    if username != DEMO_USER:
        return
    saved = data_dir / DEMO_PASSWORD_FILE
    if saved.exists():
        saved.unlink(missing_ok=True)
        log.info("removed %s: the password of %s changed or the user was deleted", saved, username)


# -- the address book's snapshot --------------------------------------------------------------


class GalKeeper:
    """Keeps the address book's GAL snapshot current: built at the start, rebuilt in a
    worker thread when the directory changed (a change through this server wakes it at
    once; one made by another process is seen within :attr:`interval` seconds)."""

    def __init__(
        self,
        store: ObjectStore,
        organization: str = DEFAULT_ORGANIZATION,
        interval: float = 5.0,
    ) -> None:
        self.store = store
        self.organization = organization
        self.interval = interval
        self.server_guid = server_guid_of(store.directory.server_secret)
        self._mids: dict[str, int] = {}
        self._seen: tuple[int, int] | None = None
        self._version = 0
        self._wake = trio.Event()
        self.current: Gal = self._build()[0]

    def _build(self) -> tuple[Gal, tuple[int, int]]:
        seen = self.store.directory.version()
        self._version += 1
        gal, self._mids = build_gal(
            self.store.directory.list_users(),
            organization=self.organization,
            server_guid=self.server_guid,
            previous=self._mids,
            version=self._version,
        )
        return gal, seen

    def _refresh_sync(self) -> bool:
        if self.store.directory.version() == self._seen:
            return False
        self.current, self._seen = self._build()
        return True

    def changed(self, *_: object) -> None:
        """The directory changed through this process: rebuild soon (event loop only)."""
        self._wake.set()

    async def refresh(self) -> bool:
        """Rebuild if the directory changed; True when it did."""
        return await trio.to_thread.run_sync(self._refresh_sync)

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                if await self.refresh():
                    log.info("address book: %d entries", len(self.current))
            except Exception:
                log.exception("address book: rebuilding the GAL failed")


def addressbook_offload(threads: int, seconds: float) -> Offload:
    """Runs an address-book call in a worker thread of its own pool (``threads``:
    ``[addressbook] threads``; it never takes a store batch's thread) under a work
    budget of ``seconds``, so the event loop (every other connection) never waits for
    it; cancelling the call (its connection went away) cancels the budget."""
    limiter = trio.CapacityLimiter(threads)

    async def offload(work: Callable[[], bytes]) -> bytes:
        return await run_budgeted(work, WorkBudget(seconds, time.monotonic), limiter)

    return offload


# -- the control channel's operations --------------------------------------------------------


class _Admin:
    """What admin commands do in the running server (:mod:`mapi_anywhere.control`)."""

    def __init__(self, service: StoreService, gal: GalKeeper | None = None) -> None:
        self.service = service
        self.gal = gal

    async def update_user(self, user: str, changes: str) -> dict[str, Any]:
        """usermod: ``changes`` is a JSON object of details (see Directory.update_user)."""
        try:
            fields = json.loads(changes)
            if not isinstance(fields, dict):
                raise ValueError("changes must be a JSON object")
            record = await trio.to_thread.run_sync(
                functools.partial(self.service.store.directory.update_user, user, **fields)
            )
        except (mapi_errors.MapiError, ValueError, TypeError) as exc:
            raise ServerError(str(exc)) from None
        if self.gal is not None:
            await self.gal.refresh()
        return {"username": record.username}

    async def sessions(self) -> list[dict[str, Any]]:
        return [
            {
                "handle": info.handle,
                "user": info.user,
                "address": info.address,
                "transport": info.transport,
                "age": info.age,
                "idle": info.idle,
            }
            for info in self.service.list_sessions()
        ]

    async def end_session(self, handle: str) -> bool:
        return await self.service.end_session(handle)

    async def credentials_changed(self) -> None:
        await self.service.refresh_credentials()

    async def end_user_sessions(self, user: str) -> int:
        return await self.service.end_user_sessions(user)

    async def delete_user(self, user: str) -> dict[str, Any]:
        # The service ends the sessions, closes the mailbox, deletes, and tells the
        # callbacks (the tunnel's authenticator, forget_demo_password).
        try:
            record = await self.service.delete_user(user)
        except (mapi_errors.MapiError, ValueError) as exc:
            raise ServerError(str(exc)) from None
        return {"username": record.username}

    async def set_password(self, user: str, password: str) -> int:
        try:
            return await self.service.set_password(user, password)
        except (mapi_errors.MapiError, ValueError) as exc:
            raise ServerError(str(exc)) from None

    async def quota(self, user: str, limit: str) -> dict[str, Any]:
        """``limit``: "" to show, "default" to take the mailbox's own limit away, else
        a number of bytes (0: no limit)."""
        try:
            change, value = parse_quota_limit(limit)
            used, applies, own = await self.service.mailbox_quota(user, value, change=change)
        except (mapi_errors.MapiError, ValueError) as exc:
            raise ServerError(str(exc)) from None
        return {"user": user, "used": used, "limit": applies, "own": own}


def parse_quota_limit(text: str) -> tuple[bool, int | None]:
    """A quota argument: "" (no change), "default" (take the mailbox's own limit away),
    or bytes with an optional K, M, G or T suffix (powers of 1024; 0: no limit).

    Raises:
        ValueError: anything else.
    """
    text = text.strip()
    if not text:
        return False, None
    if text.lower() == "default":
        return True, None
    scale = 1
    suffix = text[-1].upper()
    if suffix in ("K", "M", "G", "T"):
        scale = 1024 ** ("KMGT".index(suffix) + 1)
        text = text[:-1]
    if not text.isdigit():
        raise ValueError(f"a quota is bytes (e.g. 500M, 2G), 0 for none, or 'default': {text!r}")
    return True, int(text) * scale


# -- the server ------------------------------------------------------------------------------


async def run_server(
    config: Config,
    services: Sequence[ServiceSpec] = (),
    *,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start the control channel, the endpoint mapper, the object store and ``services``;
    run until cancelled. Raises :class:`StartupError` (in an exception group) when a
    listener cannot start or another server runs on the data directory."""
    data_dir = config.server.data_dir
    await trio.to_thread.run_sync(prepare_data_dir, data_dir)
    store = await trio.to_thread.run_sync(
        functools.partial(ObjectStore, data_dir, limits=store_limits(config))
    )
    throttle = LogonThrottle()  # one for every logon path
    settings = config.store
    pools = WorkerPools(
        WorkerLimits(
            batches=settings.batch_threads, batches_per_user=settings.batch_threads_per_user
        )
    )
    store_service = StoreService(
        store,
        ServiceLimits(batch_seconds=settings.batch_seconds, detached_grace=settings.detached_grace),
        throttle=throttle,
        pools=pools,
        min_auth_level=auth_level(config.rpc_auth.min_auth_level),
    )
    authenticator = DirectoryAuthenticator(
        store, throttle, pools.password_checks, lookup_nt_hash=store_service.lookup_nt_hash
    )
    store_service.on_credentials_changed(authenticator.invalidate)
    store_service.on_credentials_changed(functools.partial(forget_demo_password, data_dir))
    book = config.addressbook
    gal = await trio.to_thread.run_sync(GalKeeper, store, book.organization, book.refresh_seconds)
    store_service.on_credentials_changed(gal.changed)
    addressbook = AddressBookService(
        lambda: gal.current,
        server_fqdn=server_names().dns_computer,
        min_auth_level=auth_level(config.rpc_auth.min_auth_level),
        offload=addressbook_offload(book.threads, book.call_seconds),
    )
    try:
        async with trio.open_nursery() as nursery:
            try:
                control = await nursery.start(serve_control, data_dir, _Admin(store_service, gal))
            except AlreadyRunning as exc:
                raise StartupError(
                    f"another mapi-anywhere serve is running on data directory {data_dir} "
                    "(stop it, or give this one another --data-dir)"
                ) from exc
            if config.store.demo_user:
                password = await trio.to_thread.run_sync(ensure_demo_user, store, data_dir)
                saved = data_dir / DEMO_PASSWORD_FILE
                if password is not None:
                    log.warning(
                        "created user %s, password: %s (also in %s)", DEMO_USER, password, saved
                    )
                elif saved.exists():
                    log.info("the password of user %s is in %s", DEMO_USER, saved)
            all_services = [
                ServiceSpec("store", [store_service.interface()], "mapi-anywhere object store"),
                ServiceSpec(
                    "addressbook",
                    [addressbook.interface(), addressbook.referral_interface()],
                    "mapi-anywhere address book",
                ),
                *services,
            ]
            nursery.start_soon(gal.run)
            await _run(config, store, all_services, authenticator, task_status, control,
                       store_service, (addressbook, gal))  # fmt: skip
    finally:
        with trio.CancelScope(shield=True):
            await store_service.close()
            await trio.to_thread.run_sync(store.close)


async def _run(
    config: Config,
    store: ObjectStore,
    services: Sequence[ServiceSpec],
    authenticator: DirectoryAuthenticator,
    task_status: trio.TaskStatus[RunningServer],
    control: Path | None,
    store_service: StoreService,
    addressbook: tuple[AddressBookService, GalKeeper],
) -> None:
    host = config.server.host
    database = EndpointDatabase()
    # NTLM/SPNEGO on every listener (the endpoint mapper too: Windows' and impacket's
    # tools bind to it with a password, or anonymously); the store's policy refuses
    # less than [rpc] min_auth_level, and tunnel connections need [tunnel]'s.
    security = store_service.security(server_names())
    attached = auth_level(config.tunnel.min_auth_level)
    async with trio.open_nursery() as nursery:
        epm = RpcServer(
            [epm_interface(database), mgmt_interface()],
            config=config.rpc,
            name="epm",
            security=security,
            attached_min_level=attached,
        )
        epm_port = config.endpoint_mapper.port
        listeners = await listening(
            functools.partial(nursery.start, epm.serve_tcp, epm_port, host),
            "endpoint mapper", host, epm_port, "[endpoint_mapper] port", "--epm-port",
        )  # fmt: skip
        running = RunningServer(
            host=host,
            epm_port=port_of(listeners),
            database=database,
            store=store,
            store_service=store_service,
            control_socket=control,
            authenticator=authenticator,
            addressbook=addressbook[0],
            gal=addressbook[1],
        )
        # The tunnel reaches these in memory rather than over loopback TCP.
        local_services: dict[int, RpcServer] = {running.epm_port: epm}
        database.register(
            EPM_SYNTAX,
            [Tower.tcp(EPM_SYNTAX, _tower_host(host), running.epm_port)],
            "Endpoint mapper",
        )
        log.info("endpoint mapper listening on ncacn_ip_tcp:%s[%d]", host, running.epm_port)
        for spec in services:
            server = RpcServer(
                [*spec.interfaces, mgmt_interface()],
                config=config.rpc,
                name=spec.name,
                security=security,
                attached_min_level=attached,
            )
            dynamic = config.services.dynamic_port
            listeners = await listening(
                functools.partial(nursery.start, server.serve_tcp, dynamic, host),
                spec.name, host, dynamic, "[services] dynamic_port", "[services] dynamic_port = 0",
            )  # fmt: skip
            port = running.service_ports[spec.name] = port_of(listeners)
            local_services[port] = server
            for iface in spec.interfaces:
                database.register(
                    iface.syntax,
                    [Tower.tcp(iface.syntax, _tower_host(host), port)],
                    spec.annotation,
                )
                log.info(
                    "%s listening on ncacn_ip_tcp:%s[%d] (interface %s)",
                    spec.name,
                    host,
                    port,
                    iface.syntax,
                )
        # Mail for other domains: the durable queue and its runner (docs/smtp.md).
        queue = await start_outbound(nursery, config, store) if config.outbound.enabled else None
        if config.smtp.enabled:
            running.smtp_port = await start_smtp(nursery, config, store)
        if config.submission.enabled:
            running.submission_port, running.submissions_port = await start_submission(
                nursery, config, store, authenticator, queue=queue
            )
        if config.imap.enabled:
            running.imap_port, running.imaps_port = await start_imap(
                nursery, config, store, authenticator.throttle
            )
        if config.pop3.enabled:
            running.pop3_port, running.pop3s_port = await start_pop3(
                nursery, config, store, authenticator.throttle
            )
        if config.tunnel.enabled:
            # Last: it announces the mail listeners' ports to mail programs (autoconfig).
            settings = dataclasses.replace(config.tunnel.settings, mail=mail_endpoints_of(running))
            running.tunnel = await listening(
                functools.partial(
                    nursery.start,
                    functools.partial(
                        serve_tunnel,
                        settings,
                        allowed_targets=AllowList.for_database(
                            database,
                            running.epm_port,
                            tunnel_target_names(settings.server_names),
                            # The tunnel reaches the services where they listen.
                            backend_host=_backend_host(config.server.host),
                            well_known=well_known_ports(running.service_ports),
                        ),
                        authenticate=authenticator,
                        data_dir=config.server.data_dir,
                        epm_port=running.epm_port,
                        local_services=local_services,
                    ),
                ),
                "tunnel", settings.host, settings.port, "[tunnel] port",
                "--tunnel-port (or --no-tunnel)",
            )  # fmt: skip
        # Sessions of vanished clients end after their grace even when nobody calls.
        nursery.start_soon(store_service.housekeeping)
        task_status.started(running)
        await trio.sleep_forever()


# -- the process: signals and the shutdown watchdog ------------------------------------------

#: Exit status when the shutdown did not finish within ``[server] shutdown_timeout``.
HARD_EXIT_STATUS = 70


def _last_words(message: str) -> None:
    """Log ``message`` if logging answers within a second (a handler may be stuck, e.g.
    on a full pipe), so the caller can exit whatever happens."""
    speaker = threading.Thread(target=log.critical, args=(message,), daemon=True)
    speaker.start()
    speaker.join(1.0)


def hard_exit(message: str, status: int) -> NoReturn:
    """Log one line (bounded) and end the process now: no cleanup, no waiting for threads."""
    _last_words(message)
    os._exit(status)


def arm_watchdog(timeout: float, status: int = HARD_EXIT_STATUS) -> threading.Timer:
    """After ``timeout`` seconds, end the process (unless it ended first).

    A daemon :class:`threading.Timer`: it needs no event loop, so a loop stuck behind a
    worker thread that ignores cancellation cannot keep the process alive past it.
    """
    timer = threading.Timer(
        timeout,
        hard_exit,
        args=(f"did not stop within {timeout:g} s of the signal; exiting now", status),
    )
    timer.daemon = True
    timer.start()
    return timer


def reopen_log_files() -> None:
    """SIGHUP (what logrotate's ``postrotate`` often sends): reopen a log file that was
    moved. A moved file is reopened at the next line anyway; SIGHUP never stops serve."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.handlers.WatchedFileHandler):
            handler.reopenIfNeeded()
    log.info("received SIGHUP: log file reopened if it was moved")


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    hard_exit(f"second {signal.Signals(signum).name}: exiting now", 128 + signum)


async def serve_until_signal(config: Config, services: Sequence[ServiceSpec] = ()) -> None:
    """Run the server until SIGINT or SIGTERM, then stop everything (SIGHUP only
    reopens a moved log file).

    For a process's main program: the first signal (during the start too) cancels
    everything and arms a watchdog that ends the process after ``[server]
    shutdown_timeout`` seconds, however stuck; a second signal ends it at once (status
    128 + signal number).
    """
    stopping = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        log.info("starting; Ctrl-C or SIGTERM stops")
        async with trio.open_nursery() as nursery:
            server_scope = trio.CancelScope()

            async def watch() -> None:
                nonlocal stopping
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        reopen_log_files()
                        continue
                    if stopping:
                        _exit_at_once(signum, None)
                    stopping = True
                    timeout = config.server.shutdown_timeout
                    log.info(
                        "received %s, shutting down (at most %g s; again to exit at once)",
                        signal.Signals(signum).name,
                        timeout,
                    )
                    arm_watchdog(timeout)
                    server_scope.cancel()

            async def run() -> None:
                with server_scope:
                    async with trio.open_nursery() as server:
                        await server.start(run_server, config, services)
                        log.info("ready; press Ctrl-C to stop")
                nursery.cancel_scope.cancel()  # stopped: stop listening for signals

            nursery.start_soon(watch)
            nursery.start_soon(run)
    if stopping and threading.current_thread() is threading.main_thread():
        # The receiver gave the handlers back; what is left of the exit stays interruptible.
        signal.signal(signal.SIGINT, _exit_at_once)
        signal.signal(signal.SIGTERM, _exit_at_once)
    log.info("stopped")
