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

DEFAULT_CONFIG_TOML = """\
# mapi-anywhere configuration. Every key is optional; these are the defaults.

[server]
# Where the SQLite databases, the generated certificate and the state live.
data_dir = "mapi-anywhere-data"
# Address every listener binds to. Use "0.0.0.0" or "::" to serve the network.
host = "127.0.0.1"
# Log level: DEBUG, INFO, WARNING, ERROR.
log_level = "INFO"

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

[rpc]
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
# Connections served at once by one listener.
max_connections = 1024
"""


class ConfigError(ValueError):
    """The configuration file is unreadable or holds an unknown or invalid value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSection:
    data_dir: Path = Path("mapi-anywhere-data")
    host: str = "127.0.0.1"
    log_level: str = "INFO"


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointMapperSection:
    port: int = 1135


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicesSection:
    dynamic_port: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSection:
    demo_user: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    endpoint_mapper: EndpointMapperSection = field(default_factory=EndpointMapperSection)
    services: ServicesSection = field(default_factory=ServicesSection)
    store: StoreSection = field(default_factory=StoreSection)
    rpc: RpcConfig = field(default_factory=RpcConfig)


def _section(cls: type[Any], name: str, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(sorted(unknown))}")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        if isinstance(default, Path):
            if not isinstance(value, str):
                raise ConfigError(f"[{name}] {key}: expected a path string")
            value = Path(value).expanduser()
        elif isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, type(default)
        ):
            if isinstance(default, float) and isinstance(value, int):
                value = float(value)
            else:
                raise ConfigError(
                    f"[{name}] {key}: expected {type(default).__name__}, got {value!r}"
                )
        converted[key] = value
    try:
        return cls(**converted)
    except ValueError as exc:
        raise ConfigError(f"[{name}]: {exc}") from exc


def parse_config(text: str) -> Config:
    """Parse a TOML configuration; raises :class:`ConfigError` on any problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    sections = {f.name: f for f in fields(Config)}
    unknown = set(doc) - set(sections)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in doc.items():
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
        values[name] = _section(type(getattr(Config(), name)), name, value)
    config = Config(**values)
    if config.server.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"[server] log_level: unknown level {config.server.log_level!r}")
    for port in (config.endpoint_mapper.port, config.services.dynamic_port):
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
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return parse_config(text)


def with_overrides(config: Config, **server: Any) -> Config:
    """``config`` with command-line overrides (None values are ignored)."""
    changes = {k: v for k, v in server.items() if v is not None}
    epm_port = changes.pop("epm_port", None)
    if "data_dir" in changes:
        changes["data_dir"] = Path(changes["data_dir"])
    out = replace(config, server=replace(config.server, **changes))
    if epm_port is not None:
        out = replace(out, endpoint_mapper=replace(out.endpoint_mapper, port=epm_port))
    return out
