#!/usr/bin/env bash
# GPU check (issue 15, deliverable 5): on a machine with a CUDA GPU, install the CUDA wheels
# the study needs, run the SmolLM2 study's bitsandbytes and GPTQ variants on CUDA and the
# 7B-shaped capture benchmark, and write the figures to docs/gpu_check.md. Bounded in time
# (every step under `timeout`), so it can be rerun; it stops with a clear error without a GPU.
#
#   benchmarks/gpu_check.sh            # from the repository root
#
# Environment:
#   GPU_VENV      virtual environment to create/reuse (default .venv-gpu)
#   TORCH_INDEX   wheel index of the CUDA torch build (default https://download.pytorch.org/whl/cu128)
#   WHEELS        a folder of wheels to install from instead (an offline machine)
#   STEP_TIMEOUT  seconds allowed for each step (default 1800)
#   SKIP_INSTALL  1: use the python on PATH as it is (its torch must see the GPU)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
step_timeout="${STEP_TIMEOUT:-1800}"
out="$root/docs/gpu_check.md"
log_dir="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
export KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1

fail() { echo "gpu_check.sh: $*" >&2; exit 1; }

# 1. A GPU at all? (before installing anything)
command -v nvidia-smi > /dev/null || fail "no nvidia-smi: this script needs a machine with an NVIDIA CUDA GPU. \
Without one, docs/performance.md records the GPU figures as missing."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$log_dir/gpu.txt" \
  || fail "nvidia-smi found no usable GPU (see its output above)"
echo "GPU: $(cat "$log_dir/gpu.txt")"

# 2. CUDA wheels: torch as pinned in pyproject.toml, CUDA build; bitsandbytes and gptqmodel as pinned.
torch_version="$(sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml | head -n1)"
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  venv="${GPU_VENV:-$root/.venv-gpu}"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
  pip_src=(--index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}" --extra-index-url https://pypi.org/simple)
  [[ -n "${WHEELS:-}" ]] && pip_src=(--no-index --find-links "$WHEELS")
  timeout "$step_timeout" pip install -q "${pip_src[@]}" "torch==${torch_version}" \
    || fail "could not install torch ${torch_version} with CUDA (TORCH_INDEX=${TORCH_INDEX:-default}, WHEELS=${WHEELS:-unset})"
  # The project and its pins (bitsandbytes, gptqmodel: gptqmodel may compile its CUDA kernels).
  timeout "$step_timeout" pip install -q "${pip_src[@]}" -e . \
    || fail "could not install the project into $venv"
fi
python - <<'PY' || fail "torch does not see a CUDA device (wrong wheel for this driver? set TORCH_INDEX)"
import torch, sys
ok = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {ok}")
sys.exit(0 if ok else 1)
PY
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"

# 3. The SmolLM2 study's bnb and GPTQ variants on CUDA, in a fresh copy of the project.
project="$log_dir/project"
mkdir -p "$project/src" "$project/conf"
cp pyproject.toml "$project/"
for entry in conf/*; do [[ "$(basename "$entry")" == local ]] || cp -r "$entry" "$project/conf/"; done
mkdir -p "$project/conf/local"
cp -r conf/smollm2 "$project/conf/gpu_check"
python - "$project/conf/gpu_check/parameters.yml" <<'PY'
import sys, yaml
path = sys.argv[1]
params = yaml.safe_load(open(path))
params["base_model"]["device"] = "cuda"
params["variants"] = {name: spec for name, spec in params["variants"].items()
                      if spec["method"] in ("fp", "bnb_int8", "bnb_nf4", "gptq")}
params.setdefault("runtime", {})["threads"] = {"default": None, "pipelines": {}, "nodes": {}}
yaml.safe_dump(params, open(path, "w"), sort_keys=False)
print("variants:", ", ".join(params["variants"]))
PY
start=$(date +%s)
(cd "$project" && timeout "$step_timeout" python -m kedro run --env=gpu_check \
  --pipelines=data_prep,train,quantize,evaluate > "$log_dir/study.log" 2>&1) \
  || { tail -n 60 "$log_dir/study.log" >&2; fail "the SmolLM2 study on CUDA failed (log above; full log $log_dir/study.log)"; }
study_s=$(( $(date +%s) - start ))

# 4. The capture benchmark: small model, then the Qwen2.5-7B-shaped model on CUDA.
start=$(date +%s)
timeout "$step_timeout" python benchmarks/capture_throughput.py --device cuda --n-prompts 2048 --batch-size 256 \
  --json "$log_dir/capture.json" > "$log_dir/capture.log" 2>&1 \
  || { tail -n 40 "$log_dir/capture.log" >&2; fail "capture_throughput.py failed on CUDA"; }
capture_s=$(( $(date +%s) - start ))

# 5. The figures, into docs/gpu_check.md.
python - "$project" "$log_dir" "$out" "$study_s" "$capture_s" <<'PY'
import json, sys, datetime, platform
from pathlib import Path
import pandas as pd, torch
project, logs, out, study_s, capture_s = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
table = pd.read_csv(project / "data/08_reporting/recall_by_variant.csv")
cols = [c for c in table.columns if c in ("variant", "method", "bits", "one_hop.accuracy", "one_hop.answer_logprob",
                                           "eval.seconds", "eval.prompts_per_second", "bytes", "effective_bits")]
capture = json.loads((logs / "capture.json").read_text())
lines = [
    "# GPU check (benchmarks/gpu_check.sh)", "",
    f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {(logs / 'gpu.txt').read_text().strip()}; "
    f"torch {torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}.", "",
    f"## The SmolLM2 study's bitsandbytes and GPTQ variants on CUDA ({study_s} s for data_prep, train, quantize, evaluate)", "",
    table[cols].to_markdown(index=False), "",
    f"## Capture throughput ({capture_s} s)", "", "```json", json.dumps(capture, indent=2), "```", "",
    "Reproduce: `benchmarks/gpu_check.sh` (see its header for the environment variables).", "",
]
out.write_text("\n".join(lines))
print(f"wrote {out}")
PY
echo "logs in $log_dir"
