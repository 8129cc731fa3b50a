#!/usr/bin/env bash
# A study with several training seeds on every core: data_prep once, then one `kedro run`
# per training seed side by side (each the nodes tagged training_seed_<k>: that seed's model,
# variants, evaluation and probes, one torch thread each), then the report that sets the
# seeds side by side. Prints the wall time of each stage.
#   scripts/run_seeds.sh [--env=seeds] [other kedro run arguments, e.g. --params=...]
# Default env: seeds (conf/seeds). `kedro run --env=seeds` runs the same nodes one after
# another; `kedro submit --env=seeds` runs each further seed as one Slurm array task.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=("$@")
if ! printf '%s\n' "${ARGS[@]+"${ARGS[@]}"}" | grep -q -- '^--env'; then ARGS+=(--env=seeds); fi
LOGS="logs/run_seeds/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$LOGS"
SEEDS=$(python - "${ARGS[@]}" <<'PY'
import sys
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from pathlib import Path
from kedro.framework.cli.utils import _split_params

env, params = None, {}
for arg in sys.argv[1:]:
    if arg.startswith("--env="):
        env = arg.split("=", 1)[1]
    elif arg.startswith("--params="):
        params.update(_split_params(None, None, arg.split("=", 1)[1]))
bootstrap_project(Path.cwd())
with KedroSession.create(env=env, runtime_params=params) as session:
    session.load_context()
    from fkr_kedro.run_config import study_parameters
    p = study_parameters()
    print(" ".join(str(s) for s in (p.training_seeds or [p.training.seed])))
PY
)
export OMP_NUM_THREADS=1
start=$(date +%s)
echo "training seeds: $SEEDS; logs in $LOGS"
kedro run "${ARGS[@]}" --pipeline=data_prep > "$LOGS/data_prep.log" 2>&1
echo "data_prep: $(( $(date +%s) - start )) s"
pids=()
for seed in $SEEDS; do
  kedro run "${ARGS[@]}" --tags="training_seed_$seed" > "$LOGS/seed$seed.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
echo "seeds (side by side): $(( $(date +%s) - start )) s"
if [ "$failed" != 0 ]; then echo "a seed's run failed: see $LOGS/seed*.log" >&2; exit 1; fi
kedro run "${ARGS[@]}" --pipeline=report > "$LOGS/report.log" 2>&1
echo "report: $(( $(date +%s) - start )) s in all"
tail -n 3 "$LOGS/report.log"
