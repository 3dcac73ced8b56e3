"""``manage.py demo``: the whole system for a newcomer, stopped cleanly with Ctrl-C.

Every process writes to this console; the banner (with the admin password) is printed
once they have started, so their startup lines come before it, and ``wsbroadcast`` runs
without its live progress line (it logs a line only when its counts change).

Handlers run inline in the two servers, as ``WSGROUPS["HANDLER_MODE"]`` says by default;
``--worker`` (or ``WSGROUPS_HANDLER_MODE=worker``) switches every process to worker mode
and adds a ``runworker wsgroups`` process, which then runs every handler call.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from project import redis
from wsgroups.conf import conf
from wsgroups.models import Process
from wsgroups.transport import WORKER_CHANNEL

#: Seconds to wait for the processes to start before printing the banner anyway.
STARTUP_TIMEOUT = 60.0


class Command(BaseCommand):
    help = "Migrate, then run two daphne servers and wsbroadcast (and runworker with --worker) until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="first server (default 8000)")
        parser.add_argument("--second-port", type=int, default=8001, help="second server (default 8001)")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--worker",
            action="store_true",
            help='worker mode: handlers run in a "runworker wsgroups" process instead of the servers',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        password = self._demo_superuser()
        host, ports = options["host"], (options["port"], options["second_port"])
        worker_mode = options["worker"] or conf.HANDLER_MODE == "worker"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if env.get("REDIS_URL") or not env.get("REDIS_SENTINELS"):
            env["REDIS_URL"] = redis.redis_url()
            redis_line = env["REDIS_URL"]
        else:
            redis_line = f"{env.get('REDIS_MASTER_NAME') or 'mymaster'} via Sentinels {env['REDIS_SENTINELS']}"
        if worker_mode:
            env["WSGROUPS_HANDLER_MODE"] = "worker"  # read by project.settings
        daphne = os.path.join(os.path.dirname(sys.executable), "daphne")
        commands = [
            [daphne, "-b", host, "-p", str(port), settings.ASGI_APPLICATION.rsplit(".", 1)[0] + ":application"]
            for port in ports
        ]
        # One console for every process: wsbroadcast logs a line when its counts change, and
        # its live progress line (rewritten in place) would tangle with the others' lines.
        commands.append([sys.executable, "manage.py", "wsbroadcast", "--no-progress"])
        if worker_mode:
            # Inline, handlers run in the servers and a worker would get nothing to do.
            commands.append([sys.executable, "manage.py", "runworker", "wsgroups"])
        stopping: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stopping.append(signum))
        children = [subprocess.Popen(command, env=env, start_new_session=True) for command in commands]
        try:
            self._wait_until_started(host, ports, children, worker_mode, stopping)
            if not stopping and all(child.poll() is None for child in children):
                self._banner(host, ports, password, worker_mode, redis_line)
            while not stopping and all(child.poll() is None for child in children):
                time.sleep(0.2)
        finally:
            self._stop(children)
            if redis.started_here:
                redis.stop_embedded_redis()
        failed = [child.args[0] for child in children if child.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
        if not stopping and failed:
            self.stderr.write(f"a demo process stopped unexpectedly: {failed}")
            sys.exit(1)
        self.stdout.write("wsgroups demo stopped.")

    def _banner(self, host: str, ports: tuple[int, int], password: str, worker_mode: bool, redis_url: str) -> None:
        handlers = (
            "in the runworker wsgroups process (worker mode)"
            if worker_mode
            else "inline, in the two servers (--worker: in a runworker process)"
        )
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "wsgroups demo is running (Ctrl-C stops everything):",
                    f"  chat        http://{host}:{ports[0]}/   and   http://{host}:{ports[1]}/",
                    "              (two server processes: chat across them in two tabs)",
                    f"  /wstest     ws://{host}:{ports[0]}/wstest",
                    f"  admin       http://{host}:{ports[0]}/admin/   user: demo   password: {password}",
                    f"  metrics     http://{host}:{ports[0]}/metrics   (Prometheus text, whole cluster; staff only:"
                    " log in to the admin first)",
                    f"  handlers    {handlers}",
                    f"  Redis       {redis_url}",
                    "",
                ]
            )
        )

    @staticmethod
    def _wait_until_started(
        host: str,
        ports: tuple[int, int],
        children: list[subprocess.Popen[bytes]],
        worker_mode: bool,
        stopping: list[int],
    ) -> None:
        """Until the servers listen, the broadcaster has ticked and the worker has joined (or
        a process exited, Ctrl-C, or ``STARTUP_TIMEOUT``): the banner comes after their startup lines."""
        broadcaster, worker = children[2], children[3] if worker_mode else None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        pending = {"servers", "broadcaster"} | ({"worker"} if worker else set())
        woken = False
        beats: set[object] = set()
        while pending and not stopping and time.monotonic() < deadline:
            if any(child.poll() is not None for child in children):
                return
            if "servers" in pending and all(_listening(host, port) for port in ports):
                pending.discard("servers")
            if "broadcaster" in pending:
                # Each tick begins with a heartbeat: the third value seen (registration, first
                # tick, second tick) means the first tick, and its log line, are done.
                beats.update(
                    Process.objects.filter(kind="broadcaster", pid=broadcaster.pid).values_list(
                        "heartbeat_at", flat=True
                    )
                )
                if len(beats) >= 3:
                    pending.discard("broadcaster")
            if worker is not None and "worker" in pending:
                # runworker joins the cluster on the first message to its channel: send one
                # (it ignores it), so that it shows in the admin before any handler call.
                if not woken:
                    async_to_sync(get_channel_layer().send)(WORKER_CHANNEL, {"type": "wsgroups.demo.wake"})
                    woken = True
                if Process.objects.filter(kind="worker", pid=worker.pid).exists():
                    time.sleep(0.3)  # the lines it logs as it joins
                    pending.discard("worker")
            time.sleep(0.2)

    def _demo_superuser(self) -> str:
        """A superuser ``demo`` with a new random password each run."""
        password = secrets.token_urlsafe(12)
        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(username="demo", defaults={"is_staff": True, "is_superuser": True})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password

    @staticmethod
    def _stop(children: list[subprocess.Popen[bytes]]) -> None:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
