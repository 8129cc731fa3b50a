"""Throughput of batched activation capture against a plain per-prompt transformers loop.

    python benchmarks/capture_throughput.py                  # small model (CPU or GPU)
    python benchmarks/capture_throughput.py --n-prompts 2048 --batch-size 256   # on a GPU

Both sides run the same two-hop prompts of a synthetic world through the same model and
produce the residual stream at the mention's last token and at the last token for every
layer, plus CnstScore (which needs the matching one-hop prompt's next-token distribution):

* ``capture``: :func:`fkr_kedro.analysis.capture.capture_activations` (batched, hooks, logits
  only at the last position; it ALSO keeps attention/MLP outputs, FFN activations, answer
  log-probs: more work than the baseline);
* ``plain``: one ``model(..., output_hidden_states=True)`` per two-hop prompt and one forward
  per one-hop prompt, positions from the offsets, CnstScore from the full logits.

Prints prompts/s of each and their ratio. On CUDA it then builds a Qwen2.5-7B-shaped model
(``Qwen2Config``, random bf16 weights, nothing downloaded) and reports capture tokens/s and
the fraction of the GPU's dense bf16 peak (2 x non-embedding parameters x tokens, plus the
head at the last positions); ``--peak-tflops`` overrides the peak looked up from the device
name. On CPU the 7B part is skipped. Random weights: speed only, no meaning.

On a small, busy CPU pass ``--threads 1``: with two threads and other jobs on the cores,
PyTorch's thread synchronisation made both sides 5-12x slower in our runs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from fkr_kedro.analysis.capture import CaptureConfig, capture_activations, char_span_to_last_token
from fkr_kedro.analysis.readouts import cnst_score
from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer

# Dense bf16 peak (TFLOP/s, no sparsity) by device-name fragment.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def make_prompts(n: int):
    # The larger world this benchmark was measured on (the defaults before they became
    # conf/base's): 6,400 possible person names.
    world = generate_world(
        WorldConfig(
            n_people=max(600, n), seed=0, n_cities=200, n_countries=40, n_companies=100, n_landmarks=200,
            n_first_names=80, n_last_names=80, n_place_parts=40,
        )
    )
    table = world.two_hop_table()
    two = table.sample(n=n, random_state=0, replace=n > len(table)).reset_index(drop=True)
    return two, build_word_tokenizer(world.corpus())


def small_model(tokenizer, device) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).to(device).eval()


QWEN25_7B = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
    num_attention_heads=28, num_key_value_heads=4,
)
# Same code path, toy size: lets the 7B branch be checked on a CPU (--big-shape tiny).
QWEN_TINY = dict(
    vocab_size=4096, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2,
)


def qwen_model(tokenizer, device, shape: dict) -> Qwen2ForCausalLM:
    cfg = Qwen2Config(
        **shape, max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly (no 30 GB fp32 copy)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


class TokenCounter:
    """Counts the real (unpadded) tokens and the rows of every forward pass of a model."""

    def __init__(self, model):
        self.tokens = 0
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())
        self.rows += int(ids.shape[0])

    def remove(self) -> None:
        self.handle.remove()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def plain_loop(model, tokenizer, two, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-prompt baseline: residuals at mention and last token, CnstScore."""
    resid, scores = [], []
    for row in two.itertuples(index=False):
        enc = tokenizer(row.prompt_two_hop, return_tensors="pt", return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")[0]
        m = char_span_to_last_token(offsets, row.mention_start, row.mention_end)
        out = model(**enc.to(device), output_hidden_states=True)
        hs = torch.stack(out.hidden_states, 1)[0]  # [L+1, T, d] (HF: the last one is normed)
        resid.append(hs[:, [m, -1]].half().cpu())
        lp2 = torch.log_softmax(out.logits[0, -1].float(), -1)
        one = tokenizer(row.prompt_one_hop, return_tensors="pt").to(device)
        lp1 = torch.log_softmax(model(**one).logits[0, -1].float(), -1)
        scores.append(cnst_score(lp2, lp1).cpu())
    return torch.stack(resid), torch.stack(scores)


def timed(fn, device, *args, **kwargs):
    sync(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    sync(device)
    return out, time.perf_counter() - start


def compare(model, tokenizer, two, device, batch_size, n_plain, label):
    cfg = CaptureConfig(batch_size=batch_size, max_act_prompts=256, progress=False)
    capture_activations(model, tokenizer, None, two.head(min(len(two), batch_size)), cfg)  # warm-up
    counter = TokenCounter(model)
    cache, t_cap = timed(capture_activations, device, model, tokenizer, None, two, cfg)
    counter.remove()
    plain_rows = two.head(n_plain)
    plain_loop(model, tokenizer, plain_rows.head(2), device)  # warm-up
    (resid, cnst), t_plain = timed(plain_loop, device, model, tokenizer, plain_rows, device)
    # Same numbers both ways (layers before the last; HF normalises the last hidden state).
    got = cache["two_hop.resid_post.mention"][: len(plain_rows), :-1].float()
    diff_resid = (got - resid[:, :-1, 0].float()).abs().max().item()
    diff_cnst = (cache["two_hop.cnst_score"][: len(plain_rows)] - cnst).abs().max().item()
    cap_ps, plain_ps = len(two) / t_cap, len(plain_rows) / t_plain
    result = {
        "model": label,
        "device": device,
        "n_prompts_capture": len(two),
        "n_prompts_plain": len(plain_rows),
        "batch_size": batch_size,
        "capture_prompts_per_s": cap_ps,
        "plain_prompts_per_s": plain_ps,
        "speedup": cap_ps / plain_ps,
        "max_abs_diff_resid": diff_resid,
        "max_abs_diff_cnst": diff_cnst,
        "capture_seconds": t_cap,
        "capture_real_tokens": counter.tokens,
        "capture_forward_rows": counter.rows,
        "capture_tokens_per_s": counter.tokens / t_cap,
    }
    print(
        f"[{label}] capture {cap_ps:9.1f} prompts/s | plain loop {plain_ps:8.1f} prompts/s | "
        f"ratio {cap_ps / plain_ps:6.1f}x | max |diff| resid {diff_resid:.2e}, cnst {diff_cnst:.2e}"
    )
    return result


def gpu_efficiency(model, result: dict, peak_tflops: float | None) -> dict:
    """Model FLOPs of the real tokens only (2 x non-embedding parameters a token, plus the head
    at one position a row; attention scores and padding not counted) over the capture time."""
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    head = model.config.hidden_size * model.config.vocab_size
    flops = 2 * non_embedding * result["capture_real_tokens"] + 2 * head * result["capture_forward_rows"]
    achieved = flops / result["capture_seconds"] / 1e12
    return {
        "model_tflops_per_s": achieved,
        "peak_tflops": peak_tflops,
        "fraction_of_peak": achieved / peak_tflops if peak_tflops else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=256)
    ap.add_argument("--n-plain", type=int, default=64, help="prompts for the (slow) per-prompt loop")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--n-prompts-7b", type=int, default=2048)
    ap.add_argument("--batch-size-7b", type=int, default=256)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--big-shape", choices=["7b", "tiny"], default="7b", help="tiny: check the 7B code path anywhere")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    big_ok = device.startswith("cuda") or args.big_shape == "tiny"
    two, tokenizer = make_prompts(max(args.n_prompts, args.n_prompts_7b if big_ok else 0))
    results = []
    small = small_model(tokenizer, device)
    res = compare(small, tokenizer, two.head(args.n_prompts), device, args.batch_size, args.n_plain, "llama-8L-256d")
    print(f"[llama-8L-256d] capture {res['capture_tokens_per_s']:.0f} real tokens/s")
    results.append(res)
    del small

    if big_ok and not args.skip_7b:
        name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
        peak = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        label = "qwen2.5-7b-shape-bf16" if args.big_shape == "7b" else "qwen2-tiny-shape-bf16"
        big = qwen_model(tokenizer, device, QWEN25_7B if args.big_shape == "7b" else QWEN_TINY)
        res = compare(big, tokenizer, two.head(args.n_prompts_7b), device, args.batch_size_7b, args.n_plain, label)
        res.update(gpu_efficiency(big, res, peak))
        res["gpu"] = name
        if device.startswith("cuda"):
            res["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"[{label}] {res['capture_tokens_per_s']:.0f} real tokens/s, {res['model_tflops_per_s']:.1f} model TFLOP/s"
            + (f" = {100 * res['fraction_of_peak']:.0f}% of the {peak:.0f} TFLOP/s dense bf16 peak ({name})" if peak else "")
        )
        results.append(res)
    else:
        print("no CUDA device: the 7B-shaped measurement is skipped (--big-shape tiny runs its code path)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
