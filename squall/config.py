"""Settings: one frozen object, built once at start-up and passed down explicitly.

Precedence, lowest first: the defaults below, an optional TOML file (``--config``
or ``SQUALL_CONFIG``), ``SQUALL_*`` environment variables, command-line flags.
Every field is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .identity import MAX_PASSWORD_CHARS

__all__ = ["Settings", "Address", "parse_address", "load_settings", "FIELD_HELP"]

Address = tuple[str, int]


def parse_address(text: str, *, default_host: str = "127.0.0.1") -> Address:
    """``"host:port"``, ``":port"`` or ``"port"`` → ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"address {text!r} has no port number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"address {text!r}: port {number} is out of range 0-65535")
    return host, number


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    # Where things listen and live.
    host: str = "127.0.0.1"
    port: int = 8888
    processor: str = "127.0.0.1:8889"  # the processor's address, as the web node dials it
    data_dir: str = "./var"
    database: str = ""  # "" → sqlite at <data_dir>/squall.db; or sqlite:///path, postgresql://…
    bus: str = "local"  # "local" (in-process) or redis://host:port/db
    secret: str = ""  # token signing key; "" → generated once into <data_dir>/secret
    public_url: str = ""  # base URL used in e-mails; "" → http://host:port
    loop: str = "asyncio"  # or "uvloop"
    log_level: str = "info"

    # Transports.
    websocket: bool = True  # False refuses WebSocket upgrades (--no-websocket)
    allowed_origins: tuple[str, ...] = ()  # extra Origins allowed on /ws besides our own host
    max_frame_bytes: int = 64 * 1024  # largest WebSocket message; bigger closes with 1009
    max_body_bytes: int = 64 * 1024  # largest HTTP request body
    history_on_join: int = 50  # messages sent on join without `since`
    backlog_page: int = 200  # messages read from the store per page while catching up
    poll_wait_default: float = 25.0
    poll_wait_max: float = 60.0
    poll_limit_default: int = 100
    poll_limit_max: int = 1000
    poll_grace: float = 30.0  # a long-poller stays online this long after its last poll
    sse_heartbeat: float = 15.0
    recent_per_room: int = 256  # messages each room keeps in memory for pollers and joins

    # Abuse and back-pressure limits.
    send_rate: float = 20.0  # sends per second per connection (token bucket refill)
    send_burst: int = 40  # token bucket size
    outbound_bytes: int = 1024 * 1024  # per-connection send buffer; full closes with 4008
    close_timeout: float = 5.0  # a WebSocket close handshake not finished by then is aborted
    socket_send_buffer: int = 0  # SO_SNDBUF of WebSocket sockets; 0 keeps the kernel's autotuning
    max_rooms_per_connection: int = 100
    token_max_age_days: float = 30.0

    # Accounts and identity (docs/protocol.md, "Accounts and sessions").
    guests: bool = True  # False: POST /api/session needs a password (403 guests_disabled)
    password_min_length: int = 8  # shortest password an account may have

    # The link from web node to processor.
    max_pending_sends: int = 10_000  # queue of sends waiting for the processor
    send_timeout: float = 10.0  # a send not answered within this gets `unavailable`
    reconnect_min: float = 0.05
    reconnect_max: float = 5.0
    shutdown_timeout: float = 5.0  # how long shutdown waits for in-flight sends

    # The processor.
    listen: str = "127.0.0.1:8889"
    max_line_bytes: int = 64 * 1024  # a longer line on the processor link closes it
    max_body_chars: int = 4000
    store_batch: int = 512  # most messages committed in one transaction
    stages: tuple[str, ...] = ("validate", "filter", "render", "mentions", "store", "previews")

    # The content pipeline (docs/pipeline.md).
    filter_file: str = ""  # "" → no keyword filter
    filter_action: str = "mask"  # for terms without their own action: mask or reject
    room_mentions: bool = True  # @room mentions everyone who has posted in the room
    preview_allow: tuple[str, ...] = ()  # CIDRs or host[:port] exempt from the SSRF rules
    preview_timeout: float = 5.0
    preview_max_bytes: int = 1024 * 1024
    preview_concurrency: int = 4
    notify_delay: float = 120.0  # seconds a mention may go unread before it is e-mailed
    smtp: str = ""  # smtp://host:port (or smtp+starttls://, smtps://); "" → .eml files in <data_dir>/outbox
    mail_from: str = "Squall <squall@localhost>"
    mail_retry_min: float = 10.0  # first retry after a failed delivery; doubles up to an hour

    @property
    def processor_address(self) -> Address:
        return parse_address(self.processor)

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def listen_address(self) -> Address:
        return parse_address(self.listen)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{Path(self.data_dir) / 'squall.db'}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


FIELD_HELP: dict[str, str] = {
    "host": "interface the web node listens on",
    "port": "port of the web node",
    "processor": "HOST:PORT of the processor, as the web node dials it",
    "listen": "HOST:PORT the processor listens on",
    "data_dir": "folder for the SQLite database, the secret and the outbox",
    "database": "sqlite:///PATH or postgresql://… (default: SQLite in the data folder)",
    "bus": "'local' or redis://HOST:PORT/DB",
    "secret": "key that signs session tokens (default: generated into the data folder)",
    "websocket": "accept WebSocket upgrades (--no-websocket refuses them)",
    "loop": "event loop: asyncio or uvloop",
}


def _coerce(field: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            if isinstance(raw, (list, tuple)):
                return tuple(str(item) for item in raw)
            return tuple(part.strip() for part in str(raw).split(",") if part.strip())
        return str(raw)
    except ValueError:
        raise ConfigError(f"{source}: {field.name} = {raw!r} is not a valid {kind}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, a TOML file, the environment and ``overrides``.

    ``overrides`` holds command-line values (``None`` means "not given").
    Unknown keys in the TOML file or ``overrides`` are a :class:`ConfigError`.
    """
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or environ.get("SQUALL_CONFIG")
    if path:
        try:
            table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        for key, raw in table.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[name] = _coerce(fields[name], raw, path)

    for name, field in fields.items():
        env_name = f"SQUALL_{name.upper()}"
        if env_name in environ:
            values[name] = _coerce(field, environ[env_name], env_name)

    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(fields[name], raw, f"--{name.replace('_', '-')}")

    settings = Settings(**values)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    positive = [
        "max_frame_bytes", "max_body_bytes", "max_line_bytes", "max_body_chars",
        "max_pending_sends", "send_timeout", "poll_wait_max", "poll_limit_max",
        "outbound_bytes", "store_batch", "send_rate", "send_burst",
    ]
    for name in positive:
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(settings, name)}")
    if settings.filter_action not in {"mask", "reject"}:
        raise ConfigError(f"filter_action must be 'mask' or 'reject', got {settings.filter_action!r}")
    if settings.notify_delay < 0:
        raise ConfigError(f"notify_delay must be 0 or more, got {settings.notify_delay}")
    if settings.loop not in {"asyncio", "uvloop"}:
        raise ConfigError(f"loop must be 'asyncio' or 'uvloop', got {settings.loop!r}")
    # Accounts and identity.
    if not 1 <= settings.password_min_length <= MAX_PASSWORD_CHARS:
        raise ConfigError(
            f"password_min_length must be between 1 and {MAX_PASSWORD_CHARS}, got {settings.password_min_length}"
        )
    settings.processor_address  # noqa: B018 - validates the address
    settings.listen_address  # noqa: B018
