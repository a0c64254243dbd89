#!/usr/bin/env bash
# One entry point for people and CI:
#   ./manage.sh run    set up (first time) and run the bot with config.toml + .env
#   ./manage.sh test   set up (first time) and run the test suite (two workers per core)
#   ./manage.sh lint   ruff + mypy + the layer contracts (import-linter)
#   ./manage.sh rotate-keys   re-encrypt stored keys with the newest HORDEBOT_SECRET_KEY (README "Secret keys")
set -euo pipefail
cd "$(dirname "$0")"
VENV="${HORDEBOT_VENV:-.venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  local extras="$1" stamp="$VENV/.installed-$1"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  # Reinstall when pyproject.toml changed since the last install.
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    if [ "$extras" = "dev" ]; then
      "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
    else
      "$VENV/bin/python" -m pip install --quiet -e .
    fi
    touch "$stamp"
  fi
}

case "${1:-}" in
  run)
    shift
    ensure_venv prod
    if [ ! -f config.toml ]; then
      cp config.example.toml config.toml
      echo "Created config.toml from config.example.toml (edit it to taste)."
    fi
    if [ -z "${DISCORD_TOKEN:-}" ] && ! grep -qs '^DISCORD_TOKEN=.\+' .env; then
      echo "DISCORD_TOKEN is not set. Put your bot token in .env:  echo 'DISCORD_TOKEN=...' >> .env" >&2
      exit 2
    fi
    exec "$VENV/bin/python" run.py "$@"
    ;;
  test)
    shift
    ensure_venv dev
    # Compiled bytecode is kept between runs, in the virtualenv (never in the working tree), even where
    # PYTHONDONTWRITEBYTECODE is set: otherwise every worker compiles the bot and the tests afresh (~5 s
    # of CPU each).
    unset PYTHONDONTWRITEBYTECODE
    export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$(cd "$VENV" && pwd)/pycache}"
    # Two workers per core (pytest-xdist): behaviour tests spend part of their time waiting (the pacer's
    # one-second spacing, a sleeping poll, the database server), and a second worker per core runs
    # meanwhile. At most 12: each worker also pays ~5 s of CPU to start (imports, collection, word lists,
    # the first bot's start), which a big machine gains nothing from. HORDEBOT_TEST_WORKERS overrides;
    # `-n 0` after it runs in one process (e.g. for --pdb).
    workers="${HORDEBOT_TEST_WORKERS:-$("$VENV/bin/python" -c 'import os; print(min(2 * (os.cpu_count() or 1), 12))')}"
    exec "$VENV/bin/python" -m pytest -n "$workers" --dist worksteal "$@"
    ;;
  rotate-keys)
    shift
    ensure_venv prod
    exec "$VENV/bin/python" run.py rotate-keys "$@"
    ;;
  lint)
    ensure_venv dev
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
    "$VENV/bin/lint-imports"
    ;;
  *)
    echo "usage: ./manage.sh run|test|lint|rotate-keys" >&2
    exit 2
    ;;
esac
