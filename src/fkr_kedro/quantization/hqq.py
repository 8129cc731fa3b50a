"""HQQ (Half-Quadratic Quantization, Badri & Shaji 2023): calibration-free, per group of
``group_size`` input columns a min-max grid of ``2**bits`` levels whose scale and (non-integer)
zero point are then refined by HQQ's proximal solver against the weights alone.

Quantized with the ``hqq`` library's own ``Quantizer`` (``optimize=True``, ``axis=1``: groups
run along each row's input columns, the layout its fast kernels use), layer by layer on the
CPU (or the variant's device). transformers 5.23 cannot do this itself: its ``HqqConfig``
quantize-on-load raises "HQQ is not available yet" (the HQQ quantizer has no quantize ops in
its new loading path), so the variant is stored by this module in safetensors: per quantized
linear the packed codes exactly as hqq packs them (``W_q``: two 4-bit, four 2-bit or one 8-bit
per uint8; ten 3-bit per int32), and a float16 ``scale`` and ``zero`` per group (hqq's
default storage dtype); config.json's ``quantization_config`` names the format. :func:`load`
dequantizes with hqq's ``Quantizer.dequantize`` into plain ``nn.Linear`` weights in the
source's dtype, so activations are computed like the ``fp`` variant's (as for GPTQ/AWQ).
No pickle is written (hqq's own ``save_quantized`` uses ``torch.save``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..modeling.load import CausalLM, load_causal_lm, resolve_device
from .common import load_tokenizer, quiet_load_report, source_dtype
from .methods import quantizable_linears
from .variants import VariantSpec

FORMAT = "fkr_hqq_safetensors"
WEIGHTS = "model.safetensors"
# hqq stores scale and zero in its compute dtype, float16 by default.
META_DTYPE = torch.float16


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> dict:
    from hqq.core.quantize import Quantizer

    lm = load_causal_lm(source_dir, device="cpu")
    lm.save(out_dir)
    linears = quantizable_linears(lm.model.config)
    device = resolve_device(spec.device)
    files = sorted(Path(out_dir).glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(file, "pt") as f:
            tensors.update({key: f.get_tensor(key) for key in f.keys()})
        file.unlink()
    with torch.no_grad():
        for name in linears:
            weight = tensors.pop(f"{name}.weight")
            w_q, meta = Quantizer.quantize(
                weight.to(device, torch.float32), nbits=spec.bits, group_size=spec.group_size, axis=1,
                optimize=True, bitpack=True, compute_dtype=torch.float32, device=device,
            )  # fmt: skip
            tensors[f"{name}.W_q"] = w_q.cpu().contiguous()
            tensors[f"{name}.scale"] = meta["scale"].to(META_DTYPE).cpu().contiguous()
            tensors[f"{name}.zero"] = meta["zero"].to(META_DTYPE).cpu().contiguous()
    (Path(out_dir) / "model.safetensors.index.json").unlink(missing_ok=True)
    save_file(tensors, str(Path(out_dir) / WEIGHTS), metadata={"format": "pt"})
    config_path = Path(out_dir) / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = {
        "quant_method": "hqq",
        "format": FORMAT,
        "nbits": spec.bits,
        "group_size": spec.group_size,
        "axis": 1,
        "packing": Quantizer.bit_to_packing[spec.bits],
        "meta_dtype": str(META_DTYPE).removeprefix("torch."),
    }
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return {"compute_dtype": str(lm.model.dtype).removeprefix("torch."), "modules": dict.fromkeys(linears, "hqq")}


def is_hqq_directory(model_dir: Path) -> bool:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return config.get("quantization_config", {}).get("format") == FORMAT


def load(model_dir: Path, device: str = "auto") -> CausalLM:
    """Reload an HQQ directory as a regular transformers model whose quantized linears hold
    the dequantized weights ((q - zero) * scale from the stored codes, scale and zero)."""
    from hqq.core.quantize import Quantizer
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    quant = dict(config.quantization_config)
    del config.quantization_config
    dtype = source_dtype(model_dir)
    with quiet_load_report():
        model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=dtype)
    state = model.state_dict()
    with safe_open(model_dir / WEIGHTS, "pt") as f, torch.no_grad():
        keys = set(f.keys())
        for name in quantizable_linears(config):
            if f"{name}.W_q" not in keys:
                raise ValueError(f"{model_dir / WEIGHTS}: no HQQ codes for linear layer {name!r} (expected {name}.W_q)")
            target = state[f"{name}.weight"]
            meta = {
                "nbits": quant["nbits"], "group_size": quant["group_size"], "axis": quant["axis"],
                "shape": target.shape, "packing": quant["packing"], "view_as_float": False,
                "compute_dtype": torch.float32,
                "scale": f.get_tensor(f"{name}.scale").float(), "zero": f.get_tensor(f"{name}.zero").float(),
            }  # fmt: skip
            target.copy_(Quantizer.dequantize(f.get_tensor(f"{name}.W_q"), meta).to(target.dtype))
    model = model.to(resolve_device(device)).eval()
    return CausalLM(model=model, tokenizer=load_tokenizer(model_dir))
