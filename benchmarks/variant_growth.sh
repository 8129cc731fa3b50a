#!/usr/bin/env bash
# What the calibration-free variants (hqq, torchao) add to the default run (issue 19: at most
# 10%). From one finished default run (its trained model and data), times
# `kedro run --pipelines=quantize,evaluate,probe,report` twice, one after the other: with the
# variants the default had before them (an env whose `variants` drops hqq and torchao), then
# with every default variant. Each copy starts without variants, so both quantize.
#
#   benchmarks/variant_growth.sh <project folder of a finished default `kedro run`>
#
# The run's whole time is then (idle default run) - (difference) without them. Run it on a
# quiet machine or say what else ran; the load averages are printed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source_project="$(cd "$1" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/variant_growth.XXXXXX")"
export KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
unset OMP_NUM_THREADS
for label in before all; do
  d="$work/$label"
  mkdir -p "$d/src" "$d/data/06_models" "$d/data/07_model_output" "$d/data/08_reporting"
  cp -r "$source_project/conf" "$source_project/pyproject.toml" "$d/"
  for layer in 01_raw 02_intermediate 03_primary 04_feature 05_model_input; do
    if [[ -d "$source_project/data/$layer" ]]; then cp -r "$source_project/data/$layer" "$d/data/"; fi
  done
  cp -r "$source_project/data/06_models/base" "$d/data/06_models/"
done
mkdir -p "$work/before/conf/before_new_methods"
python - "$work/before/conf" <<'PY'
import sys
from pathlib import Path

import yaml

conf = Path(sys.argv[1])
variants = yaml.safe_load((conf / "base/parameters_quantize.yml").read_text())["variants"]
kept = {k: v for k, v in variants.items() if v["method"] not in ("hqq", "torchao_int8", "torchao_int4")}
(conf / "before_new_methods/parameters.yml").write_text(yaml.safe_dump({"variants": kept}, sort_keys=False))
print(f"variants: {len(kept)} before, {len(variants)} now", file=sys.stderr)
PY
declare -A seconds
for label in before all; do
  env=()
  if [[ $label == before ]]; then env=(--env=before_new_methods); fi
  echo "[$label] load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  start=$(date +%s.%N)
  (cd "$work/$label" && python -m kedro run "${env[@]}" --pipelines=quantize,evaluate,probe,report > "$work/$label.log" 2>&1) \
    || { tail -n 40 "$work/$label.log" >&2; exit 1; }
  end=$(date +%s.%N)
  seconds[$label]=$(python -c "print(f'{$end - $start:.1f}')")
  echo "[$label] ${seconds[$label]} s; load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
python -c "print(f'quantize..report: {${seconds[before]}} s before, {${seconds[all]}} s now: +{${seconds[all]} - ${seconds[before]}:.1f} s')"
rm -rf "$work"
