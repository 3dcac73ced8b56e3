"""A new user's first hour: README.md's *Wiring* section, followed literally, in a brand-new project.

wsgroups' sdist and wheel are built from this checkout with the README's ``python -m build``
(both must carry the license, the migrations, the admin templates and ``py.typed``; the
wheel is built from the sdist, so the sdist must be complete) and the wheel is installed
(not editable) with the README's ``pip install`` into a fresh virtualenv, the dependencies
resolved from the package index. In a project made
by ``django-admin startproject`` and ``manage.py startapp``, the settings, ``asgi.py`` and
``urls.py`` are edited as the README's Wiring block says (its ``...`` kept as what
startproject wrote), and the README's ``wstest`` view and handlers are copied into the app,
taken from the README itself: when the README changes, this test follows it. Then:
migrate, ``manage.py check``, a user, ``runserver`` with its autoreloader, a login over plain HTTP, a
same-origin WebSocket with the session cookie, the registry's record of the user, and
Ctrl-C (SIGINT to runserver's process group), which must close the socket with 1001.
"""

from __future__ import annotations

import ast
import asyncio
import http.cookiejar
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .services import RedisServer, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
README_URL = "redis://127.0.0.1:6379/0"  # the Redis the README's CHANNEL_LAYERS names
CHECKOUT = "/path/to/wsgroups"  # how the README names a checkout of this repository
USERNAME, PASSWORD = "firsthour", "first-hour-password-1"


# --- reading the README -------------------------------------------------------------------


def readme_section(title: str) -> str:
    """The text under the heading ``title`` (any level), up to the next heading of that level or above."""
    section: list[str] | None = None
    level = 0
    in_code = False
    for line in (ROOT / "README.md").read_text().splitlines(keepends=True):
        if line.startswith("```"):
            in_code = not in_code
        heading = None if in_code else re.match(r"(#+) (.*)", line)
        if heading and section is None and heading.group(2).strip() == title:
            section, level = [], len(heading.group(1))
        elif heading and section is not None and len(heading.group(1)) <= level:
            break
        elif section is not None:
            section.append(line)
    assert section is not None, f"README.md has no section {title!r}"
    return "".join(section)


def code_blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def file_fragments(block: str) -> dict[str, str]:
    """A code block split at its ``# path/to/file.py`` lines: {path: the code under it}."""
    fragments: dict[str, str] = {}
    current = None
    for line in block.splitlines(keepends=True):
        header = re.match(r"# (\S+\.py)\b", line)
        if header:
            current = header.group(1)
            fragments[current] = ""
        elif current is not None:
            fragments[current] += line
    return fragments


def readme_file(section_title: str) -> tuple[str, str]:
    """The first Python block of a section, which opens with ``# path/to/file.py``: (path, code)."""
    block = code_blocks(readme_section(section_title), "python")[0]
    header = re.match(r"# (\S+\.py)\b", block)
    assert header, f"the first block of README.md's {section_title!r} does not say which file it is"
    return header.group(1), block


def readme_command(section: str, prefix: str) -> str:
    """The first command of the section (in a ``sh`` block or in backquotes) that starts with ``prefix``."""
    lines = [line.split("#", 1)[0].strip() for block in code_blocks(section, "sh") for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", section, flags=re.MULTILINE | re.DOTALL))
    for line in lines:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"README.md's section has no command starting with {prefix!r}")


# --- applying the Wiring block to startproject's files --------------------------------------


def _top_level_assignment(tree: ast.Module, name: str) -> ast.Assign | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
    return None


def apply_fragment(path: Path, fragment: str) -> None:
    """Edit ``path`` as a README fragment says: its assignments set (a ``...`` in a list keeps
    what the file had there), its imports go after the file's own."""
    source = path.read_text()
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    readme = ast.parse(fragment)
    imports = [
        ast.get_source_segment(fragment, node) for node in readme.body if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    edits: list[tuple[int, int, str]] = []  # (first line index, end line index, new text)
    appended: list[str] = []
    for node in readme.body:
        if not isinstance(node, ast.Assign):
            continue
        (target,) = node.targets
        assert isinstance(target, ast.Name)
        existing = _top_level_assignment(tree, target.id)
        value = node.value
        if isinstance(value, ast.List) and any(isinstance(e, ast.Constant) and e.value is Ellipsis for e in value.elts):
            assert existing is not None and isinstance(existing.value, ast.List), f"{path} has no list {target.id}"
            old_items = [ast.get_source_segment(source, e) for e in existing.value.elts]
            new_items: list[str] = []
            for element in value.elts:
                if isinstance(element, ast.Constant) and element.value is Ellipsis:
                    new_items += old_items
                else:
                    new_items.append(ast.unparse(element))
            text = f"{target.id} = [\n" + "".join(f"    {item},\n" for item in dict.fromkeys(new_items)) + "]\n"
        else:
            text = f"{target.id} = {ast.unparse(value)}\n"
        if existing is not None:
            edits.append((existing.lineno - 1, existing.end_lineno or existing.lineno, text))
        else:
            appended.append(text)
    last_import = max(
        (node.end_lineno or node.lineno for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)),
        default=0,
    )
    assert all(start >= last_import for start, _, _ in edits), f"{path}: an assignment among the imports"
    for start, end, text in sorted(edits, reverse=True):
        lines[start:end] = [text]
    lines[last_import:last_import] = [f"{line}\n" for line in imports if line]
    path.write_text("".join(lines) + "".join(f"\n{text}" for text in appended))


# --- running things -----------------------------------------------------------------------


#: What this test run's environment sets and a new user's shell would not. Without bytecode
#: (PYTHONDONTWRITEBYTECODE) every process would compile Django and Twisted anew.
NOT_INHERITED = {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV"}
NOT_INHERITED_PREFIXES = ("WSGROUPS_", "REDIS_", "DATABASE_", "SQLITE_")


def venv_env(venv: Path) -> dict[str, str]:
    """The environment of a shell with the new virtualenv activated (nothing of the test run's)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in NOT_INHERITED and not key.startswith(NOT_INHERITED_PREFIXES)
    }
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run a command to completion (bounded); its stdout. Each command's duration is printed."""
    started = time.monotonic()
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{shlex.join(args)} took over {timeout} s:\n{exc.stdout}\n{exc.stderr}") from None
    print(f"{time.monotonic() - started:6.1f} s  {shlex.join(args)[:150]}")
    assert done.returncode == 0, f"{shlex.join(args)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def command(line: str, venv: Path, replacements: dict[str, str]) -> list[str]:
    """A README command line as argv, run with the virtualenv's programs.

    ``pip`` is this test run's pip acting on the virtualenv (``--python``), which was made
    without one: ensurepip costs a loaded machine some 20 s for nothing this test checks.
    """
    args = [replacements.get(arg, arg) for arg in shlex.split(line)]
    if args[0] == "pip":
        prefix = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), args[1]]
        if args[1] == "install":
            prefix.append("--no-compile")  # the first imports compile what they use: 15 s less
        return [*prefix, *args[2:]]
    program = venv / "bin" / args[0]
    assert program.exists(), f"{program} is not in the new virtualenv"
    return [str(program), *args[1:]]


def login(base: str, username: str, password: str) -> dict[str, str]:
    """Log in through the admin's login form (GET for the CSRF token, then POST): the cookies."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{base}/admin/login/", timeout=30) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page
    form = {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password, "next": "/admin/"}
    request = urllib.request.Request(f"{base}/admin/login/", data=urllib.parse.urlencode(form).encode())
    with opener.open(request, timeout=30) as response:
        assert response.url == f"{base}/admin/", (response.url, response.read()[:2000])
    cookies = {cookie.name: cookie.value for cookie in jar if cookie.value is not None}
    assert "sessionid" in cookies, cookies
    return cookies


def wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"runserver exited with {process.returncode}:\n{log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"runserver did not listen on {port}:\n{log.read_text()}"
            time.sleep(0.1)


# --- what the package is made of --------------------------------------------------------


#: What a checkout holds for packaging besides the ``wsgroups`` package.
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in")
#: Files both distributions must carry, inside the package.
PACKAGE_DATA = (
    "wsgroups/py.typed",
    "wsgroups/migrations/__init__.py",
    "wsgroups/migrations/0001_initial.py",
    "wsgroups/templates/admin/wsgroups/connection/change_list.html",
    "wsgroups/templates/admin/wsgroups/process/change_list.html",
)


def check_distributions(dist: Path, install_line: str) -> None:
    """``dist`` holds the sdist and the wheel of the version the README installs, each with
    the license, the package's data and every module; the wheel's metadata says what is tested."""
    pyproject = (ROOT / "pyproject.toml").read_text()  # tomllib is 3.11+: its few fields by their lines
    version = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE).group(1)  # type: ignore[union-attr]
    requires_python = re.search(r'^requires-python = "([^"]+)"$', pyproject, re.MULTILINE).group(1)  # type: ignore[union-attr]
    classifiers = re.findall(r'^    "(\S[^"]* :: [^"]+)",$', pyproject, re.MULTILINE)
    assert "Framework :: Django :: 5.2" in classifiers, classifiers
    wheel_name, sdist_name = f"wsgroups-{version}-py3-none-any.whl", f"wsgroups-{version}.tar.gz"
    assert sorted(p.name for p in dist.iterdir()) == sorted([sdist_name, wheel_name])
    assert install_line.endswith(f"dist/{wheel_name}"), f"README.md installs another version: {install_line}"
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "wsgroups").rglob("*.py"))
    with zipfile.ZipFile(dist / wheel_name) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"wsgroups-{version}.dist-info/METADATA").decode()
    missing = [n for n in (*PACKAGE_DATA, *modules, f"wsgroups-{version}.dist-info/licenses/LICENSE") if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not [n for n in names if n.startswith(("tests/", "project/", "bench/"))], sorted(names)
    with tarfile.open(dist / sdist_name) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = [n for n in (*PACKAGE_DATA, *modules, "LICENSE", "CHANGELOG.md", "README.md") if n not in members]
    assert not missing, f"the sdist lacks {missing}"
    assert "License-Expression: MIT" in metadata
    assert f"Requires-Python: {requires_python}" in metadata
    assert re.findall(r"^Classifier: (.*)$", metadata, re.MULTILINE) == classifiers


# --- the test -----------------------------------------------------------------------------


@pytest.mark.timeout(1200)  # a cold pip cache downloads Django, Channels, daphne, Twisted...
def test_first_hour_by_the_readme(tmp_path: Path, redis_server: RedisServer) -> None:
    wiring = readme_section("Wiring")
    venv, project = tmp_path / "venv", tmp_path / "project"

    # 1. A fresh virtualenv of this Python; wsgroups' sdist and wheel, built as the README says
    #    (with this test run's `build`), the wheel installed with its dependencies from the
    #    index. They are built from a copy of what git would hold of the package: setuptools
    #    builds in the source tree, whose stale build/ would leak into them.
    checkout = tmp_path / "wsgroups"
    checkout.mkdir()
    for name in PACKAGE_FILES:
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "wsgroups", checkout / "wsgroups", ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, os.environ.copy(), timeout=120)
    env = venv_env(venv)
    build_line = readme_command(wiring, "python -m build ")
    install_line = readme_command(wiring, "pip install dist/")
    build_args = [arg.replace(CHECKOUT, str(checkout)) for arg in shlex.split(build_line)[1:]]
    run([sys.executable, *build_args], tmp_path, env, timeout=600)
    check_distributions(tmp_path / "dist", install_line)
    run(command(install_line, venv, {}), tmp_path, env, timeout=900)
    # The installed copy (not this checkout), with daphne for runserver and no uvicorn.
    where = (
        "import importlib.util as u, wsgroups; "
        "print(wsgroups.__file__, u.find_spec('daphne') is not None, u.find_spec('uvicorn') is not None)"
    )
    installed = run([str(venv / "bin" / "python"), "-c", where], tmp_path, env, timeout=60).split()
    assert installed[0].startswith(str(venv / "lib")) and installed[1:] == ["True", "False"], installed

    # 2. The project and its app, as the README's Wiring section names them.
    project.mkdir()
    run(command(readme_command(wiring, "django-admin startproject "), venv, {}), project, env, timeout=60)
    run(command(readme_command(wiring, "python manage.py startapp "), venv, {}), project, env, timeout=60)
    fragments = file_fragments(code_blocks(wiring, "python")[0])
    settings_path, asgi_path, urls_path = (p for p in fragments if p.endswith(("settings.py", "asgi.py", "urls.py")))
    settings_before = (project / settings_path).read_text()
    apply_fragment(project / settings_path, fragments[settings_path].replace(README_URL, redis_server.url))
    (project / asgi_path).write_text(fragments[asgi_path])
    apply_fragment(project / urls_path, fragments[urls_path])
    for section in ("Upgrade inside a view", "Handlers"):
        path, code = readme_file(section)
        (project / path).write_text(code)
    settings = (project / settings_path).read_text()
    # startproject's development settings stay: the origin check accepts what Django accepts.
    assert "DEBUG = True" in settings_before and "DEBUG = True" in settings
    assert "ALLOWED_HOSTS = []" in settings

    # 3. migrate, check (not even a warning: before migrate, W005 says to run it), a user, and
    #    runserver with its autoreloader, in a session of its own.
    python = str(venv / "bin" / "python")
    run(command(readme_command(wiring, "python manage.py migrate"), venv, {}), project, env, timeout=120)
    checked = run(command(readme_command(wiring, "python manage.py check"), venv, {}), project, env, timeout=120)
    assert "System check identified no issues (0 silenced)." in checked, checked
    create_user = (
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user({USERNAME!r}, password={PASSWORD!r}, is_staff=True)"
    )
    run([python, "manage.py", "shell", "-c", create_user], project, env, timeout=60)

    port = free_port()
    runserver = command(readme_command(wiring, "python manage.py runserver"), venv, {})
    assert "--noreload" not in runserver
    log_path = tmp_path / "runserver.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [*runserver, f"127.0.0.1:{port}"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def registry(code: str) -> dict[str, object]:
        out = run([python, "manage.py", "shell", "-c", code], project, env, timeout=60)
        return dict(json.loads(out.strip().splitlines()[-1]))

    def timed(what: str, since: float) -> None:
        print(f"{time.monotonic() - since:6.1f} s  {what}")

    try:
        started = time.monotonic()
        wait_for_port(server, port, log_path, timeout=60)
        timed("runserver listening", started)
        # runserver ran the system checks the README points to (`manage.py check`): not even a warning.
        assert "System check identified no issues" in log_path.read_text(), log_path.read_text()
        base = f"http://127.0.0.1:{port}"

        # 4. Log in over plain HTTP: the admin's login form (startproject routes it; it takes
        #    staff users), its CSRF token, the session cookie.
        started = time.monotonic()
        cookies = login(base, USERNAME, PASSWORD)
        timed("logged in", started)

        # 5. A same-origin WebSocket with the session cookie, to the README's view and handlers.
        async def scenario() -> tuple[dict[str, object], int | None, float]:
            async with connect(
                f"ws://127.0.0.1:{port}/wstest",
                origin=base,  # type: ignore[arg-type]
                additional_headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
                open_timeout=30,
            ) as ws:
                assert ws.response is not None and ws.response.status_code == 101
                assert ws.response.headers.get_all("Set-Cookie") == ["MyCookie1=123", "MyCookie2=456"]
                assert ws.response.headers["MyHeader"] == "MyHeaderData"
                assert await asyncio.wait_for(ws.recv(), 10) == "Hello WebSocket!"
                await ws.send("Hello server!")
                assert await asyncio.wait_for(ws.recv(), 10) == "Here is the server push!"
                await ws.send(b"\x00\x01binary\xff")
                assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\x01binary\xff"

                row = await asyncio.to_thread(
                    registry,
                    "import json; from wsgroups.models import Connection; "
                    "c = Connection.objects.live().latest('opened_at'); "
                    "print(json.dumps({'id': c.pk, 'path': c.path, 'group': c.group, "
                    "'username': Connection.objects.get(pk=c.pk).user.username}))",
                )

                # 6. Ctrl-C in runserver's terminal: SIGINT to its whole process group.
                os.killpg(server.pid, signal.SIGINT)
                started = time.monotonic()
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                except ConnectionClosed as exc:
                    return row, exc.rcvd.code if exc.rcvd else None, time.monotonic() - started
                except (TimeoutError, asyncio.TimeoutError):
                    return row, -1, time.monotonic() - started

        started = time.monotonic()
        try:
            row, close_code, close_after = asyncio.run(scenario())
        except (AssertionError, OSError) as exc:
            raise AssertionError(f"{exc!r}\nrunserver's log:\n{log_path.read_text()}") from exc
        timed(f"WebSocket: upgrade, frames, registry, Ctrl-C, close {close_code} {close_after:.1f} s after it", started)
        assert row["username"] == USERNAME, row
        assert (row["path"], row["group"]) == ("/wstest", "echotestws"), row
        assert close_code == 1001, (close_code, log_path.read_text())
        assert close_after < 5, close_after
        started = time.monotonic()
        try:
            returncode = server.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runserver did not exit after Ctrl-C:\n{log_path.read_text()}") from None
        timed(f"runserver exited with {returncode}", started)
        assert returncode == 0, log_path.read_text()

        # The registry saw the socket close for the shutdown, and the process stop.
        closed = registry(
            "import json; from wsgroups.models import Connection; "
            f"c = Connection.objects.get(pk={row['id']}); "
            "print(json.dumps({'state': c.state, 'code': c.close_code, 'stopped': c.process.stopped_at is not None}))"
        )
        assert closed == {"state": "closed", "code": 1001, "stopped": True}, (closed, log_path.read_text())
    finally:
        if server.poll() is None:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait(10)
