"""Nodes of the export pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from fkr_kedro.analysis.lm_eval_export import lm_eval_task_files
from fkr_kedro.parameters import EvaluateSettings, ExportSettings, KnowledgeSettings

log = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 16


def export_name(knowledge: KnowledgeSettings) -> str:
    """The knowledge source's name: ``world_facts``, or ``lre_none`` for a chosen pair."""
    return knowledge.source or f"{knowledge.one_hop}_{knowledge.two_hop}"


def export_lm_eval(
    one_hop_prompts: pd.DataFrame,
    two_hop_prompts: pd.DataFrame,
    export: ExportSettings,
    knowledge: KnowledgeSettings,
    evaluate: EvaluateSettings,
) -> dict[str, str]:
    """The task folder's files (file name -> text)."""
    name = export.name or export_name(knowledge)
    max_gen_toks = export.max_gen_toks or evaluate.max_new_tokens or DEFAULT_MAX_GEN_TOKS
    files = lm_eval_task_files(one_hop_prompts, two_hop_prompts, name, max_gen_toks)
    log.info(
        "lm-eval task %s: %d one-hop and %d two-hop prompts, %d new tokens (lm_eval --tasks %s --include_path <folder>)",
        name, len(one_hop_prompts), len(two_hop_prompts), max_gen_toks, name,
    )
    return files
