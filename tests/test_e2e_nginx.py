"""Behind nginx: Debian's nginx, configured with ``docs/nginx.conf`` (the file the deployment
guide gives), in front of a daphne and a uvicorn server run as the guide says
(``--proxy-headers``). Clients connect from 127.0.0.2 and 127.0.0.3 so that the servers
can tell them apart only through ``X-Forwarded-For``."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from .conftest import ROOT, Server
from .services import free_port
from .wsclient import RawResponse, raw_handshake

pytestmark = pytest.mark.e2e

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONFIG = ROOT / "docs" / "nginx.conf"
PUBLIC_HOST = "ws.example.test"
#: The server command lines of docs/deployment.md (the address and port come from the test).
DAPHNE_ARGS = ["--proxy-headers"]
UVICORN_ARGS = ["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"]
PER_CLIENT = 2


def render_config(listen: str, upstreams: list[str]) -> str:
    """docs/nginx.conf with its placeholders filled in; fails if one is left."""
    text = CONFIG.read_text()
    for placeholder, value in {
        "@LISTEN@": listen,
        "@SERVER_NAME@": PUBLIC_HOST,
        "@UPSTREAM_SERVERS@": "\n    ".join(f"server {address};" for address in upstreams),
    }.items():
        assert placeholder in text, f"{placeholder} is missing from {CONFIG}"
        text = text.replace(placeholder, value)
    assert not re.search(r"@[A-Z_]+@", text), "an unfilled placeholder is left"
    return text


@dataclass
class Nginx:
    port: int
    process: subprocess.Popen[bytes]
    prefix: Path

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.prefix.glob("*.log")))


def start_nginx(prefix: Path, upstreams: list[str]) -> Nginx:
    """nginx in the foreground (one process), with a private prefix, logs and temp paths."""
    port = free_port()
    (prefix / "wsgroups.conf").write_text(render_config(f"127.0.0.1:{port}", upstreams))
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"""daemon off;
master_process off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 512; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {prefix / "wsgroups.conf"};
}}
"""
    )
    command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    check = subprocess.run([*command, "-t"], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr.decode()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    nginx = Nginx(port, process, prefix)
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, f"nginx exited with {process.returncode}:\n{nginx.log()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return nginx
        except OSError:
            assert time.monotonic() < deadline, f"nginx did not listen:\n{nginx.log()}"
            time.sleep(0.1)


@pytest.fixture
def proxied(server_factory: Callable[..., Server], tmp_path: Path) -> Iterator[tuple[Nginx, list[Server]]]:
    """nginx on a free port in front of a daphne and a uvicorn server."""
    env = {"WSGROUPS_TEST_EXTRA_HOSTS": PUBLIC_HOST, "WSGROUPS_TEST_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT)}
    servers = [
        server_factory("daphne", extra_env=env, extra_args=DAPHNE_ARGS),
        server_factory("uvicorn", extra_env=env, extra_args=UVICORN_ARGS),
    ]
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    nginx = start_nginx(prefix, [f"127.0.0.1:{server.port}" for server in servers])
    try:
        yield nginx, servers
    finally:
        nginx.process.send_signal(signal.SIGQUIT)
        try:
            nginx.process.wait(10)
        except subprocess.TimeoutExpired:
            nginx.process.kill()
            nginx.process.wait(10)


def public_url(nginx: Nginx, path: str) -> str:
    return f"ws://{PUBLIC_HOST}:{nginx.port}{path}"


def origin(nginx: Nginx) -> Any:
    return f"http://{PUBLIC_HOST}:{nginx.port}"


async def open_ws(nginx: Nginx, path: str, source: str = "127.0.0.2", **kwargs: Any) -> ClientConnection:
    """A WebSocket to nginx from loopback address ``source``, for the public host name."""
    kwargs.setdefault("origin", origin(nginx))
    return await connect(
        public_url(nginx, path), host="127.0.0.1", port=nginx.port, local_addr=(source, 0), proxy=None, **kwargs
    )


def raw_upgrade(nginx: Nginx, path: str, headers: dict[str, str], source: str = "127.0.0.2") -> RawResponse:
    """An upgrade request through nginx over a plain socket; the response head and body as sent."""
    return raw_handshake(nginx.port, path, headers, timeout=20, source=source, host=f"{PUBLIC_HOST}:{nginx.port}")


def http_get(nginx: Nginx, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=20, source_address=("127.0.0.2", 0))
    connection.request("GET", path, headers={"Host": PUBLIC_HOST, **(headers or {})})
    response = connection.getresponse()
    response.read()
    return response


def test_upgrades_with_cookies_and_headers_pass_through(proxied: tuple[Nginx, list[Server]]) -> None:
    nginx, _ = proxied
    # The 101 keeps the view's cookies and headers.
    response = raw_upgrade(nginx, "/wstest", {"Origin": origin(nginx)})
    try:
        assert response.status == 101, response.status_line
        assert response.header("MyHeader") == ["MyHeaderData"]
        assert sorted(response.header("Set-Cookie")) == ["MyCookie1=123", "MyCookie2=456"]
    finally:
        response.close()

    # A session cookie set over HTTP through nginx reaches the upgrade view, whichever server takes it.
    login = http_get(nginx, "/set-session?name=ann")
    assert login.status == 200
    cookie = login.getheader("Set-Cookie", "").split(";", 1)[0]
    assert cookie.startswith("sessionid=")

    async def scenario() -> None:
        for _ in range(2):  # nginx takes turns: both servers
            ws = await open_ws(nginx, "/ws/echo?session=1", additional_headers={"Cookie": cookie})
            try:
                await ws.recv()
                await ws.send("session")
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"name": "ann"}
            finally:
                await ws.close()

    asyncio.run(scenario())


def test_refusals_keep_their_status_headers_and_body(proxied: tuple[Nginx, list[Server]]) -> None:
    nginx, _ = proxied
    for _ in range(2):  # once per server
        response = raw_upgrade(nginx, "/reject", {"Origin": origin(nginx)})
        response.close()
        assert response.status == 418
        assert response.header("X-Why") == ["testing"]
        assert any(value.startswith("rejected=1") for value in response.header("Set-Cookie"))
        assert response.body == b"you shall not pass"
    # The origin check compares the browser's Origin with the host names Django serves.
    for _ in range(2):
        response = raw_upgrade(nginx, "/ws/echo", {"Origin": "http://evil.example"})
        response.close()
        assert response.status == 403, response.status_line
        assert response.body == b"Origin not allowed."


def test_the_per_client_limit_counts_real_clients_not_the_proxy(proxied: tuple[Nginx, list[Server]]) -> None:
    nginx, _ = proxied

    async def scenario() -> None:
        held: list[ClientConnection] = []
        try:
            # 127.0.0.2 fills its quota on both servers; what it sends as X-Forwarded-For
            # does not change the address that is counted.
            refused = None
            for attempt in range(2 * PER_CLIENT + 2):
                try:
                    held.append(
                        await open_ws(nginx, "/ws/echo", additional_headers={"X-Forwarded-For": f"10.0.0.{attempt}"})
                    )
                except InvalidStatus as error:
                    refused = error.response
                    break
            assert refused is not None, "the per-client limit never refused 127.0.0.2"
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "5"
            assert b"Too many connections" in refused.body
            assert PER_CLIENT <= len(held) <= 2 * PER_CLIENT
            # Another client is counted on its own, on both servers.
            for _ in range(2):
                other = await open_ws(nginx, "/ws/echo", source="127.0.0.3")
                held.append(other)
                assert json.loads(await other.recv())["group"] == "echo"
        finally:
            for ws in held:
                await ws.close()

    asyncio.run(scenario())


def test_the_origin_check_uses_the_forwarded_host(proxied: tuple[Nginx, list[Server]]) -> None:
    nginx, _ = proxied
    # The public name reaches Django as the Host (an unknown one would be a 400)...
    assert http_get(nginx, "/set-session").status == 200
    # ... and an upgrade from a page of that name passes the origin check on both servers.
    for _ in range(2):
        response = raw_upgrade(nginx, "/ws/echo", {"Origin": origin(nginx)})
        response.close()
        assert response.status == 101, response.status_line
        response = raw_upgrade(nginx, "/ws/echo", {"Origin": "http://127.0.0.1:8000"})
        response.close()
        assert response.status == 101  # 127.0.0.1 is in ALLOWED_HOSTS too


def test_a_chat_message_crosses_processes(proxied: tuple[Nginx, list[Server]]) -> None:
    nginx, _ = proxied

    async def welcome(ws: ClientConnection) -> int:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["type"] == "welcome":
                return int(event["id"])

    async def scenario() -> None:
        ann = await open_ws(nginx, "/ws/chat/lobby?nickname=ann")
        held = [ann]
        try:
            ann_id = await welcome(ann)
            for attempt in range(4):  # nginx takes turns; stop at the first socket on the other server
                bob = await open_ws(nginx, f"/ws/chat/lobby?nickname=bob{attempt}")
                held.append(bob)
                bob_id = await welcome(bob)
                if bob_id >> 22 != ann_id >> 22:  # another ID block: another process
                    break
            else:
                pytest.fail("nginx sent every socket to the same server")
            await ann.send("hello across")
            while True:
                event = json.loads(await asyncio.wait_for(bob.recv(), 10))
                if event["type"] == "message":
                    break
            assert (event["nickname"], event["text"], event["id"]) == ("ann", "hello across", ann_id)
        finally:
            for ws in held:
                await ws.close()

    asyncio.run(scenario())


def test_the_guide_gives_the_configuration_and_command_lines_tested_here() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", guide, re.DOTALL)
    assert blocks == [CONFIG.read_text().rstrip("\n") + "\n"], "docs/deployment.md must show docs/nginx.conf as it is"
    # The test servers run as conftest.start_server builds them, with these arguments.
    assert f"daphne -b 127.0.0.1 -p 8000 {' '.join(DAPHNE_ARGS)} mysite.asgi:application" in guide
    uvicorn = f"uvicorn --host 127.0.0.1 --port 8001 --no-access-log {' '.join(UVICORN_ARGS)} mysite.asgi:application"
    assert uvicorn in guide
    assert "README" in guide and "deployment.md" in (ROOT / "README.md").read_text()
