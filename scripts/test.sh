#!/usr/bin/env bash
# Install the project with its test extras and run the test suite.
# The README's second command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[test]"
# The test models are tiny: one thread each runs them fastest and keeps runs independent of the machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest "$@"
