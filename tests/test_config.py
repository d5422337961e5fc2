from pathlib import Path

import pytest

from signaling.config import Config, Env
from signaling.errors import ConfigError

STRONG = "x" * 40


def test_env_variables_are_parsed_by_type() -> None:
    c = Config.load({
        "MIKOTO_RTC_PORT": "9000", "MIKOTO_RTC_STUN_URLS": "stun:a:3478, stun:b:3478",
        "MIKOTO_RTC_ROOM_MAX_PARTICIPANTS": "8", "MIKOTO_RTC_WEB_DIR": "/srv/web",
        "MIKOTO_RTC_SHUTDOWN_TIMEOUT": "1.5",
    })
    assert c.port == 9000
    assert c.stun_urls == ("stun:a:3478", "stun:b:3478")
    assert c.room_max_participants == 8
    assert c.web_dir == Path("/srv/web")
    assert c.shutdown_timeout == 1.5
    assert c.env is Env.DEV


def test_cli_overrides_win_but_none_does_not() -> None:
    c = Config.load({"MIKOTO_RTC_PORT": "9000", "MIKOTO_RTC_HOST": "0.0.0.0"}, port=7000, host=None)
    assert (c.host, c.port) == ("0.0.0.0", 7000)


@pytest.mark.parametrize("env", [
    {"MIKOTO_RTC_PORT": "eighty"},
    {"MIKOTO_RTC_PORT": "70000"},
    {"MIKOTO_RTC_ENV": "staging"},
    {"MIKOTO_RTC_ROOM_MAX_PARTICIPANTS": "1"},
    {"MIKOTO_RTC_TURN_URLS": "turn:127.0.0.1:3478"},  # TURN without its secret
    {"MIKOTO_RTC_WEBHOOK_URL": "https://x.example/hooks"},  # webhooks without their secret
    {"MIKOTO_RTC_WEBHOOK_URL": "ftp://x.example/hooks", "MIKOTO_RTC_WEBHOOK_SECRET": "s"},
    {"MIKOTO_RTC_WEBHOOK_BACKOFF": "10", "MIKOTO_RTC_WEBHOOK_BACKOFF_MAX": "5"},
    {"MIKOTO_RTC_WEBHOOK_ATTEMPTS": "0"},
])
def test_invalid_values_are_refused_at_load(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Config.load(env)


def test_production_requires_a_secret() -> None:
    with pytest.raises(ConfigError, match="requires MIKOTO_RTC_SECRET"):
        Config.load({"MIKOTO_RTC_ENV": "production"})


@pytest.mark.parametrize("secret", ["dev-" + "x" * 40, "short-secret"])
def test_production_refuses_dev_and_weak_secrets(secret: str) -> None:
    with pytest.raises(ConfigError):
        Config.load({"MIKOTO_RTC_ENV": "production", "MIKOTO_RTC_SECRET": secret})


def test_production_refuses_a_dev_turn_secret() -> None:
    with pytest.raises(ConfigError, match="TURN_SECRET"):
        Config(env=Env.PRODUCTION, secret=STRONG, turn_urls=("turn:x",), turn_secret="dev-turn")


def test_production_refuses_a_dev_webhook_secret() -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        Config(env=Env.PRODUCTION, secret=STRONG, webhook_url="https://x.example/hooks",
               webhook_secret="dev-only-webhook-secret")


def test_dev_mode_generates_an_ephemeral_marked_secret() -> None:
    a = Config().with_runtime_secret()
    b = Config().with_runtime_secret()
    assert a.secret and b.secret and a.secret != b.secret
    assert a.secret.startswith("dev-")
    assert Config(secret=STRONG).with_runtime_secret().secret == STRONG


def test_secrets_stay_out_of_repr() -> None:
    c = Config(secret="s3cr3t-value", turn_urls=("turn:x",), turn_secret="turn-s3cr3t")
    assert "s3cr3t" not in repr(c)


def test_sample_config_names_every_setting() -> None:
    sample = (Path(__file__).parent.parent / "mikoto-rtc.env.sample").read_text()
    import dataclasses
    for f in dataclasses.fields(Config):
        assert f"MIKOTO_RTC_{f.name.upper()}" in sample, f.name
