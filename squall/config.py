"""Settings: one frozen object, built once at start-up and passed down explicitly.

Precedence, lowest first: the defaults below, an optional TOML file (``--config``
or ``SQUALL_CONFIG``), ``SQUALL_*`` environment variables, command-line flags.
Every field is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import email.utils
import importlib.util
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ClientError, ConfigError
from .identity import MAX_PASSWORD_CHARS

__all__ = [
    "Settings", "Address", "parse_address", "load_settings", "FIELD_HELP", "BUILTIN_STAGE_NAMES",
    "redacted_url",
]

Address = tuple[str, int]

# The pipeline's built-in stages, in their usual order (squall.processor.pipeline
# builds them); any other name in `stages` must be module:callable.
BUILTIN_STAGE_NAMES = ("validate", "filter", "render", "mentions", "store", "previews")


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
    processor: str = "127.0.0.1:8889"  # the processors' addresses (comma-separated), as the web node dials them
    data_dir: str = "./var"
    database: str = ""  # "" → sqlite at <data_dir>/squall.db; or sqlite:///path, postgresql://…
    database_pool_size: int = 10  # PostgreSQL connections each process may hold at once
    database_timeout: float = 10.0  # seconds a PostgreSQL operation may take, waiting for a connection included
    bus: str = "local"  # "local" (in-process) or redis://host:port/db (rediss:// for TLS)
    bus_prefix: str = "squall:"  # starts every Redis channel name: Squalls sharing a Redis keep apart
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

    # Presence (docs/presence.md): batched per room, paged member lists.
    presence_interval: float = 0.25  # seconds: at most one presence and one typing event per room this often
    presence_detail_max: int = 500  # rooms with more members get counts only, not each change
    members_page: int = 100  # members in a `joined` reply, and a /members page by default
    members_limit_max: int = 1000  # the largest /members page (?limit=)

    # Abuse and back-pressure limits.
    send_rate: float = 20.0  # sends per second per user, over all their connections (refill)
    send_burst: int = 40  # that token bucket's size
    outbound_bytes: int = 1024 * 1024  # per-connection send buffer; full closes with 4008
    close_timeout: float = 5.0  # a WebSocket close handshake not finished by then is aborted
    socket_send_buffer: int = 0  # SO_SNDBUF of WebSocket sockets; 0 keeps the kernel's autotuning
    max_rooms_per_connection: int = 100
    token_max_age_days: float = 30.0

    # Connection timeouts (issue 10, defect 8: idle and slow connections hold file descriptors).
    header_timeout: float = 10.0  # seconds for a new connection's first request head, and for any head once begun
    idle_timeout: float = 75.0  # seconds a kept-alive HTTP connection may wait for its next request

    # Limits per person and per address, and who the client is (issue 10: limits).
    # Per-address defaults leave room for many people behind one NAT (or a test
    # suite on one machine) and still stop a flood from one address: docs/security.md.
    send_rate_per_ip: float = 500.0  # sends per second per client address, whoever sends
    send_burst_per_ip: int = 1000
    join_rate: float = 5.0  # joins per second per WebSocket connection (a re-join counts once)
    join_burst: int = 100  # as max_rooms_per_connection: a page may join all its rooms at once
    join_rate_per_user: float = 10.0  # joins per second per user over all connections, SSE streams included
    join_burst_per_user: int = 300
    search_rate: float = 2.0  # searches per second per user (GET /api/search), refill
    search_burst: int = 20  # that token bucket's size
    session_rate_per_ip: float = 5.0  # POST /api/session and POST /api/account per address per second
    session_burst_per_ip: int = 100
    max_connections_per_ip: int = 1000  # open WebSocket, SSE and long-poll connections per address
    max_connections: int = 20_000  # the same, in all
    max_http_connections_per_ip: int = 1000  # connections Tornado serves, per TCP peer (trusted proxies exempt)
    max_http_connections: int = 20_000  # the same, in all
    max_rate_keys: int = 50_000  # users or addresses each rate table tracks; newcomers then share one bucket
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For / -Proto are believed
    allowed_hosts: tuple[str, ...] = ()  # Host names served; () → public_url's host, host, localhost

    # Operations: /metrics, /healthz, /readyz (docs/deployment.md, "Health checks and metrics").
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1")  # CIDRs whose clients may read /metrics
    ready_timeout: float = 2.0  # seconds /readyz's canary has to come back through processor, store and bus
    ready_cache: float = 1.0  # seconds a /readyz verdict is reused: at most one canary per this long
    processor_metrics: str = ""  # HOST:PORT where the processor serves /metrics and /healthz; "" → nowhere

    # Accounts and identity (docs/protocol.md, "Accounts and sessions").
    guests: bool = True  # False: POST /api/session needs a password (403 guests_disabled)
    password_min_length: int = 8  # shortest password an account may have
    admins: tuple[str, ...] = ()  # nicks of server admins: they may do anything in any room
    default_room: str = "lobby"  # the room a new user lands in (the page joins it on first sign-in)
    max_rooms_listed: int = 100  # the largest GET /api/rooms page (?limit=)

    # The link from web node to processor.
    max_pending_sends: int = 10_000  # queue of sends waiting for the processor
    send_timeout: float = 10.0  # a send not answered within this gets `unavailable`
    reconnect_min: float = 0.05
    reconnect_max: float = 5.0
    shutdown_timeout: float = 5.0  # how long shutdown waits for in-flight sends

    # The bus between web nodes (Redis); it reconnects with reconnect_min … reconnect_max too.
    bus_max_queue: int = 10_000  # broadcasts waiting to be published; past it the oldest go (and nodes resync)
    bus_ping_interval: float = 5.0  # seconds between pings on the subscription; twice this silent = dead
    presence_heartbeat: float = 5.0  # seconds between a node's presence heartbeats (and sweeps of dead nodes)
    presence_ttl: float = 15.0  # seconds a heartbeat keeps a node alive: its members leave ttl + heartbeat after it dies
    # The queue: processors reached through Redis Streams instead of TCP links.
    queue: str = ""  # "" → TCP links to `processor`; redis://… or rediss://… → the queue
    queue_prefix: str = "squall"  # Redis key prefix of the queue's streams
    queue_claim_idle: float = 5.0  # an entry a processor took and left unacknowledged this long is taken over
    queue_max_len: int = 100_000  # entries the send stream may hold (not yet done); more get `unavailable`

    # The processor.
    listen: str = "127.0.0.1:8889"
    max_line_bytes: int = 64 * 1024  # a longer line on the processor link closes it
    max_body_chars: int = 4000
    store_batch: int = 512  # most messages committed in one transaction
    stages: tuple[str, ...] = BUILTIN_STAGE_NAMES

    # The content pipeline (docs/pipeline.md).
    filter_file: str = ""  # "" → no keyword filter
    filter_action: str = "mask"  # for terms without their own action: mask or reject
    room_mentions: bool = True  # @room mentions everyone who has posted in the room

    # Message events (docs/protocol.md, "Changes"): edits, deletes, reactions.
    edit_window: float = 900.0  # seconds after sending during which its author may edit a message; 0: never
    max_reactions: int = 20  # distinct emoji one message may carry
    preview_allow: tuple[str, ...] = ()  # CIDRs or host[:port] exempt from the SSRF rules
    preview_timeout: float = 5.0
    preview_max_bytes: int = 1024 * 1024
    preview_concurrency: int = 4
    notify_delay: float = 120.0  # seconds a mention may go unread before it is e-mailed
    smtp: str = ""  # smtp://host:port (or smtp+starttls://, smtps://); "" → .eml files in <data_dir>/outbox
    mail_from: str = "Squall <squall@localhost>"
    mail_retry_min: float = 10.0  # first retry after a failed delivery; doubles up to an hour

    # Uploads (POST /api/files; docs/protocol.md "Files").
    upload_max_bytes: int = 25 * 1024 * 1024  # largest upload, refused from Content-Length or while streaming
    upload_quota_bytes: int = 500 * 1024 * 1024  # bytes of stored uploads per user
    upload_max_pixels: int = 40_000_000  # largest image (width x height x frames) decoded
    upload_concurrency: int = 2  # uploads one user may stream at once
    upload_rate: float = 0.5  # uploads per second per user, after a burst of upload_burst
    upload_burst: int = 10
    upload_workers: int = 2  # processes re-encoding images for one web node

    @property
    def processor_address(self) -> Address:
        """The first of :attr:`processor_addresses` (``squall run`` has one processor)."""
        return self.processor_addresses[0]

    @property
    def processor_addresses(self) -> list[Address]:
        return [parse_address(part.strip()) for part in self.processor.split(",") if part.strip()]

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
    "processor": "HOST:PORT of the processor, as the web node dials it; several, comma-separated",
    "queue": "redis://HOST:PORT/DB: reach processors through Redis Streams instead of TCP",
    "listen": "HOST:PORT the processor listens on",
    "data_dir": "folder for the SQLite database, the secret, the outbox and uploaded files",
    "database": "sqlite:///PATH or postgresql://… (default: SQLite in the data folder)",
    "database_pool_size": "PostgreSQL connections each process may hold at once",
    "database_timeout": "seconds a PostgreSQL operation may take before it fails as unavailable",
    "bus": "'local' or redis://HOST:PORT/DB (rediss:// for TLS)",
    "bus_prefix": "prefix of every Redis channel name (default 'squall:')",
    "secret": "key that signs session tokens (default: generated into the data folder)",
    "websocket": "accept WebSocket upgrades (--no-websocket refuses them)",
    "loop": "event loop: asyncio or uvloop",
    "trusted_proxies": "CIDRs of proxies whose X-Forwarded-For and X-Forwarded-Proto are believed",
    "allowed_hosts": "Host names this server answers to (default: public_url's host, host, localhost)",
    "metrics_allow": "CIDRs whose clients may read /metrics (default: loopback)",
    "processor_metrics": "HOST:PORT where the processor serves /metrics (default: not served)",
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


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# A Redis key prefix: printable, no spaces, short (it is in every key of the queue).
_QUEUE_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

# Every number setting and the smallest value that can work: (name, low,
# whether low itself is allowed). Sizes, counts and rates must be positive;
# delays and optional sizes may be 0.
_AT_LEAST: tuple[tuple[str, float, bool], ...] = (
    ("max_frame_bytes", 0, False), ("max_body_bytes", 0, False), ("history_on_join", 0, True),
    ("backlog_page", 0, False), ("poll_wait_default", 0, True), ("poll_wait_max", 0, False),
    ("poll_limit_default", 0, False), ("poll_limit_max", 0, False), ("poll_grace", 0, True),
    ("sse_heartbeat", 0, False), ("recent_per_room", 0, False), ("send_rate", 0, False),
    ("presence_interval", 0, False), ("presence_detail_max", 0, True), ("members_page", 0, False),
    ("members_limit_max", 0, False),
    ("send_burst", 0, False), ("outbound_bytes", 0, False), ("close_timeout", 0, False),
    ("socket_send_buffer", 0, True), ("max_rooms_per_connection", 0, False),
    ("token_max_age_days", 0, False), ("max_pending_sends", 0, False), ("send_timeout", 0, False),
    ("reconnect_min", 0, False), ("reconnect_max", 0, False), ("shutdown_timeout", 0, True),
    ("max_line_bytes", 0, False), ("max_body_chars", 0, False), ("store_batch", 0, False),
    ("preview_timeout", 0, False), ("preview_max_bytes", 0, False),
    ("preview_concurrency", 0, False), ("notify_delay", 0, True), ("mail_retry_min", 0, False),
    ("header_timeout", 0, False), ("idle_timeout", 0, False),
    ("queue_claim_idle", 0, False), ("queue_max_len", 0, False),
    ("database_pool_size", 0, False), ("database_timeout", 0, False),
    ("send_rate_per_ip", 0, False), ("send_burst_per_ip", 0, False), ("join_rate", 0, False),
    ("join_burst", 0, False), ("join_rate_per_user", 0, False), ("join_burst_per_user", 0, False),
    ("search_rate", 0, False), ("search_burst", 0, False),
    ("session_rate_per_ip", 0, False), ("session_burst_per_ip", 0, False),
    ("max_connections_per_ip", 0, False), ("max_connections", 0, False), ("max_rate_keys", 0, False),
    ("max_http_connections_per_ip", 0, False), ("max_http_connections", 0, False),
    ("ready_timeout", 0, False), ("ready_cache", 0, False),
    ("bus_max_queue", 0, False), ("bus_ping_interval", 0, False),
    ("presence_heartbeat", 0, False), ("presence_ttl", 0, False),

    ("upload_max_bytes", 0, False), ("upload_quota_bytes", 0, False), ("upload_max_pixels", 0, False),
    ("upload_concurrency", 0, False), ("upload_rate", 0, False), ("upload_burst", 0, False),
    ("upload_workers", 0, False),

    ("edit_window", 0, True), ("max_reactions", 0, False),
)


def _check(settings: Settings) -> None:
    """Refuse settings that cannot work, with a message naming the setting."""
    for name, low, inclusive in _AT_LEAST:
        value = getattr(settings, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}")
        if value < low or (value == low and not inclusive):
            wanted = "0 or more" if inclusive else "more than 0"
            raise ConfigError(f"{name} must be {wanted}, got {value}")
    _at_most(settings, "poll_wait_default", "poll_wait_max")
    _at_most(settings, "poll_limit_default", "poll_limit_max")
    _at_most(settings, "reconnect_min", "reconnect_max")
    _at_most(settings, "members_page", "members_limit_max")
    if settings.presence_ttl < 2 * settings.presence_heartbeat:
        raise ConfigError(
            f"presence_ttl ({settings.presence_ttl}) must be at least twice presence_heartbeat"
            f" ({settings.presence_heartbeat}): a node must miss a heartbeat before it counts as dead"
        )
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port must be 0-65535, got {settings.port}")
    for name in ("host", "data_dir"):
        if not getattr(settings, name).strip():
            raise ConfigError(f"{name} must not be empty")
    for name in ("listen",) + (("processor_metrics",) if settings.processor_metrics else ()):
        try:
            parse_address(getattr(settings, name))
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    try:
        addresses = settings.processor_addresses
    except ConfigError as exc:
        raise ConfigError(f"processor: {exc}") from None
    if not addresses:
        raise ConfigError("processor needs at least one HOST:PORT")
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"processor lists an address twice: {settings.processor!r}")
    if settings.queue:
        _check_url("queue", settings.queue, ("redis", "rediss"))
    if not _QUEUE_PREFIX.fullmatch(settings.queue_prefix):
        raise ConfigError(
            f"queue_prefix must be 1-64 letters, digits or '-_.:', got {settings.queue_prefix!r}"
        )
    if settings.filter_action not in {"mask", "reject"}:
        raise ConfigError(f"filter_action must be 'mask' or 'reject', got {settings.filter_action!r}")
    if settings.loop not in {"asyncio", "uvloop"}:
        raise ConfigError(f"loop must be 'asyncio' or 'uvloop', got {settings.loop!r}")
    _check_client_limits(settings)
    # Accounts and identity.
    if not 1 <= settings.password_min_length <= MAX_PASSWORD_CHARS:
        raise ConfigError(
            f"password_min_length must be between 1 and {MAX_PASSWORD_CHARS}, got {settings.password_min_length}"
        )
    from .protocol import check_nick, check_room  # protocol imports errors only; config is imported first

    for admin in settings.admins:
        try:
            check_nick(admin)
        except ClientError as exc:
            raise ConfigError(f"admins: {exc.reason}") from None
    try:
        check_room(settings.default_room)
    except ClientError as exc:
        raise ConfigError(f"default_room: {exc.reason}") from None
    if settings.default_room.startswith("dm-"):
        raise ConfigError("default_room: names starting with 'dm-' are kept for direct messages")
    if not 1 <= settings.max_rooms_listed <= 1000:
        raise ConfigError(f"max_rooms_listed must be between 1 and 1000, got {settings.max_rooms_listed}")
    if settings.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("loop = 'uvloop' needs the uvloop package: pip install 'squall[uvloop]'")
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {settings.log_level!r}")
    _check_database(settings.database)
    if settings.bus != "local":
        if not settings.bus.startswith(("redis://", "rediss://")):
            raise ConfigError(f"bus must be 'local' or redis://HOST:PORT/DB, got {settings.bus!r}")
        _check_url("bus", settings.bus, ("redis", "rediss"))
    if len(settings.bus_prefix) > 64 or any(c.isspace() for c in settings.bus_prefix):
        raise ConfigError(f"bus_prefix must be at most 64 characters without spaces, got {settings.bus_prefix!r}")
    if settings.public_url:
        _check_url("public_url", settings.public_url, ("http", "https"))
    for origin in settings.allowed_origins:
        _check_url("allowed_origins", origin, ("http", "https"), bare=True)
    if settings.smtp:
        _check_url("smtp", settings.smtp, ("smtp", "smtp+starttls", "smtps"))
    if "@" not in email.utils.parseaddr(settings.mail_from)[1]:
        raise ConfigError(f"mail_from must hold an e-mail address, got {settings.mail_from!r}")
    if settings.filter_file and not Path(settings.filter_file).is_file():
        raise ConfigError(f"filter_file {settings.filter_file!r} is not a file")
    _check_stages(settings.stages)


def _at_most(settings: Settings, name: str, limit: str) -> None:
    if getattr(settings, name) > getattr(settings, limit):
        raise ConfigError(
            f"{name} ({getattr(settings, name)}) must not exceed {limit} ({getattr(settings, limit)})"
        )


def _check_url(name: str, url: str, schemes: tuple[str, ...], *, bare: bool = False) -> None:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise ConfigError(f"{name}: {url!r} has a bad port: {exc}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{name}: {url!r} is not a {' or '.join(schemes)} URL with a host")
    if bare and (parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ConfigError(f"{name}: {url!r} must be scheme://host[:port], without a path")


POSTGRES_SCHEMES = ("postgresql", "postgres")


def redacted_url(url: str) -> str:
    """``url`` without its password, for logs and error messages (database, bus, queue)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: an IPv6 address keeps its brackets
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _check_database(url: str) -> None:
    if not url or url.startswith("sqlite:///"):
        return
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"database must be sqlite:///PATH, postgresql://USER@HOST:PORT/NAME (or empty),"
            f" got {redacted_url(url)!r}"
        )
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise ConfigError(f"database: {redacted_url(url)!r} has a bad port: {exc}") from None
    if importlib.util.find_spec("asyncpg") is None:
        raise ConfigError("database = postgresql://… needs the asyncpg package: pip install 'squall[postgres]'")


def _check_stages(stages: tuple[str, ...]) -> None:
    if "store" not in stages:
        raise ConfigError(f"stages must include 'store', or nothing is ever saved; got {','.join(stages)!r}")
    for name in stages:
        if name in BUILTIN_STAGE_NAMES:
            continue
        module, sep, attribute = name.partition(":")
        if not sep or not module or not attribute:
            raise ConfigError(
                f"stages: unknown stage {name!r}: use one of {', '.join(BUILTIN_STAGE_NAMES)}"
                " or module:callable"
            )
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"stages: cannot find module {module!r} of stage {name!r}: {exc}") from None
        if found is None:
            raise ConfigError(f"stages: no module named {module!r} (stage {name!r})")


def _check_client_limits(settings: Settings) -> None:
    from .address import parse_networks

    for name in ("trusted_proxies", "metrics_allow"):
        try:
            parse_networks(getattr(settings, name))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    for name in settings.allowed_hosts:
        text = name.strip()
        if not text or any(c in text for c in "/@ ") or "*" in text[1:]:
            raise ConfigError(
                f"allowed_hosts: {name!r} is not a host name, '*.domain' or '*'"
            )
