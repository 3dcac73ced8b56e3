"""The demo project's channel layer from the environment: REDIS_URL, Redis Sentinel, or embedded."""

from __future__ import annotations

import pytest

from project.settings import _channel_layer, _sentinels


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("REDIS_URL", "REDIS_SENTINELS", "REDIS_MASTER_NAME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_redis_url_is_one_host_or_comma_separated_shards(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("REDIS_URL", "redis://a:6379/0, redis://b:6379/0")
    environ.setenv("REDIS_SENTINELS", "ignored:26379")  # REDIS_URL wins
    layer = _channel_layer()
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert layer["CONFIG"] == {"hosts": ["redis://a:6379/0", "redis://b:6379/0"]}


def test_redis_sentinels_make_one_sentinel_managed_host(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("REDIS_SENTINELS", "10.0.0.1:26379, 10.0.0.2:26380,[::1]:26381,")
    layer = _channel_layer()
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert layer["CONFIG"] == {
        "hosts": [
            {
                "sentinels": [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)],
                "master_name": "mymaster",
            }
        ]
    }
    environ.setenv("REDIS_MASTER_NAME", "chat")
    assert _channel_layer()["CONFIG"]["hosts"][0]["master_name"] == "chat"  # type: ignore[index]


@pytest.mark.parametrize("value", ["10.0.0.1", "10.0.0.1:", ":26379", "host:port"])
def test_a_sentinel_that_is_not_host_and_port_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="REDIS_SENTINELS"):
        _sentinels(value)


def test_neither_means_the_embedded_redis(environ: pytest.MonkeyPatch) -> None:
    assert _channel_layer() == {"BACKEND": "project.redis.EmbeddedRedisChannelLayer", "CONFIG": {}}
