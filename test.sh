#!/usr/bin/env bash
# Runs every check and test. Sets up what the tests need when it is missing:
# a Python venv with the moto server (an AWS API emulator) and jsonschema
# under .venv/; xmllint, chromium, chromedriver and tmux from Debian.
set -euo pipefail
cd "$(dirname "$0")"

MOTO_VERSION=5.2.5
if [ "$(.venv/bin/python -c 'import moto; print(moto.__version__)' 2>/dev/null)" != "$MOTO_VERSION" ]; then
    echo "test.sh: installing moto[server]==$MOTO_VERSION into .venv/" >&2
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

# The report tests validate every report.json with jsonschema (moto brings
# it; make sure) and find the venv through PREPATCH_VENV.
if ! .venv/bin/python -c 'import jsonschema' 2>/dev/null; then
    echo "test.sh: installing jsonschema into .venv/" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "jsonschema>=4.18,<5"
fi
export PREPATCH_VENV="$PWD/.venv"

# The shipped IAM policies are linted with parliament (an IAM policy linter,
# from PyPI), its community auditors included: any finding fails the run.
PARLIAMENT_VERSION=1.6.4
if [ "$(.venv/bin/parliament --version 2>/dev/null)" != "parliament $PARLIAMENT_VERSION" ]; then
    echo "test.sh: installing parliament==$PARLIAMENT_VERSION into .venv/" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "parliament==$PARLIAMENT_VERSION"
fi
for policy in docs/iam-policy*.json; do
    rc=0
    findings=$(.venv/bin/parliament --include-community-auditors --minimum_severity INFO <"$policy") || rc=$?
    if [ -n "$findings" ] || [ "$rc" != 0 ]; then
        echo "test.sh: parliament finds problems in $policy:" >&2
        echo "$findings" >&2
        exit 1
    fi
    echo "test.sh: parliament: $policy: no findings"
done

# ... validate every report.xml with xmllint, open the dashboard in
# headless Chromium through chromedriver, and run the binary in a real
# terminal (tmux): Debian's packages. A machine that has them pays nothing
# here.
missing=0
for tool in xmllint chromium chromedriver tmux; do
    command -v "$tool" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
    echo "test.sh: installing libxml2-utils chromium chromium-driver tmux (Debian)" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    packages="libxml2-utils chromium chromium-driver tmux"
    # shellcheck disable=SC2086
    $sudo apt-get install -y --no-install-recommends $packages \
        || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends $packages; }
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
