#!/usr/bin/env bash
# ./dev.sh demo   set up .venv, migrate, run the demo under daphne on 127.0.0.1:8000
# ./dev.sh test   set up .venv, run ruff, mypy and the whole test suite (extra args go to pytest)
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
    .venv/bin/python manage.py migrate --noinput
    echo "wsgroups demo: http://127.0.0.1:8000/wstest (WebSocket), http://127.0.0.1:8000/admin/"
    exec .venv/bin/daphne -b 127.0.0.1 -p 8000 project.asgi:application
    ;;
  test)
    setup
    .venv/bin/ruff check .
    .venv/bin/mypy
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest args]" >&2
    exit 2
    ;;
esac
