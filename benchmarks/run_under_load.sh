#!/usr/bin/env bash
# The default `kedro run` timed on an idle machine, then again with one busy process
# (`yes > /dev/null`) running: prints both wall times and their ratio (issue 15: at most 2x).
#
#   benchmarks/run_under_load.sh                 # the default study (data_prep .. report)
#   benchmarks/run_under_load.sh --env=test      # any extra `kedro run` arguments
#   LOAD_COMMAND='python my_job.py' benchmarks/run_under_load.sh   # another one-core load than `yes`
#   RUNS=idle benchmarks/run_under_load.sh       # the idle run only (before/after timings of a change)
#
# Each run starts from a fresh copy of the project's configuration in a temporary folder
# (empty data/, the project's conf/ without conf/local), so nothing of this checkout is read
# or written. OMP_NUM_THREADS is unset: the threads are the project's own setting
# (runtime.threads in conf/base/parameters_runtime.yml). Run it on an otherwise quiet
# machine; the load averages are printed beside the times. KEEP_OUTPUTS=<folder> keeps each
# run's data/08_reporting there (idle/, busy/), e.g. to compare them with another runner's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/run_under_load.XXXXXX")"
busy_pid=""
cleanup() {
  if [[ -n "$busy_pid" ]]; then kill -- "-$busy_pid" 2>/dev/null || kill "$busy_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM
export KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
unset OMP_NUM_THREADS MKL_NUM_THREADS
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"

fresh_copy() {
  local dest="$work/$1"
  mkdir -p "$dest/src" "$dest/conf"
  cp "$here/pyproject.toml" "$dest/"
  [[ -f "$here/.telemetry" ]] && cp "$here/.telemetry" "$dest/"
  for entry in "$here"/conf/*; do
    [[ "$(basename "$entry")" == local ]] || cp -r "$entry" "$dest/conf/"
  done
  mkdir -p "$dest/conf/local"
  # LRE and other shared inputs are found relative to the project (../shared/...).
  [[ -e "$here/../shared" && ! -e "$work/shared" ]] && ln -s "$(cd "$here/../shared" && pwd)" "$work/shared"
  echo "$dest"
}

timed_run() {  # label, project folder, kedro arguments...
  local label="$1" project="$2"
  shift 2
  local start end
  echo "[$label] load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  start=$(date +%s.%N)
  (cd "$project" && python -m kedro run "$@" > "$work/$label.log" 2>&1) || {
    echo "[$label] kedro run failed; its log:" >&2
    tail -n 40 "$work/$label.log" >&2
    exit 1
  }
  end=$(date +%s.%N)
  if [[ -n "${KEEP_OUTPUTS:-}" ]]; then
    mkdir -p "$KEEP_OUTPUTS/$label" && cp -r "$project/data/08_reporting/." "$KEEP_OUTPUTS/$label/"
  fi
  echo "[$label] load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  python -c "print(f'{$end - $start:.1f}')"
}

idle_dir="$(fresh_copy idle)"
idle_s="$(timed_run idle "$idle_dir" "$@")"
echo "idle: ${idle_s} s"
[[ "${RUNS:-idle busy}" == *busy* ]] || exit 0

busy_dir="$(fresh_copy busy)"
load_command="${LOAD_COMMAND:-yes > /dev/null}"
setsid bash -c "$load_command" &
busy_pid=$!
busy_s="$(timed_run busy "$busy_dir" "$@")"
kill -- "-$busy_pid" 2>/dev/null || kill "$busy_pid"
busy_pid=""
echo "with one busy process ($load_command): ${busy_s} s"
python -c "print(f'ratio busy / idle: {$busy_s / $idle_s:.2f}x (issue 15 asks for at most 2x)')"
