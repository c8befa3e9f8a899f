"""Settings: every accepted spelling of DATABASE_URL reaches psycopg2; bad ones say why."""

import pytest

from backend.config import Config, ConfigError, mask_url, parse_database_url
from backend.logs import mask_secrets


@pytest.mark.parametrize("raw", [
    "postgres://app:pw@db:5432/app",
    "postgresql://app:pw@db:5432/app",
    "postgresql+psycopg2://app:pw@db:5432/app",
    "postgresql://app@/app?host=/var/run/postgresql",
])
def test_every_accepted_scheme_uses_psycopg2(raw):
    url = parse_database_url(raw)

    assert url.drivername == "postgresql+psycopg2"
    assert url.database == "app"


def test_unix_socket_host_is_kept():
    url = parse_database_url("postgresql://app@/app?host=/var/run/postgresql")

    assert url.host is None
    assert url.query["host"] == "/var/run/postgresql"


@pytest.mark.parametrize(("raw", "expected"), [
    ("mysql://app:Secr3t@db/app", "expected a postgresql:// URL"),
    ("not a url", "expected a postgresql:// URL"),
    ("postgresql://app:Secr3t@db:port/app", "malformed"),
    ("postgresql://app:Secr3t@db:5432/", "no database name"),
])
def test_malformed_urls_are_one_line_errors_without_the_password(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_database_url(raw)

    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert "Secr3t" not in message


def test_missing_url_says_what_to_set():
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        Config.from_env({})


def test_config_repr_masks_the_password():
    config = Config.from_env({"DATABASE_URL": "postgresql://app:Secr3t@db/app"})

    assert "Secr3t" not in repr(config)
    assert "***" in repr(config)


def test_settings_are_read_and_checked():
    config = Config.from_env({"DATABASE_URL": "postgresql://a@h/d", "DB_WAIT_TIMEOUT": "3",
                              "LOG_FORMAT": "JSON"})

    assert config.db_wait_timeout == 3.0
    assert config.log_format == "json"
    with pytest.raises(ConfigError, match="DB_WAIT_TIMEOUT"):
        Config.from_env({"DATABASE_URL": "postgresql://a@h/d", "DB_WAIT_TIMEOUT": "soon"})


def test_mask_url_and_mask_secrets_hide_passwords():
    assert mask_url("postgresql://app:Secr3t@db/app") == "postgresql://app:***@db/app"
    line = "connect postgresql://app:Secr3t@db/app password=Other1 done"
    masked = mask_secrets(line)
    assert "Secr3t" not in masked and "Other1" not in masked


def test_a_password_with_unencoded_separators_is_never_printed_in_part():
    # An '@' and ':' in the password make the parser read part of it as the port.
    with pytest.raises(ConfigError) as info:
        parse_database_url("postgresql://app:S3cret@Part:S3cretPart@db:5432/app")

    message = str(info.value)
    assert "malformed" in message and "percent-encode" in message
    assert "S3cret" not in message and "Part" not in message


BASE = {"DATABASE_URL": "postgresql://a@h/d"}


def test_serving_settings_have_defaults():
    config = Config.from_env(BASE)

    assert (config.port, config.web_concurrency, config.threads) == (8000, 2, 4)
    assert config.migrate_on_start is True and config.access_log is True
    assert config.db_query_timeout == 5.0 and config.log_level == "info"
    assert config.metrics is True and config.metrics_port is None


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "0"), ("PORT", "65536"), ("PORT", "80a"), ("PORT", "\uff18\uff10"),
    ("WEB_CONCURRENCY", "0"), ("WEB_CONCURRENCY", "-1"), ("WEB_CONCURRENCY", "²"),
    ("GUNICORN_THREADS", "0"), ("GUNICORN_TIMEOUT", "abc"), ("GUNICORN_TIMEOUT", "1.5"),
    ("DB_WAIT_TIMEOUT", "nan"), ("DB_WAIT_TIMEOUT", "inf"), ("DB_WAIT_TIMEOUT", "-1"),
    ("DB_QUERY_TIMEOUT", "0"), ("BODY_TIMEOUT", "soon"),
    ("MIGRATE_ON_START", "maybe"), ("ACCESS_LOG", "2"), ("GUNICORN_LOG_LEVEL", "loud"),
    ("METRICS", "maybe"), ("METRICS", "9100"), ("METRICS_PORT", "0"), ("METRICS_PORT", "65536"),
    ("METRICS_PORT", "metrics"), ("METRICS_PORT", "91.5"), ("METRICS_PORT", "8000"),
])
def test_every_bad_setting_is_refused_naming_it(name, value):
    with pytest.raises(ConfigError) as info:
        Config.from_env({**BASE, name: value})

    assert str(info.value).startswith(name)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("TRUE", True), ("yes", True), ("on", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", True),
])
def test_booleans_are_spelled_one_way_everywhere(value, expected):
    assert Config.from_env({**BASE, "MIGRATE_ON_START": value}).migrate_on_start is expected


@pytest.mark.parametrize(("env", "expected"), [
    ({}, (True, None)),
    ({"METRICS": "off"}, (False, None)),
    ({"METRICS": "ON", "METRICS_PORT": " 9100 "}, (True, 9100)),
    ({"METRICS_PORT": ""}, (True, None)),
    ({"PORT": "9100", "METRICS_PORT": "8000"}, (True, 8000)),
    ({"METRICS": "off", "METRICS_PORT": "9100"}, (False, 9100)),
])
def test_metrics_settings(env, expected):
    config = Config.from_env({**BASE, **env})

    assert (config.metrics, config.metrics_port) == expected


def test_the_metrics_port_must_not_be_the_public_one():
    with pytest.raises(ConfigError) as info:
        Config.from_env({**BASE, "PORT": "9100", "METRICS_PORT": "9100"})

    message = str(info.value)
    assert message.startswith("METRICS_PORT must differ from PORT (9100)")
    assert "\n" not in message
