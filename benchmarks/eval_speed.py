"""Teacher-forced against generated whole-name verdicts: agreement and speed ratio.

For each prompt set, scores the one-hop prompts twice in one process, with
``evaluate.mode=generate`` (greedy decoding) and ``teacher_forced`` (one forward pass over
prompt + answer and each alias), and prints the agreement of the verdicts, every
disagreement with both texts, the answer log-probability difference and the time ratio.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/eval_speed.py \\
        --set default=/work/post/data/06_models/base:/work/post/data/05_model_input/one_hop_prompts.parquet \\
        --set smollm2=/work/smol/data/06_models/base:/work/smol/data/05_model_input/one_hop_prompts.parquet \\
        --lre /work/shared/data/lre:/work/smol/data/06_models/base [--limit 2000] [--repeats 2]

``--set NAME=MODEL_DIR:PROMPTS`` takes a saved model directory (a trained default base
model, SmolLM2 dequantized by ``kedro run --env=smollm2``) and a one_hop_prompts.parquet of
data_prep; ``--lre FOLDER:MODEL_DIR`` reads LRE's relations placed on that model's tokens.
``--max-new-tokens`` bounds generation as ``evaluate.max_new_tokens`` does (default: the
longest answer plus one, where both modes agree exactly by construction). Timings depend on
the machine's load: print ``uptime`` beside them; the ratio is measured in one run.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fkr_kedro.analysis.recall import evaluate_one_hop


def load(model_dir: str):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def compare(name: str, model, tokenizer, one_hop: pd.DataFrame, batch_size: int, max_new_tokens, repeats: int) -> dict:
    times: dict[str, list[float]] = {"generate": [], "teacher_forced": []}
    scores = {}
    for _ in range(repeats):  # alternate, so load changes hit both modes alike
        for mode in times:
            start = time.perf_counter()
            scores[mode] = evaluate_one_hop(model, tokenizer, one_hop, batch_size, max_new_tokens=max_new_tokens, mode=mode)
            times[mode].append(time.perf_counter() - start)
    gen, tf = scores["generate"], scores["teacher_forced"]
    agree = (gen["correct"] == tf["correct"]).mean()
    logprob_diff = (gen["answer_logprob"] - tf["answer_logprob"]).abs().max()
    g, t = min(times["generate"]), min(times["teacher_forced"])
    print(f"\n== {name}: {len(one_hop)} one-hop prompts, batch {batch_size}, max_new_tokens {max_new_tokens}")
    print(f"accuracy: generate {gen['correct'].mean():.4f}, teacher-forced {tf['correct'].mean():.4f}")
    print(f"agreement {agree:.4%} ({int((gen['correct'] != tf['correct']).sum())} disagreements); "
          f"max |answer log-prob difference| {logprob_diff:.2e}")
    print(f"time: generate {g:.2f} s, teacher-forced {t:.2f} s, ratio {g / t:.2f}x (best of {repeats})")
    diff = one_hop.assign(generated=gen["generated"], gen_correct=gen["correct"], tf_correct=tf["correct"])
    for row in diff[diff["gen_correct"] != diff["tf_correct"]].head(20).itertuples():
        print(f"  disagree: {row.prompt!r} -> generated {row.generated!r}; answer {row.object!r}, "
              f"aliases {list(row.object_aliases)}; generate {row.gen_correct}, teacher-forced {row.tf_correct}")
    return {"set": name, "prompts": len(one_hop), "agreement": agree, "generate_s": g, "teacher_forced_s": t, "ratio": g / t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], help="NAME=MODEL_DIR:PROMPTS_PARQUET")
    parser.add_argument("--lre", help="LRE_FOLDER:MODEL_DIR")
    parser.add_argument("--limit", type=int, default=None, help="at most this many prompts per set (a seeded sample)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    results = []
    jobs = []
    for spec in args.set:
        name, _, rest = spec.partition("=")
        model_dir, _, prompts = rest.partition(":")
        jobs.append((name, model_dir, lambda tok, p=prompts: pd.read_parquet(p)))
    if args.lre:
        folder, _, model_dir = args.lre.partition(":")

        def lre_prompts(tok, folder=folder):
            from fkr_kedro.knowledge.lre import read_lre

            return read_lre(folder, relation_types=["factual", "commonsense", "linguistic", "bias"], tokenizer=tok).one_hop

        jobs.append(("lre", model_dir, lre_prompts))
    for name, model_dir, prompts in jobs:
        model, tokenizer = load(model_dir)
        one_hop = prompts(tokenizer)
        if args.limit and len(one_hop) > args.limit:
            one_hop = one_hop.sample(args.limit, random_state=0)
        results.append(compare(name, model, tokenizer, one_hop.reset_index(drop=True), args.batch_size, args.max_new_tokens, args.repeats))
    print("\n" + pd.DataFrame(results).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
