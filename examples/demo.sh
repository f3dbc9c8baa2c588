#!/usr/bin/env bash
# The demo in one command, on a fresh machine:
#
#     bash examples/demo.sh
#
# creates .venv if it is missing, installs Flask-PerfAlert into it if needed,
# runs the one-file example app (examples/hello.py) on 127.0.0.1, makes one slow
# request and prints where the report was written. VENV=path picks another
# virtual environment, PYTHON=python3.12 another interpreter for a new one.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating a virtual environment in $VENV ..."
    "${PYTHON:-python3}" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import flask_perfalert" >/dev/null 2>&1; then
    echo "Installing Flask-PerfAlert into $VENV ..."
    "$VENV/bin/python" -m pip install -q -e .
fi
exec "$VENV/bin/python" examples/demo.py "$@"
