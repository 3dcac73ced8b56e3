#!/usr/bin/env bash
# ./dev.sh demo   set up .venv, then run the whole demo: two daphne servers (8000, 8001) and
#                 wsbroadcast on an embedded Redis (or REDIS_URL); --worker adds runworker and
#                 runs the handlers there; Ctrl-C stops all
# ./dev.sh test   set up .venv (and Chromium, PostgreSQL, nginx), run ruff, mypy and the whole test suite (extra args go to
#                 pytest); without extra args, then the unit tests and a short end-to-end subset on the oldest and the
#                 newest Python this machine has of those wsgroups claims (nox -t ci; a missing one is reported skipped)
# ./dev.sh matrix set up .venv, then run the tests on every claimed Python x Django combination this machine has
#                 (nox -t matrix; extra args go to nox, e.g. -s tests-3.13-django6.1 -- tests/test_e2e_servers.py)
set -euo pipefail
cd "$(dirname "$0")"

setup() {
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
}

command="${1:-}"
shift || true
case "$command" in
  demo)
    setup
    exec .venv/bin/python manage.py demo "$@"
    ;;
  test)
    setup
    # The browser tests drive Debian's Chromium (a test tool may not download its own); the
    # broadcaster tests run on PostgreSQL: the machine's, or a private cluster of its binaries;
    # the reverse-proxy tests run Debian's nginx (a private instance, never the system's service).
    missing=""
    command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
    if [ -n "$missing" ]; then
      if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
      $SUDO apt-get update -qq
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
    .venv/bin/ruff check .
    .venv/bin/mypy
    if [ "$#" -gt 0 ]; then
      exec .venv/bin/python -m pytest "$@"
    fi
    .venv/bin/python -m pytest
    exec .venv/bin/nox --no-color -t ci
    ;;
  matrix)
    setup
    if [ "$#" -gt 0 ]; then
      exec .venv/bin/nox --no-color "$@"
    fi
    exec .venv/bin/nox --no-color -t matrix
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest args] | ./dev.sh matrix [nox args]" >&2
    exit 2
    ;;
esac
