"""One-hop evaluation against lm-evaluation-harness: the same prompts and model, timed one
after the other, with per-prompt verdicts compared.

lm-eval runs in a virtual environment of its own (it pins other versions than the project):

    python -m venv /work/venv-lmeval
    /work/venv-lmeval/bin/pip install /opt/wheels/torch-2.13.0+cpu-*.whl "lm-eval[hf]==0.4.13"

    # 1. the prompts as a local lm-eval task (benchmarks/lmeval/fkr_one_hop.yaml reads them)
    PYTHONPATH=src python benchmarks/lmeval_compare.py export PROMPTS.parquet [LIMIT]
    # 2. lm-eval: loglikelihood requests, acc = is_greedy (every answer token the argmax)
    OMP_NUM_THREADS=1 /work/venv-lmeval/bin/python benchmarks/lmeval_compare.py lmeval MODEL_DIR
    # 3. this project: evaluate.mode=teacher_forced (WITH_GENERATE=1: generate too)
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/lmeval_compare.py ours MODEL_DIR
    # 4. agreement and the time ratio
    python benchmarks/lmeval_compare.py compare

lm-eval's ``acc`` for a loglikelihood task is ``is_greedy`` alone: it has no aliases and no
whole-name rule, so it is compared with this project's ``greedy`` column (the answer's
tokens are the argmax) and, separately, with the whole-name verdict. Times exclude loading
the model on both sides. Files go to benchmarks/lmeval/out/ (ignored by git).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent / "lmeval"
OUT = HERE / "out"
BATCH = 64


def export(prompts: str, limit: str | None = None) -> None:
    import pandas as pd

    one_hop = pd.read_parquet(prompts)
    if limit is not None and len(one_hop) > int(limit):  # a seeded sample, as eval_speed.py --limit
        one_hop = one_hop.sample(int(limit), random_state=0).reset_index(drop=True)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "one_hop.jsonl", "w") as f:
        for i, row in enumerate(one_hop.itertuples()):
            f.write(json.dumps({"id": i, "prompt": row.prompt, "answer": row.object,
                                "aliases": list(row.object_aliases)}) + "\n")
    print(f"wrote {len(one_hop)} prompts to {OUT / 'one_hop.jsonl'}")


def lmeval(model_dir: str) -> None:
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=BATCH, device="cpu")
    manager = TaskManager(include_path=str(HERE))
    start = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=["fkr_one_hop"], task_manager=manager, log_samples=True,
                              batch_size=BATCH)
    seconds = time.perf_counter() - start
    samples = results["samples"]["fkr_one_hop"]
    verdicts = {int(s["doc"]["id"]): bool(s["acc"]) for s in samples}
    (OUT / "lmeval.json").write_text(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(),
                                                  "load": os.getloadavg(), "acc": verdicts}))
    print(f"lm-eval: {len(verdicts)} prompts in {seconds:.2f} s, acc {sum(verdicts.values()) / len(verdicts):.4f}")


def ours(model_dir: str) -> None:
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fkr_kedro.analysis.recall import evaluate_one_hop, teacher_forced

    rows = [json.loads(line) for line in open(OUT / "one_hop.jsonl")]
    one_hop = pd.DataFrame({"relation": "r", "subject": "s", "object": [r["answer"] for r in rows],
                            "prompt": [r["prompt"] for r in rows], "object_aliases": [r["aliases"] for r in rows]})
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    start = time.perf_counter()
    forced = evaluate_one_hop(model, tok, one_hop, BATCH, mode="teacher_forced")
    seconds = time.perf_counter() - start
    greedy = teacher_forced(model, tok, one_hop["prompt"].tolist(), one_hop["object"].tolist(), BATCH)["greedy"]
    gen_seconds, generated = float("nan"), forced
    if os.environ.get("WITH_GENERATE") == "1":  # slow: benchmarks/eval_speed.py measures it too
        start = time.perf_counter()
        generated = evaluate_one_hop(model, tok, one_hop, BATCH, mode="generate")
        gen_seconds = time.perf_counter() - start
    (OUT / "ours.json").write_text(json.dumps({
        "seconds": seconds, "generate_seconds": gen_seconds, "threads": torch.get_num_threads(), "load": os.getloadavg(),
        "correct": dict(zip(map(int, [r["id"] for r in rows]), map(bool, forced["correct"]))),
        "greedy": dict(zip(map(int, [r["id"] for r in rows]), map(bool, greedy))),
        "generate": dict(zip(map(int, [r["id"] for r in rows]), map(bool, generated["correct"]))),
    }))
    print(f"ours: teacher-forced {seconds:.2f} s, generate {gen_seconds:.2f} s")


def compare() -> None:
    lm = json.loads((OUT / "lmeval.json").read_text())
    us = json.loads((OUT / "ours.json").read_text())
    ids = sorted(lm["acc"], key=int)
    n = len(ids)
    same_greedy = sum(lm["acc"][i] == us["greedy"][i] for i in ids)
    same_verdict = sum(lm["acc"][i] == us["correct"][i] for i in ids)
    print(f"{n} prompts; lm-eval acc (is_greedy) {sum(lm['acc'].values()) / n:.4f}, "
          f"ours is_greedy {sum(us['greedy'].values()) / n:.4f}, whole-name {sum(us['correct'].values()) / n:.4f}")
    print(f"is_greedy agreement with lm-eval: {same_greedy}/{n}; whole-name verdict vs lm-eval acc: {same_verdict}/{n}"
          + (f"; teacher-forced vs generate: {sum(us['correct'][i] == us['generate'][i] for i in ids)}/{n}"
             if us["generate_seconds"] == us["generate_seconds"] else ""))
    print(f"time: lm-eval {lm['seconds']:.2f} s (load {lm['load'][0]:.1f}), ours teacher-forced {us['seconds']:.2f} s "
          f"(load {us['load'][0]:.1f}), generate {us['generate_seconds']:.2f} s; lm-eval / ours = {lm['seconds'] / us['seconds']:.2f}x")


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    {"export": export, "lmeval": lmeval, "ours": ours, "compare": compare}[command](*rest)
