from __future__ import annotations

import pytest
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from wsgroups.asgi import get_asgi_application
from wsgroups.checks import (
    MIDDLEWARE_PATH,
    check_asgi_application,
    check_handlers,
    check_migrations,
    check_settings,
    check_wiring,
    routes_to_wsgroups,
    startup_errors,
)
from wsgroups.conf import DEFAULTS
from wsgroups.handlers import HandlerRegistry
from wsgroups.routing import ProtocolRouter


def ids(messages):
    return sorted(message.id for message in messages)


def wsgroups_ids(messages):
    return [message.id for message in messages if (message.id or "").startswith("wsgroups.")]


def test_demo_project_settings_produce_no_wsgroups_messages():
    assert check_wiring() == []
    assert check_settings() == []


@pytest.mark.django_db
def test_checks_are_registered_with_django():
    assert wsgroups_ids(checks.run_checks(tags=[checks.Tags.compatibility])) == []
    with override_settings(WSGROUPS={"BOGUS": 1}):
        assert "wsgroups.E006" in wsgroups_ids(checks.run_checks())


# --- check_wiring -------------------------------------------------------------------


def test_e001_middleware_missing():
    middleware = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]
    with override_settings(MIDDLEWARE=middleware):
        assert ids(check_wiring()) == ["wsgroups.E001"]


def test_e001_middleware_setting_empty():
    with override_settings(MIDDLEWARE=[]):
        assert ids(check_wiring()) == ["wsgroups.E001"]


def test_e002_no_channel_layers():
    with override_settings(CHANNEL_LAYERS={}):
        assert ids(check_wiring()) == ["wsgroups.E002"]


def test_e002_alias_named_by_wsgroups_missing():
    with override_settings(WSGROUPS={"CHANNEL_LAYER": "wsgroups"}):
        assert ids(check_wiring()) == ["wsgroups.E002"]


@pytest.fixture
def outside_test_run(monkeypatch):
    """As in a server process: Django's test environment (its mail outbox) is not set up."""
    from django.core import mail

    monkeypatch.delattr(mail, "outbox", raising=False)


def test_e009_in_memory_layer_cannot_link_processes(outside_test_run):
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers):
        messages = check_wiring()
    assert ids(messages) == ["wsgroups.E009"]
    assert "in memory" in messages[0].msg


def test_no_e009_in_a_test_run_where_sockets_stay_in_process():
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers):
        assert check_wiring() == []


def test_no_e009_for_an_in_memory_layer_wsgroups_does_not_use():
    layers = {**settings.CHANNEL_LAYERS, "scratch": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers):
        assert check_wiring() == []


def test_no_e002_when_alias_named_by_wsgroups_exists():
    layers = {"wsgroups": settings.CHANNEL_LAYERS["default"]}
    with override_settings(CHANNEL_LAYERS=layers, WSGROUPS={"CHANNEL_LAYER": "wsgroups"}):
        assert check_wiring() == []
    with override_settings(CHANNEL_LAYERS=layers):
        assert ids(check_wiring()) == ["wsgroups.E002"]


def test_check_wiring_survives_unhashable_channel_layer_setting():
    with override_settings(WSGROUPS={"CHANNEL_LAYER": ["default"]}):
        check_wiring()
        assert ids(check_settings()) == ["wsgroups.E007"]


def test_e003_daphne_after_staticfiles():
    apps = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    apps.insert(apps.index("django.contrib.staticfiles") + 1, "daphne")
    with override_settings(INSTALLED_APPS=apps):
        assert ids(check_wiring()) == ["wsgroups.E003"]


def test_no_e003_when_daphne_before_staticfiles_or_staticfiles_absent():
    apps = [app for app in settings.INSTALLED_APPS if app != "django.contrib.staticfiles"]
    with override_settings(INSTALLED_APPS=apps):
        assert check_wiring() == []


def test_w001_no_daphne():
    apps = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    with override_settings(INSTALLED_APPS=apps):
        messages = check_wiring()
    assert ids(messages) == ["wsgroups.W001"]
    assert messages[0].level == checks.WARNING


@pytest.mark.parametrize("value", [None, ""])
def test_e004_no_asgi_application(value):
    with override_settings(ASGI_APPLICATION=value):
        assert ids(check_wiring()) == ["wsgroups.E004"]


def test_e004_asgi_application_unset(settings):
    del settings.ASGI_APPLICATION
    assert ids(check_wiring()) == ["wsgroups.E004"]


def test_several_wiring_mistakes_are_all_reported():
    with override_settings(MIDDLEWARE=[], CHANNEL_LAYERS={}, ASGI_APPLICATION=None):
        assert ids(check_wiring()) == ["wsgroups.E001", "wsgroups.E002", "wsgroups.E004"]


def test_wiring_errors_are_errors():
    with override_settings(MIDDLEWARE=[]):
        (message,) = check_wiring()
    assert message.level == checks.ERROR
    assert MIDDLEWARE_PATH in message.msg


# --- check_settings -----------------------------------------------------------------


@pytest.mark.parametrize("value", [[], "MAX_MESSAGE_SIZE=1", None, ("a", 1)])
def test_e005_wsgroups_not_a_dict(value):
    with override_settings(WSGROUPS=value):
        assert ids(check_settings()) == ["wsgroups.E005"]


def test_wsgroups_unset_is_fine(settings):
    del settings.WSGROUPS
    assert check_settings() == []


def test_e006_unknown_key():
    with override_settings(WSGROUPS={"MAX_MESSAGE_SIZ": 10, "PING_INTERVAL": 5}):
        messages = check_settings()
    assert ids(messages) == ["wsgroups.E006"]
    assert "MAX_MESSAGE_SIZ" in messages[0].msg


def test_e006_once_per_unknown_key():
    with override_settings(WSGROUPS={"A": 1, "B": 2}):
        assert ids(check_settings()) == ["wsgroups.E006", "wsgroups.E006"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_MESSAGE_SIZE", 0),
        ("MAX_MESSAGE_SIZE", -1),
        ("MAX_MESSAGE_SIZE", "x"),
        ("MAX_MESSAGE_SIZE", 1.5),
        ("MAX_MESSAGE_SIZE", True),
        ("MAX_MESSAGE_SIZE", None),
        ("OUTGOING_BUFFER", 0),
        ("HANDLER_THREADS", 0),
        ("HANDLER_THREADS", "4"),
        ("PING_INTERVAL", 0),
        ("PING_INTERVAL", -1.0),
        ("PING_INTERVAL", "20"),
        ("PING_INTERVAL", float("nan")),
        ("PING_TIMEOUT", 0.0),
        ("SHUTDOWN_TIMEOUT", -0.1),
        ("SHUTDOWN_TIMEOUT", "5"),
        ("SEND_TIMEOUT", -1),
        ("ALLOWED_ORIGINS", "x"),
        ("ALLOWED_ORIGINS", "https://example.com"),
        ("ALLOWED_ORIGINS", [1]),
        ("ALLOWED_ORIGINS", None),
        ("CHANNEL_LAYER", ""),
        ("CHANNEL_LAYER", 1),
        ("MAX_CONNECTIONS", 0),
        ("MAX_CONNECTIONS", -5),
        ("MAX_CONNECTIONS", 10.5),
        ("MAX_CONNECTIONS", "100"),
        ("MAX_CONNECTIONS", True),
        ("MAX_CONNECTIONS_PER_CLIENT", 0),
        ("MAX_CONNECTIONS_PER_GROUP", "all"),
        ("MESSAGE_RATE", 0),
        ("MESSAGE_RATE", -1.0),
        ("MESSAGE_RATE", "100"),
        ("MESSAGE_RATE", float("nan")),
        ("MESSAGE_BURST", 0.5),
        ("MESSAGE_BURST", None),
        ("MESSAGE_BURST", "200"),
        ("HANDSHAKE_TIMEOUT", 0),
        ("HANDSHAKE_TIMEOUT", None),
    ],
)
def test_e007_bad_values(key, value):
    with override_settings(WSGROUPS={key: value}):
        messages = check_settings()
    assert ids(messages) == ["wsgroups.E007"]
    assert key in messages[0].msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_MESSAGE_SIZE", 1),
        ("MAX_MESSAGE_SIZE", 64 * 1024 * 1024),
        ("OUTGOING_BUFFER", 1),
        ("HANDLER_THREADS", 1),
        ("PING_INTERVAL", 0.1),
        ("PING_INTERVAL", 5),
        ("PING_TIMEOUT", 60),
        ("SHUTDOWN_TIMEOUT", 0),
        ("SHUTDOWN_TIMEOUT", 0.0),
        ("ALLOWED_ORIGINS", []),
        ("ALLOWED_ORIGINS", ["https://example.com", "*"]),
        ("ALLOWED_ORIGINS", ("https://example.com",)),
        ("CHANNEL_LAYER", "default"),
        ("MAX_CONNECTIONS", None),
        ("MAX_CONNECTIONS", 256),
        ("MAX_CONNECTIONS_PER_CLIENT", None),
        ("MAX_CONNECTIONS_PER_CLIENT", 10),
        ("MAX_CONNECTIONS_PER_GROUP", 50),
        ("MESSAGE_RATE", None),
        ("MESSAGE_RATE", 0.5),
        ("MESSAGE_BURST", 100),
        ("MESSAGE_BURST", 1000.0),
        ("HANDSHAKE_TIMEOUT", 0.5),
    ],
)
def test_no_e007_for_good_values(key, value):
    with override_settings(WSGROUPS={key: value}):
        assert check_settings() == []


def test_e006_and_e007_reported_together():
    with override_settings(WSGROUPS={"NOPE": 1, "MAX_MESSAGE_SIZE": 0}):
        assert ids(check_settings()) == ["wsgroups.E006", "wsgroups.E007"]


# --- limits that contradict one another ------------------------------------------------


@pytest.mark.parametrize("key", ["MAX_CONNECTIONS_PER_CLIENT", "MAX_CONNECTIONS_PER_GROUP"])
def test_w004_a_per_client_or_group_limit_above_the_total_can_never_be_reached(key):
    others = {"MAX_CONNECTIONS_PER_CLIENT": None, "MAX_CONNECTIONS_PER_GROUP": None}
    with override_settings(WSGROUPS={**others, "MAX_CONNECTIONS": 10, key: 11}):
        messages = check_settings()
    assert ids(messages) == ["wsgroups.W004"]
    assert messages[0].level == checks.WARNING
    assert key in messages[0].msg
    with override_settings(WSGROUPS={**others, "MAX_CONNECTIONS": None, key: 11}):
        assert check_settings() == []
    with override_settings(WSGROUPS={**others, "MAX_CONNECTIONS": 10, key: 10}):
        assert check_settings() == []


def test_w003_a_burst_below_one_second_of_the_rate():
    with override_settings(WSGROUPS={"MESSAGE_RATE": 50, "MESSAGE_BURST": 10}):
        messages = check_settings()
    assert ids(messages) == ["wsgroups.W003"]
    assert messages[0].level == checks.WARNING
    with override_settings(WSGROUPS={"MESSAGE_RATE": None, "MESSAGE_BURST": 10}):
        assert check_settings() == []


# --- channels app and ASGI_APPLICATION -------------------------------------------------


def test_e010_channels_not_installed():
    apps = [app for app in settings.INSTALLED_APPS if app != "channels"]
    with override_settings(INSTALLED_APPS=apps):
        messages = check_wiring()
    assert ids(messages) == ["wsgroups.E010"]
    assert "runworker" in messages[0].hint


def test_e011_asgi_application_cannot_be_imported():
    with override_settings(ASGI_APPLICATION="project.no_such_module.application"):
        messages = check_asgi_application()
    assert ids(messages) == ["wsgroups.E011"]
    assert "project.no_such_module.application" in messages[0].msg


def test_e011_hint_names_the_module_tried_and_the_likely_one(monkeypatch):
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
    with override_settings(ASGI_APPLICATION="project.asgi.application_missing"):
        (message,) = check_asgi_application()
    assert "'project.asgi'" in message.hint
    assert "'mysite.asgi.application'" in message.hint
    assert "project.asgi.application'" not in message.hint.replace("'project.asgi'", "")


def test_w002_asgi_application_that_bypasses_wsgroups():
    with override_settings(ASGI_APPLICATION="tests.test_checks.plain_application"):
        messages = check_asgi_application()
    assert ids(messages) == ["wsgroups.W002"]


@pytest.mark.django_db
def test_no_w002_for_the_demo_application_wrapped_in_static_files_handler():
    assert check_asgi_application() == []


def test_routes_to_wsgroups_sees_through_wrappers_but_not_loops():
    router = ProtocolRouter(plain_application, plain_application)

    class Wrapper:
        def __init__(self, inner: object) -> None:
            self.app = inner

    assert routes_to_wsgroups(Wrapper(Wrapper(router)))
    looped = Wrapper(None)
    looped.app = looped
    assert not routes_to_wsgroups(looped)
    assert not routes_to_wsgroups(plain_application)


async def plain_application(scope, receive, send):
    """An ASGI app that never reaches wsgroups."""


# --- the same checks when the ASGI application is built --------------------------------


def test_get_asgi_application_refuses_a_configuration_with_errors(outside_test_run):
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers, WSGROUPS={"MESSAGE_RATE": -1}):
        with pytest.raises(ImproperlyConfigured) as caught:
            get_asgi_application()
    text = str(caught.value)
    assert "wsgroups.E009" in text and "wsgroups.E007" in text and "MESSAGE_RATE" in text


@pytest.mark.django_db
def test_get_asgi_application_ignores_warnings_and_silenced_errors():
    apps = [app for app in settings.INSTALLED_APPS if app != "daphne"]  # W001 only
    with override_settings(INSTALLED_APPS=apps):
        assert startup_errors() == []
    with override_settings(CHANNEL_LAYERS={}, SILENCED_SYSTEM_CHECKS=["wsgroups.E002"]):
        assert startup_errors() == []
        assert isinstance(get_asgi_application(), ProtocolRouter)


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_setting_is_checked(key):
    with override_settings(WSGROUPS={key: object()}):
        messages = check_settings()
    assert ids(messages) == ["wsgroups.E007"]
    assert key in messages[0].msg


# --- W005-W007: the project around wsgroups ------------------------------------------


@pytest.mark.django_db
def test_no_w005_once_migrated():
    assert check_migrations() == []


@pytest.mark.django_db(transaction=True)
def test_w005_when_wsgroups_tables_are_missing():
    from django.core.management import call_command

    call_command("migrate", "wsgroups", "zero", verbosity=0)
    try:
        messages = check_migrations()
    finally:
        call_command("migrate", "wsgroups", verbosity=0)
    assert ids(messages) == ["wsgroups.W005"]
    assert "manage.py migrate" in messages[0].hint


def test_w005_is_not_reported_by_migrate_itself(monkeypatch):
    monkeypatch.setattr("sys.argv", ["manage.py", "migrate"])
    assert check_migrations() == []


def test_w006_for_a_group_with_only_a_disconnect_handler():
    registry = HandlerRegistry()
    registry.websocket_disconnect("lonely")(lambda ws: None)

    @registry.websocket("fine")
    def on_text(message: str, ws: object) -> None: ...

    registry.websocket_disconnect("fine")(lambda ws: None)
    messages = [m for m in check_handlers(registry=registry) if m.id == "wsgroups.W006"]
    assert len(messages) == 1 and "'lonely'" in messages[0].msg


def test_w007_for_a_sockets_module_beside_the_settings(tmp_path, monkeypatch):
    package = tmp_path / "straysite"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("")
    (package / "sockets.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "straysite.settings")
    messages = check_handlers(registry=HandlerRegistry())
    assert ids(messages) == ["wsgroups.W007"]
    assert "straysite.sockets" in messages[0].msg
    (package / "sockets.py").unlink()
    assert check_handlers(registry=HandlerRegistry()) == []
