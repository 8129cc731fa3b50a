"""GPTQ and AWQ through GPTQModel 7.0.0, and loading of any GPTQModel-format directory.

A quantized directory holds, per quantized linear layer, the packed integer weights
(``qweight``, int32 words), fp16 ``scales`` and packed ``qzeros`` per group, and for the
GPTQ format ``g_idx`` (the group of each input column); config.json carries the
``quantization_config`` and quantize_config.json GPTQModel's full settings. Weights run in
fp16 (bf16 when the source is bf16): GPTQModel's kernels take nothing else.

GPTQModel is imported on first use (it takes seconds and sets process-wide defaults), by
:func:`gptqmodel`, which bridges what 7.0.0 expects of its surroundings: it reads
``create_repo``/``has_file``/``list_repo_tree`` from ``transformers.utils.hub``, which
transformers 5.23 no longer has, and its model registry imports torchvision (for InternVL)
at import time, while no CPU build of torchvision exists for torch 2.13 here.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..modeling.load import CausalLM, resolve_device
from .common import load_tokenizer, source_dtype
from .variants import VariantSpec

# Sizes GPTQModel's CPU thread pools on machines with few cores (asked for by the project's
# setup notes; 7.0.0 itself sizes them from os.cpu_count()).
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")


@functools.cache
def gptqmodel() -> types.ModuleType:
    import huggingface_hub
    from transformers.utils import hub

    for name, fn in {
        "create_repo": huggingface_hub.create_repo,
        "has_file": huggingface_hub.file_exists,
        "list_repo_tree": huggingface_hub.list_repo_tree,
    }.items():
        if not hasattr(hub, name):
            setattr(hub, name, fn)
    with _torchvision_placeholder():
        import gptqmodel
        from gptqmodel.looper.loop_processor import LoopProcessor

    # 7.0.0 also appends a JSON record of every quantized module to a file it creates in the
    # current working directory; the per-module summary is saved with the model anyway
    # (quant_log.csv), so those records are dropped rather than left wherever the caller runs.
    LoopProcessor._async_log_writer = lambda self, stat: None
    return gptqmodel


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> None:
    """GPTQ or AWQ (``spec.method``) calibrated on ``calibration_texts``, one text per batch."""
    gm = gptqmodel()
    common = dict(bits=spec.bits, group_size=spec.group_size, sym=spec.sym, offload_to_disk=False)
    if spec.method == "awq":
        config = gm.AWQConfig(format="gemm", **common)
    else:
        config = gm.GPTQConfig(desc_act=spec.desc_act, **common)
    run_gptqmodel(source_dir, config, calibration_texts, out_dir, spec.device)


def run_gptqmodel(
    source_dir: Path, config: Any, calibration_texts: list[str] | None, out_dir: Path, device: str
) -> None:
    """Load ``source_dir`` into GPTQModel with ``config``, quantize, save model and tokenizer."""
    gm = gptqmodel()
    model = gm.GPTQModel.load(
        str(source_dir), config, device=resolve_device(device), dtype=_kernel_dtype(source_dir)
    )
    # 7.0.0's quantize() takes calibration_data_min_length but never passes it on, and the
    # default drops every text of 10 tokens or fewer: short factual statements would all go.
    model.prepare_dataset = functools.partial(model.prepare_dataset, calibration_data_min_length=0)
    # AWQ's default packer is a CUDA kernel; the torch one writes the same GEMM format anywhere.
    backend = gm.BACKEND.AWQ_TORCH if config.method == "awq" else gm.BACKEND.AUTO
    model.quantize(calibration_texts or None, batch_size=1, backend=backend)
    model.save(str(out_dir))
    load_tokenizer(source_dir).save_pretrained(out_dir)


def load(model_dir: Path, device: str = "auto") -> CausalLM:
    """Reload a GPTQ/AWQ directory with GPTQModel, which picks a kernel for the device
    (torch kernels on CPU); the model is a regular transformers model with quantized linears."""
    wrapper = gptqmodel().GPTQModel.load(str(model_dir), device=resolve_device(device))
    return CausalLM(model=wrapper.model.eval(), tokenizer=load_tokenizer(model_dir))


def _kernel_dtype(source_dir: Path) -> torch.dtype:
    return torch.bfloat16 if source_dtype(source_dir) == torch.bfloat16 else torch.float16


@contextmanager
def _torchvision_placeholder() -> Iterator[None]:
    """An empty ``torchvision`` while GPTQModel imports, when the real one is absent; only
    its InternVL image preprocessing would touch it."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    modules = [types.ModuleType(name) for name in names]
    modules[0].transforms, modules[1].functional = modules[1], modules[2]
    modules[2].InterpolationMode = None
    sys.modules.update(zip(names, modules))
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)
