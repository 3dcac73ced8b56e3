"""``manage.py demo``: the whole system for a newcomer, stopped cleanly with Ctrl-C."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from project import redis


class Command(BaseCommand):
    help = "Migrate, then run two daphne servers, runworker and wsbroadcast until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="first server (default 8000)")
        parser.add_argument("--second-port", type=int, default=8001, help="second server (default 8001)")
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        password = self._demo_superuser()
        host, ports = options["host"], (options["port"], options["second_port"])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if env.get("REDIS_URL") or not env.get("REDIS_SENTINELS"):
            env["REDIS_URL"] = redis.redis_url()
            redis_line = env["REDIS_URL"]
        else:
            redis_line = f"{env.get('REDIS_MASTER_NAME') or 'mymaster'} via Sentinels {env['REDIS_SENTINELS']}"
        daphne = os.path.join(os.path.dirname(sys.executable), "daphne")
        commands = [
            [daphne, "-b", host, "-p", str(port), settings.ASGI_APPLICATION.rsplit(".", 1)[0] + ":application"]
            for port in ports
        ]
        commands += [
            [sys.executable, "manage.py", "runworker", "wsgroups"],
            [sys.executable, "manage.py", "wsbroadcast"],
        ]
        children = [subprocess.Popen(command, env=env, start_new_session=True) for command in commands]
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "wsgroups demo is running (Ctrl-C stops everything):",
                    f"  chat        http://{host}:{ports[0]}/   and   http://{host}:{ports[1]}/",
                    "              (two server processes: chat across them in two tabs)",
                    f"  /wstest     ws://{host}:{ports[0]}/wstest",
                    f"  admin       http://{host}:{ports[0]}/admin/   user: demo   password: {password}",
                    f"  Redis       {redis_line}",
                    "",
                ]
            )
        )
        stopping: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stopping.append(signum))
        try:
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
