#!/usr/bin/env bash
# Runs every check and test. Sets up what the tests need when it is missing:
# a Python venv with the moto server (an AWS API emulator) under .venv/.
set -euo pipefail
cd "$(dirname "$0")"

MOTO_VERSION=5.2.5
if [ "$(.venv/bin/python -c 'import moto; print(moto.__version__)' 2>/dev/null)" != "$MOTO_VERSION" ]; then
    echo "test.sh: installing moto[server]==$MOTO_VERSION into .venv/" >&2
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
export PREPATCH_MOTO_SERVER="$PWD/.venv/bin/moto_server"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
