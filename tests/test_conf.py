from __future__ import annotations

from pathlib import Path

import pytest
from django.test import override_settings

from wsgroups.conf import DEFAULTS, OPTIONS, conf, describe

EXPECTED_DEFAULTS = {
    "MAX_MESSAGE_SIZE": 1048576,
    "MAX_CONNECTIONS": 10000,
    "MAX_CONNECTIONS_PER_CLIENT": 256,
    "MAX_CONNECTIONS_PER_GROUP": None,
    "MESSAGE_RATE": 100.0,
    "MESSAGE_BURST": 200,
    "HANDSHAKE_TIMEOUT": 10.0,
    "ALLOWED_ORIGINS": (),
    "OUTGOING_BUFFER": 1000,
    "PING_INTERVAL": 20.0,
    "PING_TIMEOUT": 30.0,
    "PERMESSAGE_DEFLATE": False,
    "HANDLER_THREADS": 32,
    "SHUTDOWN_TIMEOUT": 5.0,
    "CLOSE_TIMEOUT": 5.0,
    "HANDLER_MODE": "inline",
    "HEARTBEAT_INTERVAL": 2.0,
    "PROCESS_TIMEOUT": 6.0,
    "QUERY_TIMEOUT": 5.0,
    "SEND_TIMEOUT": 10.0,
    "REGISTRY_INTERVAL": 0.005,
    "REGISTRY_RETENTION": 86400,
    "CHANNEL_LAYER": "default",
}


def test_defaults_table():
    assert DEFAULTS == EXPECTED_DEFAULTS


@pytest.mark.parametrize(("key", "value"), sorted(EXPECTED_DEFAULTS.items()))
def test_conf_returns_defaults_for_empty_wsgroups(key, value):
    with override_settings(WSGROUPS={}):
        assert getattr(conf, key) == value


def test_conf_returns_defaults_when_wsgroups_is_unset(settings):
    del settings.WSGROUPS
    assert conf.MAX_MESSAGE_SIZE == 1048576
    assert conf.CHANNEL_LAYER == "default"


def test_conf_returns_defaults_when_wsgroups_is_not_a_dict():
    with override_settings(WSGROUPS=["MAX_MESSAGE_SIZE"]):
        assert conf.MAX_MESSAGE_SIZE == 1048576


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_MESSAGE_SIZE", 5),
        ("ALLOWED_ORIGINS", ("https://app.example.com",)),
        ("OUTGOING_BUFFER", 7),
        ("PING_INTERVAL", 0.5),
        ("PING_TIMEOUT", 1.5),
        ("HANDLER_THREADS", 3),
        ("SHUTDOWN_TIMEOUT", 0.0),
        ("QUERY_TIMEOUT", 2.5),
        ("CHANNEL_LAYER", "other"),
        ("MAX_CONNECTIONS", 3),
        ("MAX_CONNECTIONS", None),
        ("MAX_CONNECTIONS_PER_CLIENT", 2),
        ("MAX_CONNECTIONS_PER_GROUP", 5),
        ("MESSAGE_RATE", 2.5),
        ("MESSAGE_RATE", None),
        ("MESSAGE_BURST", 4.0),
        ("HANDSHAKE_TIMEOUT", 1.5),
        ("PERMESSAGE_DEFLATE", True),
    ],
)
def test_override_settings_is_seen_immediately(key, value):
    assert getattr(conf, key) != value
    with override_settings(WSGROUPS={key: value}):
        assert getattr(conf, key) == value
    assert getattr(conf, key) != value


def test_other_keys_keep_defaults_when_one_is_overridden():
    with override_settings(WSGROUPS={"PING_INTERVAL": 1}):
        assert conf.PING_INTERVAL == 1.0
        assert isinstance(conf.PING_INTERVAL, float)
        assert conf.PING_TIMEOUT == 30.0
        assert conf.MAX_MESSAGE_SIZE == 1048576


def test_allowed_origins_cannot_be_changed_through_conf():
    with override_settings(WSGROUPS={"ALLOWED_ORIGINS": ["https://a.test"]}):
        origins = conf.ALLOWED_ORIGINS
        assert origins == ("https://a.test",)
        with pytest.raises(AttributeError):
            origins.append("https://evil.test")  # type: ignore[attr-defined]
    with override_settings(WSGROUPS={}):
        assert conf.ALLOWED_ORIGINS == ()


def test_every_setting_is_declared_once_with_a_check_and_a_doc():
    assert [option.name for option in OPTIONS] == list(DEFAULTS)
    for option in OPTIONS:
        assert option.doc, option.name
        assert option.problem(option.default) is None, option.name


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("MAX_MESSAGE_SIZE", 0),
        ("MAX_MESSAGE_SIZE", True),
        ("MAX_MESSAGE_SIZE", 1.5),
        ("MAX_CONNECTIONS", -1),
        ("MESSAGE_RATE", 0),
        ("MESSAGE_BURST", 0.5),
        ("SHUTDOWN_TIMEOUT", -1),
        ("ALLOWED_ORIGINS", "https://a.test"),
        ("CHANNEL_LAYER", ""),
        ("HANDLER_MODE", "thread"),
        ("PERMESSAGE_DEFLATE", 1),
        ("PERMESSAGE_DEFLATE", "yes"),
    ],
)
def test_declared_checks_refuse_bad_values(key, bad):
    option = next(option for option in OPTIONS if option.name == key)
    assert option.problem(bad)


def test_values_are_cached_until_the_setting_changes(settings):
    settings.WSGROUPS = {"PING_INTERVAL": 3}
    assert conf.PING_INTERVAL == 3.0
    settings.WSGROUPS["PING_INTERVAL"] = 4  # a change Django does not signal
    assert conf.PING_INTERVAL == 3.0
    settings.WSGROUPS = {"PING_INTERVAL": 5}
    assert conf.PING_INTERVAL == 5.0


def test_channel_layer_presence_follows_channel_layers(settings):
    settings.CHANNEL_LAYERS = {}
    assert not conf.has_channel_layer()
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert conf.has_channel_layer()


def test_readme_lists_every_setting_with_its_default():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name, default, _ in describe():
        shown = (
            "`None`"
            if default is None
            else "`()`"
            if default == ()
            else (f'`"{default}"`' if isinstance(default, str) else str(default))
        )
        assert f"| `{name}` | {shown} |" in readme, name
