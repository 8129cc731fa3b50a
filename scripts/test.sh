#!/usr/bin/env bash
# Install the project with its test extras and run the test suite.
# The README's second command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[test]"
python -m pytest "$@"
