"""README.md's *Inside an existing Channels project* and *Testing your sockets*, run as written.

The ``asgi.py`` and ``chat/consumers.py`` blocks of the three steps become modules (``chat``
and ``chat.routing`` made up around them, with the consumer at ``/ws/chat/lobby``), and
the ``chat/tests.py`` block's test case runs against them, in the test process, with the
demo's ``chat`` handlers. When the README changes, this test follows it.
"""

from __future__ import annotations

import re
import sys
import textwrap
import types
import unittest
from typing import Any

import pytest
from django.test import override_settings
from django.urls import path

from .test_e2e_first_hour import readme_section


def python_blocks(section: str) -> list[str]:
    """The python code blocks of ``section``, list-indented ones included, dedented."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", section, re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(code) for _, code in blocks]


def module(name: str, monkeypatch: pytest.MonkeyPatch, **attributes: Any) -> types.ModuleType:
    made = types.ModuleType(name)
    made.__dict__.update(attributes)
    monkeypatch.setitem(sys.modules, name, made)
    return made


@pytest.mark.django_db(transaction=True)  # the README's TransactionTestCase runs inside
def test_the_channels_steps_and_the_testing_example_work_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    asgi_block, consumers_block = python_blocks(readme_section("Inside an existing Channels project"))
    (tests_block,) = python_blocks(readme_section("Testing your sockets"))[:1]
    assert asgi_block.startswith("# mysite/asgi.py") and consumers_block.startswith("# chat/consumers.py")

    consumers = module("chat.consumers", monkeypatch)
    exec(compile(consumers_block, "README.md: chat/consumers.py", "exec"), consumers.__dict__)
    routing = module(
        "chat.routing",
        monkeypatch,
        websocket_urlpatterns=[path("ws/chat/lobby", consumers.ChatUpgrade.as_asgi())],
    )
    module("chat", monkeypatch, routing=routing, consumers=consumers, __path__=[])
    asgi = module("readme_mysite.asgi", monkeypatch)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings")  # what setdefault would keep
    exec(compile(asgi_block, "README.md: mysite/asgi.py", "exec"), asgi.__dict__)
    # No view at /ws/chat/lobby (the demo's chat has one in the test URLconf): the consumer's.
    module("readme_mysite.urls", monkeypatch, urlpatterns=[])

    tests = module("chat.tests", monkeypatch)
    exec(compile(tests_block, "README.md: chat/tests.py", "exec"), tests.__dict__)
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(tests.ChatTests)
    with override_settings(ASGI_APPLICATION="readme_mysite.asgi.application", ROOT_URLCONF="readme_mysite.urls"):
        result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    assert result.testsRun == 2
    assert result.wasSuccessful(), [text for _, text in result.failures + result.errors]
