"""wsgroups' tests on every Python and Django version it claims (``nox``).

Sessions (``nox --list`` shows them):

- ``tests-<python>-django<version>``, tagged ``matrix``: one per claimed combination,
  the unit tests and the contract's end-to-end tests (``CONTRACT_TESTS``). All of them:
  ``./dev.sh matrix`` (that is, ``nox -t matrix``).
- ``ci-<python>``, tagged ``ci``: the unit tests and a short end-to-end subset
  (``CI_E2E_TESTS``) on the oldest and the newest Python, with the newest Django each
  takes; ``./dev.sh test`` runs them after the whole suite.

Extra arguments replace the test selection: ``nox -s tests-3.13-django6.1 -- tests/test_e2e_servers.py``.

Interpreters come from this machine only: pyenv's ``$PYENV_ROOT/versions/<x.y.z>`` (the
newest patch release of each) and then ``python<x.y>`` on ``PATH`` (pyenv's shims answer
only for the versions pyenv has selected, so each candidate is asked its version). nox is
never asked to find or download one. A session whose Python is not on the machine is
skipped, saying where it looked; nox lists the skipped sessions at the end and still
exits 0. Each session has its own virtualenv under ``.nox/``, reused between runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import nox

nox.options.error_on_missing_interpreters = False
nox.options.default_venv_backend = "none"
nox.options.sessions = []  # nothing runs without -s or -t

ROOT = Path(__file__).resolve().parent
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
#: Each claimed Django release: its pip requirement and the oldest Python it supports.
DJANGOS = {
    "5.2": ("Django>=5.2,<5.3", "3.10"),
    "6.0": ("Django>=6.0,<6.1", "3.12"),
    "6.1": ("Django>=6.1,<6.2", "3.12"),
}
#: The end-to-end tests of the contract: the upgrade, handlers, close codes, sends by ID
#: across processes, the disconnect handler once, every server kind.
CONTRACT_TESTS = (
    "tests/test_e2e_upgrade.py",
    "tests/test_e2e_handlers.py",
    "tests/test_e2e_lifecycle.py",
    "tests/test_e2e_cluster.py",
    "tests/test_e2e_servers.py",
)
#: A short end-to-end subset for CI on the oldest and newest Python (about a minute).
CI_E2E_TESTS = (
    "tests/test_e2e_upgrade.py",
    "tests/test_e2e_cluster.py::test_send_disconnect_and_is_dead_by_id_from_another_process",
    "tests/test_e2e_cluster.py::test_kill_9_of_a_server_reaps_its_sockets_once_within_the_bound",
    "tests/test_e2e_servers.py::test_close_codes_and_reasons_both_ways_and_the_disconnect_handler_once",
)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def matrix() -> list[tuple[str, str]]:
    """Every claimed (Python, Django) combination."""
    return [
        (python, django)
        for python in PYTHONS
        for django, (_, oldest_python) in DJANGOS.items()
        if version_key(python) >= version_key(oldest_python)
    ]


def newest_django(python: str) -> str:
    """The newest claimed Django release that supports ``python``."""
    return max((django for p, django in matrix() if p == python), key=version_key)


def reports_version(candidate: str, version: str) -> bool:
    """``candidate`` runs and is Python ``version`` (a pyenv shim for another version fails)."""
    try:
        done = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def find_python(version: str, pyenv_root: Path | None = None, path: str | None = None) -> tuple[str | None, list[str]]:
    """This machine's Python ``version`` ("3.10"): its path or None, and where it looked."""
    root = pyenv_root or Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    looked = [f"{root}/versions/{version}.*/bin/python{version}"]
    releases = [d for d in (root / "versions").glob(f"{version}.*") if re.fullmatch(r"\d+\.\d+\.\d+", d.name)]
    for release in sorted(releases, key=lambda d: version_key(d.name), reverse=True):
        candidate = release / "bin" / f"python{version}"
        if candidate.exists() and reports_version(str(candidate), version):
            return str(candidate), looked
    looked.append(f"python{version} on PATH")
    found = shutil.which(f"python{version}", path=path)
    if found and reports_version(found, version):
        return found, looked
    return None, looked


def _prepare(session: nox.Session, python: str, django: str) -> str:
    """The session's virtualenv on this machine's Python ``python``, with wsgroups (editable),
    its test extra and the Django release; its python. Skips the session without that Python."""
    interpreter, looked = find_python(python)
    if interpreter is None:
        session.skip(f"Python {python} is not on this machine (looked in {', '.join(looked)})")
    venv = ROOT / ".nox" / session.name
    venv_python = venv / "bin" / "python"
    if not venv_python.exists():
        session.run(interpreter, "-m", "venv", str(venv), external=True)
    requirement, _ = DJANGOS[django]
    pip = [str(venv_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    session.run(*pip, "-e", f"{ROOT}[test]", requirement, external=True)
    session.run(
        str(venv_python), "-c", "import sys, django; print(sys.version.split()[0], 'Django', django.__version__)"
    )
    return str(venv_python)


def _pytest(session: nox.Session, venv_python: str, selections: Iterable[tuple[str, ...]]) -> None:
    for selection in selections:
        session.run(venv_python, "-m", "pytest", "-p", "no:cacheprovider", "-q", *selection, external=True)


def _tests_session(python: str, django: str) -> Callable[[nox.Session], None]:
    def run(session: nox.Session) -> None:
        venv_python = _prepare(session, python, django)
        if session.posargs:
            _pytest(session, venv_python, [tuple(session.posargs)])
        else:
            _pytest(session, venv_python, [("-m", "not e2e"), CONTRACT_TESTS])

    run.__doc__ = f"Python {python}, Django {django}: the unit tests and the contract's end-to-end tests."
    return run


def _ci_session(python: str) -> Callable[[nox.Session], None]:
    def run(session: nox.Session) -> None:
        venv_python = _prepare(session, python, newest_django(python))
        if session.posargs:
            _pytest(session, venv_python, [tuple(session.posargs)])
        else:
            _pytest(session, venv_python, [("-m", "not e2e"), CI_E2E_TESTS])

    run.__doc__ = f"Python {python}, newest Django: the unit tests and a short end-to-end subset."
    return run


for _python, _django in matrix():
    nox.session(name=f"tests-{_python}-django{_django}", python=False, tags=["matrix"])(
        _tests_session(_python, _django)
    )
for _python in (PYTHONS[0], PYTHONS[-1]):
    nox.session(name=f"ci-{_python}", python=False, tags=["ci"])(_ci_session(_python))
