from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgroups.codes import fit_reason
from wsgroups.exceptions import HandlerError, WebSocketError
from wsgroups.handlers import HandlerRegistry, kind_from_annotation


@pytest.fixture
def registry():
    return HandlerRegistry()


def test_str_annotation_registers_text_handler(registry):
    @registry.websocket("g")
    def on_text(message: str, ws):
        pass

    assert registry.groups["g"].text.func is on_text
    assert registry.groups["g"].binary is None


def test_bytes_annotation_registers_binary_handler(registry):
    @registry.websocket("g")
    def on_binary(data: bytes, ws):
        pass

    assert registry.groups["g"].binary.func is on_binary
    assert registry.groups["g"].text is None


def test_bytearray_annotation_registers_binary_handler(registry):
    @registry.websocket("g")
    def on_binary(data: bytearray, ws):
        pass

    assert registry.groups["g"].binary.func is on_binary


def test_string_annotations_from_future_import_are_resolved():
    # This module uses ``from __future__ import annotations``: annotations are strings.
    def on_text(message: str, ws):
        pass

    def on_binary(data: bytes, ws):
        pass

    assert on_text.__annotations__["message"] == "str"
    assert kind_from_annotation(on_text) == "text"
    assert kind_from_annotation(on_binary) == "binary"


def test_unresolvable_annotation_on_ws_falls_back_to_annotation_text(registry):
    @registry.websocket("g")
    def on_text(message: str, ws: NotDefinedAnywhere):  # noqa: F821
        pass

    assert registry.groups["g"].text.func is on_text


def test_decorator_returns_the_function_unchanged(registry):
    def on_text(message: str, ws):
        return "called"

    assert registry.websocket("g")(on_text) is on_text
    assert on_text("m", None) == "called"


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_kind_override_beats_annotation(registry, kind):
    @registry.websocket("g", kind=kind)
    def handler(message: str, ws):
        pass

    assert getattr(registry.groups["g"], kind).func is handler
    other = "binary" if kind == "text" else "text"
    assert getattr(registry.groups["g"], other) is None


def test_kind_override_works_without_annotation(registry):
    @registry.websocket("g", kind="binary")
    def handler(message, ws):
        pass

    assert registry.groups["g"].binary.func is handler


def test_invalid_kind_raises_handler_error(registry):
    with pytest.raises(HandlerError, match="kind"):
        registry.websocket("g", kind="json")


def test_missing_annotation_raises_handler_error(registry):
    def handler(message, ws):
        pass

    with pytest.raises(HandlerError, match="annotate"):
        registry.websocket("g")(handler)
    assert registry.groups["g"].text is None
    assert registry.groups["g"].binary is None


def test_unsupported_annotation_raises_handler_error(registry):
    def handler(message: int, ws):
        pass

    with pytest.raises(HandlerError, match="str or bytes"):
        registry.websocket("g")(handler)


def test_handler_without_parameters_raises_handler_error(registry):
    def handler():
        pass

    with pytest.raises(HandlerError, match=r"\(message, ws\)"):
        registry.websocket("g")(handler)


def test_handler_error_is_a_websocket_error():
    assert issubclass(HandlerError, WebSocketError)


def test_two_text_handlers_for_one_group_raise(registry):
    @registry.websocket("g")
    def first(message: str, ws):
        pass

    def second(message: str, ws):
        pass

    with pytest.raises(HandlerError, match="already has a text handler"):
        registry.websocket("g")(second)
    assert registry.groups["g"].text.func is first


def test_two_binary_handlers_for_one_group_raise(registry):
    registry.websocket("g", kind="binary")(lambda data, ws: None)
    with pytest.raises(HandlerError, match="binary"):
        registry.websocket("g", kind="binary")(lambda data, ws: None)


def test_same_kind_in_different_groups_is_fine(registry):
    def a(message: str, ws):
        pass

    def b(message: str, ws):
        pass

    registry.websocket("g1")(a)
    registry.websocket("g2")(b)
    assert registry.groups["g1"].text.func is a
    assert registry.groups["g2"].text.func is b


def test_text_and_binary_handlers_coexist_in_one_group(registry):
    def on_text(message: str, ws):
        pass

    def on_binary(data: bytes, ws):
        pass

    registry.websocket("g")(on_text)
    registry.websocket("g")(on_binary)
    assert registry.resolve("g", True).handler.func is on_text
    assert registry.resolve("g", False).handler.func is on_binary


def test_registering_the_same_function_twice_is_fine(registry):
    def on_text(message: str, ws):
        pass

    registry.websocket("g")(on_text)
    registry.websocket("g")(on_text)
    assert registry.groups["g"].text.func is on_text


@pytest.mark.parametrize("group", ["", None, 3])
def test_group_must_be_non_empty_str(registry, group):
    with pytest.raises(HandlerError, match="group"):
        registry.websocket(group)
    with pytest.raises(HandlerError, match="group"):
        registry.websocket_disconnect(group)


def test_non_callable_raises_handler_error(registry):
    with pytest.raises(HandlerError, match="not callable"):
        registry.websocket("g", kind="text")("not a function")


def test_resolve_returns_the_handler(registry):
    def on_text(message: str, ws):
        pass

    registry.websocket("echotestws")(on_text)
    resolution = registry.resolve("echotestws", True)
    assert resolution.handler is not None
    assert resolution.handler.func is on_text
    assert resolution.missing_reason == ""


def test_text_frame_to_binary_only_group_names_group_and_text_handler(registry):
    registry.websocket("echotestws")(module_binary_handler)
    resolution = registry.resolve("echotestws", True)
    assert resolution.handler is None
    assert "echotestws" in resolution.missing_reason
    assert "text handler" in resolution.missing_reason


def test_binary_frame_to_text_only_group_names_group_and_binary_handler(registry):
    registry.websocket("chat")(module_text_handler)
    resolution = registry.resolve("chat", False)
    assert resolution.handler is None
    assert "chat" in resolution.missing_reason
    assert "binary handler" in resolution.missing_reason


def test_resolve_unknown_group_gives_reason(registry):
    resolution = registry.resolve("nobody", True)
    assert resolution.handler is None
    assert "nobody" in resolution.missing_reason
    assert "text handler" in resolution.missing_reason


def module_text_handler(message: str, ws):
    pass


def module_binary_handler(data: bytes, ws):
    pass


def test_sync_handler_is_not_async(registry):
    registry.websocket("g")(module_text_handler)
    assert registry.resolve("g", True).handler.is_async is False


def test_async_handler_is_detected(registry):
    @registry.websocket("g")
    async def on_binary(data: bytes, ws):
        pass

    handler = registry.resolve("g", False).handler
    assert handler.is_async is True
    assert handler.func is on_binary


def test_partial_of_async_function_is_detected_as_async(registry):
    async def on_text(extra, message, ws):
        pass

    registry.websocket("g", kind="text")(functools.partial(on_text, 1))
    assert registry.resolve("g", True).handler.is_async is True


def test_disconnect_handler_registration(registry):
    assert registry.disconnect_handler("g") is None

    @registry.websocket_disconnect("g")
    def on_disconnect(ws):
        pass

    handler = registry.disconnect_handler("g")
    assert handler.func is on_disconnect
    assert handler.is_async is False
    assert registry.disconnect_handler("other") is None
    assert registry.resolve("g", True).handler is None


def test_async_disconnect_handler_is_detected(registry):
    @registry.websocket_disconnect("g")
    async def on_disconnect(ws):
        pass

    assert registry.disconnect_handler("g").is_async is True


def test_second_disconnect_handler_raises_but_same_one_is_fine(registry):
    def first(ws):
        pass

    def second(ws):
        pass

    registry.websocket_disconnect("g")(first)
    registry.websocket_disconnect("g")(first)
    with pytest.raises(HandlerError, match="disconnect handler"):
        registry.websocket_disconnect("g")(second)
    assert registry.disconnect_handler("g").func is first


def test_fresh_registries_do_not_share_groups():
    one, two = HandlerRegistry(), HandlerRegistry()
    one.websocket("g")(module_text_handler)
    assert two.resolve("g", True).handler is None


# --- properties of dispatch ---------------------------------------------------------------

group_names = st.text(min_size=1, max_size=40)
# For each group: whether it has a text, a binary and a disconnect handler.
layouts = st.dictionaries(group_names, st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=6)


def _make(name: str, is_async: bool):
    if is_async:

        async def handler(message, ws):
            pass

    else:

        def handler(message, ws):
            pass

    handler.__qualname__ = name
    return handler


@given(layouts, st.lists(st.tuples(group_names, st.booleans()), max_size=20), st.booleans())
def test_property_resolve_gives_the_registered_handler_or_names_the_missing_one(layout, frames, is_async):
    registry = HandlerRegistry()
    registered = {}
    for group, (has_text, has_binary, has_disconnect) in layout.items():
        for kind, wanted in (("text", has_text), ("binary", has_binary)):
            if wanted:
                func = _make(f"{kind}_{len(registered)}", is_async)
                registry.websocket(group, kind=kind)(func)
                registered[group, kind] = func
        if has_disconnect:
            func = _make(f"gone_{len(registered)}", is_async)
            registry.websocket_disconnect(group)(func)
            registered[group, "disconnect"] = func
    # The frames name registered groups and arbitrary ones.
    probes = [(group, is_text) for group in layout for is_text in (True, False)] + frames
    for group, is_text in probes:
        kind = "text" if is_text else "binary"
        resolution = registry.resolve(group, is_text)
        if (group, kind) in registered:
            assert resolution.handler is not None
            assert resolution.handler.func is registered[group, kind]
            assert resolution.handler.is_async is is_async
            assert resolution.missing_reason == ""
        else:
            assert resolution.handler is None
            assert resolution.missing_reason == fit_reason(f"group {group!r} has no {kind} handler")
        disconnect = registry.disconnect_handler(group)
        if (group, "disconnect") in registered:
            assert disconnect is not None and disconnect.func is registered[group, "disconnect"]
        else:
            assert disconnect is None


ANNOTATION_KINDS = [
    (str, "text"),
    ("str", "text"),
    (bytes, "binary"),
    ("bytes", "binary"),
    (bytearray, "binary"),
    ("bytearray", "binary"),
]
UNSUPPORTED_ANNOTATIONS = [int, float, list, dict, object, None, "int", "memoryview", "list[str]", "NotDefined"]


@given(st.sampled_from(ANNOTATION_KINDS), st.booleans(), st.sampled_from(["message", "data", "payload", "m"]))
def test_property_kind_comes_from_the_first_parameters_annotation(pair, is_async, parameter):
    annotation, kind = pair
    func = _make("annotated", is_async)
    func.__annotations__ = {parameter: annotation}
    func.__code__ = func.__code__.replace(co_varnames=(parameter, "ws", *func.__code__.co_varnames[2:]))
    assert kind_from_annotation(func) == kind
    registry = HandlerRegistry()
    registry.websocket("g")(func)
    assert registry.resolve("g", kind == "text").handler.func is func
    assert registry.resolve("g", kind != "text").handler is None


@given(st.sampled_from(UNSUPPORTED_ANNOTATIONS + [a for a, _ in ANNOTATION_KINDS]), st.sampled_from(["text", "binary"]))
def test_property_explicit_kind_wins_over_any_annotation(annotation, kind):
    func = _make("explicit", False)
    func.__annotations__ = {"message": annotation}
    registry = HandlerRegistry()
    registry.websocket("g", kind=kind)(func)
    assert registry.resolve("g", kind == "text").handler.func is func
    assert registry.resolve("g", kind != "text").handler is None


@given(st.sampled_from(UNSUPPORTED_ANNOTATIONS))
def test_property_other_annotations_are_refused_without_registering(annotation):
    func = _make("unsupported", False)
    func.__annotations__ = {"message": annotation}
    registry = HandlerRegistry()
    with pytest.raises(HandlerError, match="str or bytes"):
        registry.websocket("g")(func)
    assert registry.resolve("g", True).handler is None
    assert registry.resolve("g", False).handler is None
