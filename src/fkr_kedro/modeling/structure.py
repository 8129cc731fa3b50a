"""Where things are inside a decoder-only causal LM: its decoder layers, the attention and
MLP of a block, the final norm, the dtype a module computes in and the device it lives on.

Modules only, never weights: the analyses (capture, readouts, neuron attribution, recall)
call these modules or hook them, so the same code reads full-precision, bitsandbytes and
GPTQ/AWQ models alike. Llama-style blocks (Llama, Qwen2, Mistral, ...) are supported.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch


def unwrap_model(model):
    """The transformers model inside a wrapper (e.g. a GPTQModel object keeps it in ``.model``)."""
    if not hasattr(model, "get_output_embeddings") and hasattr(model, "model"):
        return model.model
    return model


def _owners(model):
    """The objects that may hold the decoder stack: ``base_model``, ``model``, the model itself."""
    return (getattr(model, "base_model", None), getattr(model, "model", None), model)


def decoder_layers(model) -> Sequence[torch.nn.Module]:
    """The decoder blocks (``model.model.layers`` for Llama/Qwen/Mistral)."""
    model = unwrap_model(model)
    for owner in _owners(model):
        layers = getattr(owner, "layers", None)
        if layers is not None:
            return layers
    raise AttributeError(f"cannot find the decoder layers of {type(model).__name__} (expected .model.layers)")


def block_modules(layer: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(attention, mlp, mlp.down_proj) of one Llama/Qwen/Mistral-style decoder layer."""
    attn = getattr(layer, "self_attn", None)
    mlp = getattr(layer, "mlp", None)
    down = getattr(mlp, "down_proj", None) if mlp is not None else None
    if attn is None or mlp is None or down is None:
        raise AttributeError(
            f"{type(layer).__name__} has no self_attn / mlp / mlp.down_proj: only Llama-style blocks "
            "(Llama, Qwen2, Mistral, ...) are supported; fused quantized MLPs hide down_proj"
        )
    return attn, mlp, down


def final_norm(model) -> torch.nn.Module:
    """The final norm module (``model.model.norm`` for Llama/Qwen/Mistral)."""
    model = unwrap_model(model)
    for owner in _owners(model):
        for name in ("norm", "final_layernorm", "ln_f"):
            module = getattr(owner, name, None) if owner is not None else None
            if isinstance(module, torch.nn.Module):
                return module
    raise AttributeError(f"cannot find the final norm of {type(model).__name__} (expected .model.norm)")


def compute_dtype(module: torch.nn.Module, fallback: torch.dtype) -> torch.dtype:
    """The dtype of the module's first floating-point parameter (``fallback`` if it has none,
    e.g. a quantized module whose weights are integers)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return fallback


def input_device(model) -> torch.device:
    """The device the model's input ids go to (that of its input embeddings)."""
    return unwrap_model(model).get_input_embeddings().weight.device


def module_device(module: torch.nn.Module, fallback: torch.device | None = None) -> torch.device:
    """The device of the module's first parameter (else its first buffer, else ``fallback``)."""
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    if fallback is None:
        raise ValueError(f"{type(module).__name__} has no parameters or buffers to tell its device")
    return fallback
