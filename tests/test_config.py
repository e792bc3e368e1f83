"""Settings: defaults < TOML file < SQUALL_* environment < command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.config import Settings, load_settings, parse_address
from squall.errors import ConfigError


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "squall.toml"
    path.write_text(
        'port = 9000\nsend-rate = 5.5\nsend_burst = 7\nwebsocket = false\n'
        'allowed_origins = ["https://a.example", "https://b.example"]\n',
        encoding="utf-8",
    )
    return path


def test_defaults_without_any_source() -> None:
    assert load_settings(environ={}) == Settings()


def test_toml_file_overrides_defaults(toml: Path) -> None:
    settings = load_settings(environ={}, config_file=str(toml))
    assert settings.port == 9000
    assert settings.send_rate == 5.5
    assert settings.send_burst == 7
    assert settings.websocket is False
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.host == Settings().host


def test_squall_config_variable_names_the_file(toml: Path) -> None:
    assert load_settings(environ={"SQUALL_CONFIG": str(toml)}).port == 9000


def test_config_argument_wins_over_squall_config_variable(toml: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("port = 9100\n", encoding="utf-8")
    assert load_settings(environ={"SQUALL_CONFIG": str(other)}, config_file=str(toml)).port == 9000


def test_environment_overrides_the_file(toml: Path) -> None:
    environ = {"SQUALL_PORT": "9001", "SQUALL_WEBSOCKET": "yes", "SQUALL_ALLOWED_ORIGINS": "https://c, https://d"}
    settings = load_settings(environ=environ, config_file=str(toml))
    assert settings.port == 9001
    assert settings.websocket is True
    assert settings.allowed_origins == ("https://c", "https://d")
    assert settings.send_rate == 5.5  # still from the file


def test_overrides_win_over_everything(toml: Path) -> None:
    settings = load_settings(
        {"port": "9002", "send_burst": None}, environ={"SQUALL_PORT": "9001"}, config_file=str(toml)
    )
    assert settings.port == 9002
    assert settings.send_burst == 7  # None means "flag not given"


def test_unrelated_environment_variables_are_ignored() -> None:
    assert load_settings(environ={"PORT": "1", "SQUALL": "x", "SQUALLPORT": "2"}) == Settings()


@pytest.mark.parametrize(("raw", "value"), [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("off", False),
])
def test_boolean_spellings(raw: str, value: bool) -> None:
    assert load_settings(environ={"SQUALL_WEBSOCKET": raw}).websocket is value


@pytest.mark.parametrize(("environ", "names"), [
    ({"SQUALL_PORT": "eighty"}, ["SQUALL_PORT", "port"]),
    ({"SQUALL_SEND_RATE": "fast"}, ["SQUALL_SEND_RATE", "send_rate"]),
    ({"SQUALL_WEBSOCKET": "maybe"}, ["SQUALL_WEBSOCKET", "websocket"]),
    ({"SQUALL_SEND_TIMEOUT": "0"}, ["send_timeout"]),
    ({"SQUALL_SEND_BURST": "-1"}, ["send_burst"]),
    ({"SQUALL_MAX_FRAME_BYTES": "0"}, ["max_frame_bytes"]),
    ({"SQUALL_LOOP": "trio"}, ["loop"]),
    ({"SQUALL_PROCESSOR": "localhost"}, ["processor", "localhost"]),
    ({"SQUALL_LISTEN": "127.0.0.1:70000"}, ["listen", "70000"]),
    ({"SQUALL_PORT": "70000"}, ["port", "70000"]),
    ({"SQUALL_PORT": "-5"}, ["port", "-5"]),
    ({"SQUALL_HOST": ""}, ["host"]),
    ({"SQUALL_DATA_DIR": " "}, ["data_dir"]),
    ({"SQUALL_HISTORY_ON_JOIN": "-1"}, ["history_on_join"]),
    ({"SQUALL_BACKLOG_PAGE": "0"}, ["backlog_page"]),
    ({"SQUALL_POLL_WAIT_DEFAULT": "90"}, ["poll_wait_default", "poll_wait_max"]),
    ({"SQUALL_POLL_LIMIT_DEFAULT": "0"}, ["poll_limit_default"]),
    ({"SQUALL_POLL_GRACE": "-1"}, ["poll_grace"]),
    ({"SQUALL_SSE_HEARTBEAT": "0"}, ["sse_heartbeat"]),
    ({"SQUALL_RECENT_PER_ROOM": "0"}, ["recent_per_room"]),
    ({"SQUALL_SEND_RATE": "nan"}, ["send_rate"]),
    ({"SQUALL_SEND_TIMEOUT": "inf"}, ["send_timeout"]),
    ({"SQUALL_CLOSE_TIMEOUT": "0"}, ["close_timeout"]),
    ({"SQUALL_SOCKET_SEND_BUFFER": "-1"}, ["socket_send_buffer"]),
    ({"SQUALL_MAX_ROOMS_PER_CONNECTION": "0"}, ["max_rooms_per_connection"]),
    ({"SQUALL_TOKEN_MAX_AGE_DAYS": "0"}, ["token_max_age_days"]),
    ({"SQUALL_RECONNECT_MIN": "9"}, ["reconnect_min", "reconnect_max"]),
    ({"SQUALL_SHUTDOWN_TIMEOUT": "-1"}, ["shutdown_timeout"]),
    ({"SQUALL_PREVIEW_TIMEOUT": "0"}, ["preview_timeout"]),
    ({"SQUALL_PREVIEW_MAX_BYTES": "0"}, ["preview_max_bytes"]),
    ({"SQUALL_PREVIEW_CONCURRENCY": "0"}, ["preview_concurrency"]),
    ({"SQUALL_NOTIFY_DELAY": "-1"}, ["notify_delay"]),
    ({"SQUALL_MAIL_RETRY_MIN": "0"}, ["mail_retry_min"]),
    ({"SQUALL_LOG_LEVEL": "loud"}, ["log_level", "loud"]),
    ({"SQUALL_DATABASE": "mysql://x"}, ["database", "mysql://x"]),
    ({"SQUALL_BUS": "kafka://x"}, ["bus", "kafka://x"]),
    ({"SQUALL_BUS": "redis://x:99999"}, ["bus"]),
    ({"SQUALL_BUS": "redis:///0"}, ["bus"]),
    ({"SQUALL_BUS_PREFIX": "a b"}, ["bus_prefix"]),
    ({"SQUALL_BUS_MAX_QUEUE": "0"}, ["bus_max_queue"]),
    ({"SQUALL_BUS_PING_INTERVAL": "0"}, ["bus_ping_interval"]),
    ({"SQUALL_DATABASE": "postgresql://db:99999/chat"}, ["database", "bad port"]),
    ({"SQUALL_DATABASE_POOL_SIZE": "0"}, ["database_pool_size"]),
    ({"SQUALL_DATABASE_TIMEOUT": "0"}, ["database_timeout"]),
    ({"SQUALL_PUBLIC_URL": "chat.example.org"}, ["public_url"]),
    ({"SQUALL_PUBLIC_URL": "https://chat.example.org:99999"}, ["public_url"]),
    ({"SQUALL_ALLOWED_ORIGINS": "https://a.example/path"}, ["allowed_origins"]),
    ({"SQUALL_ALLOWED_ORIGINS": "a.example"}, ["allowed_origins"]),
    ({"SQUALL_SMTP": "http://mail.example"}, ["smtp"]),
    ({"SQUALL_MAIL_FROM": "nobody"}, ["mail_from"]),
    ({"SQUALL_FILTER_FILE": "/nonexistent/filter.txt"}, ["filter_file", "/nonexistent/filter.txt"]),
    ({"SQUALL_STAGES": "validate,render"}, ["stages", "store"]),
    ({"SQUALL_STAGES": "validate,bogus,store"}, ["stages", "bogus"]),
    ({"SQUALL_STAGES": "store,no_such_module_here:Stage"}, ["stages", "no_such_module_here"]),
    ({"SQUALL_STAGES": "store,:x"}, ["stages"]),
])
def test_bad_environment_values_name_the_setting(environ: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    for name in names:
        assert name in str(caught.value)


def test_good_values_at_the_edges_are_accepted(tmp_path: Path) -> None:
    filters = tmp_path / "filter.txt"
    filters.write_text("", encoding="utf-8")
    settings = load_settings(environ={
        "SQUALL_PORT": "65535", "SQUALL_HISTORY_ON_JOIN": "0", "SQUALL_NOTIFY_DELAY": "0",
        "SQUALL_SOCKET_SEND_BUFFER": "0", "SQUALL_PUBLIC_URL": "https://chat.example.org/",
        "SQUALL_ALLOWED_ORIGINS": "https://a.example:8443", "SQUALL_SMTP": "smtps://u:p@mail.example",
        "SQUALL_FILTER_FILE": str(filters), "SQUALL_STAGES": "validate,store,stages_for_test:shout",
        "SQUALL_LOG_LEVEL": "WARNING", "SQUALL_BUS": "rediss://:pw@redis.example:6380/2",
        "SQUALL_BUS_PREFIX": "", "SQUALL_BUS_MAX_QUEUE": "1",
    })
    assert settings.port == 65535 and settings.stages[-1] == "stages_for_test:shout"
    assert load_settings({"port": "0"}, environ={}).port == 0


def test_builtin_stage_names_are_the_pipelines() -> None:
    from squall.config import BUILTIN_STAGE_NAMES
    from squall.processor.pipeline import BUILTIN_STAGES

    assert tuple(BUILTIN_STAGES) == BUILTIN_STAGE_NAMES == Settings().stages


def test_bad_override_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--send-burst"):
        load_settings({"send_burst": "lots"}, environ={})


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="'colour'"):
        load_settings({"colour": "blue"}, environ={})


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("prot = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, config_file=str(path))
    assert str(path) in str(caught.value) and "'prot'" in str(caught.value)


def test_bad_value_in_file_names_file_and_setting(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('port = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, config_file=str(path))
    assert str(path) in str(caught.value) and "port" in str(caught.value)


def test_unparsable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("port = = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(environ={}, config_file=str(path))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(environ={}, config_file=str(tmp_path / "absent.toml"))


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert settings.replace(port=1).port == 1 and settings.port != 1


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:8889", ("127.0.0.1", 8889)),
    (":8889", ("127.0.0.1", 8889)),
    ("8889", ("127.0.0.1", 8889)),
    ("[::1]:80", ("::1", 80)),
    ("example.org:0", ("example.org", 0)),
])
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


def test_database_url_defaults_to_sqlite_in_the_data_dir() -> None:
    settings = load_settings({"data_dir": "/srv/chat"}, environ={})
    assert settings.database_url == "sqlite:////srv/chat/squall.db"
    assert load_settings({"database": "sqlite:///x.db"}, environ={}).database_url == "sqlite:///x.db"


def _documented_defaults() -> dict[str, str]:
    """``setting → default`` from the table in docs/configuration.md."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    defaults = {}
    for line in doc.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith("`") and cells[1].startswith("`--"):
            defaults[cells[0].strip("`")] = cells[3].removeprefix("`").removesuffix("`")
    return defaults


def _shown(value: object) -> str:
    """A default as the table writes it: tuples comma-joined, the rest as str()."""
    return ",".join(value) if isinstance(value, tuple) else str(value)


def test_every_setting_is_documented_with_its_default() -> None:
    """docs/configuration.md is the reference: it must name every setting and its true default."""
    import dataclasses

    documented = _documented_defaults()
    missing = [f.name for f in dataclasses.fields(Settings) if f.name not in documented]
    assert not missing, f"docs/configuration.md does not document {missing}"
    defaults = Settings()
    wrong = {
        name: (shown, _shown(getattr(defaults, name)))
        for name, shown in documented.items()
        if hasattr(defaults, name) and shown != _shown(getattr(defaults, name))
    }
    assert not wrong, f"docs/configuration.md gives wrong defaults (documented, real): {wrong}"


def test_run_mode_uses_one_processor_address() -> None:
    from squall.config import Settings
    from squall.supervisor import _one_processor_address

    private = _one_processor_address(Settings())  # neither given: a port the OS picks
    assert private.listen == private.processor == "127.0.0.1:0"
    given_processor = _one_processor_address(Settings(processor="127.0.0.1:7000"))
    assert given_processor.listen == given_processor.processor == "127.0.0.1:7000"
    given_listen = _one_processor_address(Settings(listen="127.0.0.1:7001"))
    assert given_listen.listen == given_listen.processor == "127.0.0.1:7001"


def test_a_postgresql_url_is_accepted_and_its_password_never_shown() -> None:
    for url in ("postgresql://squall:pw@db.internal:5432/chat", "postgres:///chat?host=/run/postgresql"):
        assert load_settings({"database": url}, environ={}).database_url == url
    with pytest.raises(ConfigError) as caught:
        load_settings({"database": "mysql://squall:hunter2@db/chat"}, environ={})
    assert "hunter2" not in str(caught.value) and "squall:***@db" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings({"database": "postgresql://squall:hunter2@db:99999/chat"}, environ={})
    assert "hunter2" not in str(caught.value)
