"""The study's prompts as an lm-evaluation-harness task folder, so ``lm_eval --tasks <name>
--include_path <folder>`` runs the same one-hop and two-hop prompts on any model.

Per prompt set (``one_hop``: every fact, answer the object; ``two_hop``: every chain's
composed question ``r2(r1(e1))``, answer ``e3``) the folder holds the prompts as JSONL and
two tasks:

- ``<name>_<set>_gen`` (``generate_until``): greedy generation, ``max_gen_toks`` new tokens,
  stopped only by the end-of-sequence token, scored by ``exact_match``: the project's own
  rule (:func:`~fkr_kedro.analysis.recall.is_whole_name_match`: the continuation starts with
  the answer or one of its aliases as a whole name, after lower-casing, dropping accents,
  punctuation and a leading article). Its accuracy is the project's recall.
- ``<name>_<set>_loglik`` (``loglikelihood``): the object scored teacher-forced after the
  prompt and a space. ``acc`` is lm-eval's ``is_greedy`` (every answer token is the argmax:
  stricter than the generation rule, no aliases, no normalisation); ``perplexity`` is
  ``exp(-mean log p(answer | prompt))``, the mean of the project's ``answer_logprob``.

plus a group ``<name>`` of the four and ``utils.py``, which loads the JSONL beside it (the
folder can be moved) and holds a copy of the project's matching functions, written from
their source here, so lm-eval needs nothing of this project. Knows nothing of Kedro.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import yaml

from . import recall

SETS = ("one_hop", "two_hop")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

_UTILS_HEADER = '''"""Written by fkr_kedro's export pipeline: loads the prompts beside this file and scores a
generation with the project's whole-name rule (a copy of fkr_kedro.analysis.recall)."""

import re
import unicodedata
from pathlib import Path

import datasets

'''

_UTILS_FOOTER = '''

def load_prompts(data_file, **kwargs):
    """The task's prompts (the JSONL beside this file) as the test split."""
    path = Path(__file__).resolve().parent / data_file
    return datasets.DatasetDict({"test": datasets.Dataset.from_json(str(path))})


def process_results(doc, results):
    return {"exact_match": float(is_whole_name_match(results[0], doc["aliases"]))}
'''


def prompt_records(one_hop: pd.DataFrame, two_hop: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The exported rows of each set: prompt, object (the answer), aliases and what
    identifies the row (relation and subject; composition, chain and split)."""
    one = pd.DataFrame({
        "prompt": one_hop["prompt"], "object": one_hop["object"],
        "aliases": one_hop["object_aliases"].map(list), "relation": one_hop["relation"], "subject": one_hop["subject"],
    })  # fmt: skip
    two = pd.DataFrame({
        "prompt": two_hop["prompt_two_hop"], "object": two_hop["e3"], "aliases": two_hop["e3_aliases"].map(list),
        "composition": two_hop["composition"], "e1": two_hop["e1"], "e2": two_hop["e2"], "split": two_hop["split"],
    })  # fmt: skip
    return {"one_hop": one.reset_index(drop=True), "two_hop": two.reset_index(drop=True)}


def task_configs(name: str, max_gen_toks: int) -> dict[str, dict]:
    """File name -> YAML content of every task and the group."""
    configs: dict[str, dict] = {}
    for prompt_set in SETS:
        common = {
            "dataset_path": "json",
            "custom_dataset": "!function utils.load_prompts",
            "dataset_kwargs": {"data_file": f"{name}_{prompt_set}.jsonl"},
            "test_split": "test",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{object}}",
            "metadata": {"version": 1.0},
        }
        configs[f"{name}_{prompt_set}_gen.yaml"] = {
            "task": f"{name}_{prompt_set}_gen",
            **common,
            "output_type": "generate_until",
            # Only the end-of-sequence token stops generation (lm-eval adds it), as in the project.
            "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": max_gen_toks},
            "process_results": "!function utils.process_results",
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        }
        configs[f"{name}_{prompt_set}_loglik.yaml"] = {
            "task": f"{name}_{prompt_set}_loglik",
            **common,
            "output_type": "loglikelihood",
            # lm-eval 0.4.13 scores doc_to_target as it is (no target_delimiter for this type):
            # the space before the answer is part of it, as in the project's "prompt answer".
            "doc_to_target": " {{object}}",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            ],
        }
    configs[f"{name}.yaml"] = {
        "group": name,
        "task": [f"{name}_{s}_{kind}" for s in SETS for kind in ("gen", "loglik")],
        "metadata": {"version": 1.0},
    }
    return configs


def utils_source() -> str:
    """utils.py: the project's matching functions, copied from their source."""
    parts = [f"ARTICLES = {recall.ARTICLES!r}\n"]
    parts += [inspect.getsource(f) for f in (recall.normalize, recall.strip_article)]
    source = inspect.getsource(recall.is_whole_name_match).replace("Sequence[str]", "list")
    return _UTILS_HEADER + "\n\n".join([*parts, source]) + _UTILS_FOOTER


def _dump(config: dict) -> str:
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
    # lm-eval's YAML loader resolves `!function module.name` tags; safe_dump quotes them.
    return re.sub(r"'(!function [\w.]+)'", r"\1", text)


def lm_eval_task_files(one_hop: pd.DataFrame, two_hop: pd.DataFrame, name: str, max_gen_toks: int) -> dict[str, str]:
    """File name -> text of every file of the task folder (JSONL, task YAMLs, utils.py)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"export name {name!r}: use letters, digits and underscores, starting with a letter")
    files = {}
    for prompt_set, frame in prompt_records(one_hop, two_hop).items():
        lines = (json.dumps(row, ensure_ascii=False) for row in frame.to_dict(orient="records"))
        files[f"{name}_{prompt_set}.jsonl"] = "".join(f"{line}\n" for line in lines)
    files.update({file: _dump(config) for file, config in task_configs(name, max_gen_toks).items()})
    files["utils.py"] = utils_source()
    return files


def write_task_folder(files: dict[str, str], out_dir: str | Path) -> Path:
    """Write ``files`` as the folder ``out_dir``, built beside it and swapped in whole."""
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for file, text in files.items():
        (staging / file).write_text(text, encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir
