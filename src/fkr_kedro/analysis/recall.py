"""Factual recall of a causal LM: greedy whole-name answers and answer log-probabilities.

Works on any ``transformers`` causal LM (full precision, bitsandbytes, GPTQ/AWQ) and any
fast tokenizer: prompts are left-padded and batched, the answer's tokens are found from
the tokenizer's character offsets (so a BPE tokenizer's leading space is handled), and an
answer counts as recalled only if the whole name (or one of its aliases) is generated,
followed by a word boundary, after normalisation (case, accents, punctuation, whitespace and
a leading article: "the United States." recalls "United States"). Generation is bounded:
by default the longest answer's length in tokens plus one, or ``max_new_tokens``.

Two ways to reach that verdict (``mode``): ``generate`` decodes greedily; ``teacher_forced``
runs one forward pass over prompt + answer (and over prompt + each alias) and accepts an
alias when each of its tokens is the argmax (lm-evaluation-harness's ``is_greedy``) and the
argmax token after it starts a new word (the whole-name rule, checked with the same
:func:`is_whole_name_match` on the decoded alias plus that token). Greedy decoding is
deterministic, so the two agree exactly except where generation's normalisation accepts a
text that is not an alias verbatim in the tokenizer's own tokenization (another case, an
added article, accents, punctuation inside the name, a non-canonical tokenization of the
same text) or numerical near-ties between the padded batches. Rows teacher forcing cannot
decide (the prompt's tokens change when the answer is appended, or the token after the
name decodes to nothing) are generated. docs/performance.md has the measured agreement.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..knowledge.chance import chance_rates
from ..modeling.structure import module_device
from .capture import answer_first_tokens
from .statistics import stderr


log = logging.getLogger(__name__)

ARTICLES = ("the", "a", "an")
EvaluateMode = Literal["teacher_forced", "generate"]
# measure_recall logs its estimated time when it has at least this many batches of prompts
# (the warm-up, one batch more, then costs at most 1/8 of the evaluation).
ESTIMATE_MIN_BATCHES = 8


def normalize(text: str) -> str:
    """Lower case, accents and punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def strip_article(text: str) -> str:
    """A normalised text without its leading article ("the netherlands" -> "netherlands")."""
    head, _, rest = text.partition(" ")
    return rest if head in ARTICLES and rest else text


def is_whole_name_match(generated: str, aliases: Sequence[str]) -> bool:
    """True if the generated continuation starts with one alias, as a whole name (both
    normalised, a leading article dropped from each)."""
    gen = strip_article(normalize(generated))
    for alias in aliases:
        a = strip_article(normalize(alias))
        if a and gen.startswith(a) and (len(gen) == len(a) or gen[len(a)] == " "):
            return True
    return False


@torch.inference_mode()
def greedy_continuations(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 256, progress: bool = False
) -> list[str]:
    """Greedy continuation of each prompt (special tokens dropped)."""
    device = module_device(model)
    out: list[str] = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
        enc = tokenizer(
            list(prompts[i : i + batch_size]), return_tensors="pt", padding=True, padding_side="left"
        ).to(device)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


@torch.inference_mode()
def answer_logprobs(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 256
) -> np.ndarray:
    """Sum of log p(answer tokens | prompt), teacher-forced, for ``prompt + " " + answer``."""
    scores = np.zeros(len(prompts))
    for window in _answer_windows(model, tokenizer, prompts, answers, batch_size):
        scores[window.rows] = window.answer_logprobs().numpy()
    return scores


@dataclass
class _AnswerWindow:
    """One batch of ``prompt + " " + answer`` texts on a left-padded grid (so every answer
    ends the batch), with the logits from the position before the earliest answer token to
    the end."""

    rows: list[int]  # the batch's row numbers in the caller's order
    prompts: list[str]
    ids: torch.Tensor  # [B, width] token ids
    pads: torch.Tensor  # [B] left padding of each row
    starts: torch.Tensor  # [B] grid position of each row's first answer token (width: none)
    is_answer: torch.Tensor  # [B, width]
    logits: torch.Tensor  # [B, keep, vocabulary], float32 on the CPU: logits[:, j] follow grid position first_kept + j

    @property
    def first_kept(self) -> int:
        return self.ids.shape[1] - self.logits.shape[1]

    def answer_logprobs(self) -> torch.Tensor:
        """Per row, the sum of log p of its answer tokens, normalised only where one is
        predicted (not over the whole window)."""
        targets, answer_mask = self.ids[:, self.first_kept + 1 :], self.is_answer[:, self.first_kept + 1 :]
        where = answer_mask.nonzero(as_tuple=True)
        picked = self.logits[:, :-1][where]
        token_logp = torch.zeros(answer_mask.shape)
        token_logp[where] = picked.gather(-1, targets[where][:, None])[:, 0] - picked.logsumexp(-1)
        return token_logp.sum(1)


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _answer_windows(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int, progress: bool = False
):
    """:class:`_AnswerWindow` batches over ``prompt + " " + answer``, longest first in tokens
    (less padding).

    The forward pass runs right-padded and without an attention mask, as
    lm-evaluation-harness's loglikelihood does: causal attention keeps every real token blind
    to the padding after it, positions start at 0 in every row, and attention takes its
    unmasked causal path (a padding mask makes SDPA build and read a [B, 1, T, T] mask). The
    logits are then laid out on the left-padded grid the callers index. The unembedding runs
    only over the positions that hold some row's answer window (``logits_to_keep``), not over
    the prompts: on SmolLM2 the 49,152 x 576 unembedding at every position was a fifth of the
    forward pass, on the paper_sim model most of it."""
    device = module_device(model)
    slice_logits = _accepts_logits_to_keep(model)
    texts = [f"{p} {a}" for p, a in zip(prompts, answers)]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    for i in tqdm(range(0, len(order), batch_size), desc="teacher-forced", disable=not progress):
        rows = order[i : i + batch_size]
        ps = [prompts[r] for r in rows]
        enc = tokenizer([texts[r] for r in rows], return_tensors="pt", padding=True, padding_side="right",
                        return_offsets_mapping=True)
        right_ids, right_mask = enc["input_ids"], enc["attention_mask"].bool()
        n, width = right_ids.shape
        # Answer tokens: those that end after the prompt's last character.
        right_answer = (enc["offset_mapping"][:, :, 1] > torch.tensor([len(p) for p in ps])[:, None]) & right_mask
        # The left-padded grid: grid position j of row b holds right-padded position j - pads[b].
        pads = width - right_mask.sum(1)
        source = torch.arange(width)[None, :] - pads[:, None]
        real = source >= 0
        source = source.clamp(min=0)
        ids = torch.where(real, right_ids.gather(1, source), tokenizer.pad_token_id)
        is_answer = real & right_answer.gather(1, source)
        starts = torch.where(is_answer.any(1), is_answer.float().argmax(1), torch.full((n,), width))
        first_kept = int((starts - 1).clamp(min=0).min())  # the grid position before the earliest answer token
        # Right-padded positions that hold some row's grid positions first_kept .. width - 1.
        low = max(first_kept - int(pads.max()), 0)
        if slice_logits:  # the callers run under torch.inference_mode
            logits = model(input_ids=right_ids.to(device), logits_to_keep=torch.arange(low, width, device=device)).logits
        else:
            logits = model(input_ids=right_ids.to(device)).logits[:, low:]
        kept = (torch.arange(first_kept, width)[None, :] - pads[:, None] - low).clamp(min=0)  # grid padding: unused
        logits = logits.float().cpu()[torch.arange(n)[:, None], kept]
        yield _AnswerWindow(rows, ps, ids, pads, starts, is_answer, logits)


@torch.inference_mode()
def teacher_forced(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 256, progress: bool = False
) -> pd.DataFrame:
    """One forward pass over ``prompt + " " + answer`` per row. Columns: ``greedy`` (every
    answer token is the argmax), ``text`` (the answer's tokens and the argmax token after
    them, decoded as generation decodes), ``first`` (the argmax at the first answer
    position, decoded), ``answer_logprob`` (as :func:`answer_logprobs`) and ``decidable``
    (False where the prompt's tokens change once the answer is appended, or the answer has
    no token, or the token after the name is not end-of-text yet decodes to nothing)."""
    rows: dict[int, dict] = {}
    eos = tokenizer.eos_token_id
    for w in _answer_windows(model, tokenizer, prompts, answers, batch_size, progress):
        alone = tokenizer(w.prompts)["input_ids"]
        width, first_kept, n = w.ids.shape[1], w.first_kept, len(w.rows)
        best = w.logits.argmax(-1)  # best[b, j]: the argmax after grid position first_kept + j
        hit = best[:, :-1] == w.ids[:, first_kept + 1 :]
        greedy = (hit | ~w.is_answer[:, first_kept + 1 :]).all(1)
        scores = w.answer_logprobs()
        answer_ids = [w.ids[b, int(w.starts[b]) :].tolist() for b in range(n)]
        nxt = best[:, -1].tolist()  # after each row's last token: left padding puts it at the end
        first_ids = [int(best[b, max(int(w.starts[b]) - 1 - first_kept, 0)]) for b in range(n)]
        texts = tokenizer.batch_decode([a + [t] for a, t in zip(answer_ids, nxt)], skip_special_tokens=True)
        alone_texts = tokenizer.batch_decode(answer_ids, skip_special_tokens=True)
        firsts = tokenizer.batch_decode([[f] for f in first_ids], skip_special_tokens=True)
        for b, row in enumerate(w.rows):
            start, pad = int(w.starts[b]), int(w.pads[b])
            decidable = pad < start < width and w.ids[b, pad:start].tolist() == alone[b]
            if nxt[b] != eos and texts[b] == alone_texts[b]:
                decidable = False  # the token after the name shows nothing: generation decides
            rows[row] = {"greedy": bool(greedy[b]) and decidable, "text": texts[b], "text_alone": alone_texts[b],
                         "tokens": len(answer_ids[b]), "first": firsts[b], "answer_logprob": float(scores[b]),
                         "decidable": decidable, "first_id": first_ids[b]}
    columns = ["greedy", "text", "text_alone", "tokens", "first", "answer_logprob", "decidable", "first_id"]
    return pd.DataFrame([rows[r] for r in range(len(prompts))], columns=columns)


    return None


def teacher_forced_verdicts(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], aliases: Sequence[Sequence[str]],
    batch_size: int = 256, progress: bool = False, max_new_tokens: int | None = None,
) -> pd.DataFrame:
    """Per row: ``correct`` (the answer or one alias is the greedy continuation, as a whole
    name), ``generated`` (the matching alias's text, else the first greedy token),
    ``answer_logprob`` (of the answer) and ``decidable`` (False: ask generation).

    ``max_new_tokens`` mirrors generation's bound: an alias longer than it is never
    generated whole, and one exactly as long ends the generated text (no next token)."""
    out = [{"correct": False, "generated": None, "answer_logprob": float("nan"), "decidable": True} for _ in prompts]

    def take(pairs: list[tuple[int, str, str]]) -> None:
        scored = teacher_forced(model, tokenizer, [p for _, p, _ in pairs], [a for _, _, a in pairs], batch_size, progress)
        for (r, _, alias), row in zip(pairs, scored.itertuples()):
            o = out[r]
            if o["generated"] is None:  # the answer itself: its log-prob, the first greedy token
                o["generated"], o["answer_logprob"], o["first"] = row.first, row.answer_logprob, row.first_id
            o["decidable"] &= bool(row.decidable)
            if max_new_tokens is not None and row.tokens >= max_new_tokens:
                text = row.text_alone if row.tokens == max_new_tokens else None
            else:
                text = row.text
            if row.greedy and text is not None and is_whole_name_match(text, [alias]):
                o["correct"], o["generated"] = True, text

    take([(r, p, a) for r, (p, a) in enumerate(zip(prompts, answers))])
    # Other aliases only where the answer was not recalled, and only those whose first token
    # is the greedy first token (any other cannot be the greedy continuation verbatim).
    rest = []
    for r, (p, a, al) in enumerate(zip(prompts, answers, aliases)):
        if out[r]["correct"] or not out[r]["decidable"]:
            continue
        for alias in dict.fromkeys(al):
            if alias != a and answer_first_tokens(tokenizer, [p], [alias])[0] == out[r]["first"]:
                rest.append((r, p, alias))
    if rest:
        take(rest)
    for o in out:
        o.pop("first", None)
    return pd.DataFrame(out)


def generation_bound(tokenizer, answers: Sequence[str]) -> int:
    """The longest answer in tokens, plus one to see where the name ends."""
    return max(len(ids) for ids in tokenizer([" " + a for a in answers], add_special_tokens=False)["input_ids"]) + 1


def score_prompts(
    model,
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[str],
    aliases: Sequence[Sequence[str]] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
    mode: EvaluateMode = "generate",
) -> pd.DataFrame:
    """Per prompt: the greedy continuation, whether it recalls the answer (or an alias) as a
    whole name, and the answer's log-probability. Duplicate (prompt, answer) pairs are
    scored once. ``mode="teacher_forced"`` decides with :func:`teacher_forced_verdicts`
    (``generated`` then holds the matched alias's text, or the first greedy token) and
    generates only the rows it cannot decide."""
    aliases = aliases if aliases is not None else [[a] for a in answers]
    frame = pd.DataFrame({"prompt": list(prompts), "answer": list(answers), "aliases": [list(a) for a in aliases]})
    unique = frame.drop_duplicates(["prompt", "answer"]).reset_index(drop=True)
    if unique.empty:  # a study without prompts of this kind (e.g. LRE alone, no two-hop chains)
        return frame[["prompt", "answer"]].assign(generated=pd.Series(dtype=object), correct=pd.Series(dtype=bool),
                                                  answer_logprob=pd.Series(dtype=float))
    if max_new_tokens is None:
        max_new_tokens = generation_bound(tokenizer, unique["answer"])
    if mode == "teacher_forced":
        forced = teacher_forced_verdicts(
            model, tokenizer, unique["prompt"].tolist(), unique["answer"].tolist(), unique["aliases"].tolist(),
            batch_size, progress, max_new_tokens,
        )
        unique = unique.assign(**forced[["generated", "correct", "answer_logprob"]])
        undecided = ~forced["decidable"].to_numpy()
        if undecided.any():
            again = score_prompts(
                model, tokenizer, unique.loc[undecided, "prompt"].tolist(), unique.loc[undecided, "answer"].tolist(),
                unique.loc[undecided, "aliases"].tolist(), max_new_tokens, batch_size, progress, mode="generate",
            )
            unique.loc[undecided, ["generated", "correct", "answer_logprob"]] = again[
                ["generated", "correct", "answer_logprob"]].to_numpy()
        unique = unique.astype({"correct": bool, "answer_logprob": float})
        return frame[["prompt", "answer"]].merge(
            unique[["prompt", "answer", "generated", "correct", "answer_logprob"]], on=["prompt", "answer"], how="left"
        )
    unique_prompts = unique["prompt"].drop_duplicates().tolist()
    generated = dict(
        zip(unique_prompts, greedy_continuations(model, tokenizer, unique_prompts, max_new_tokens, batch_size, progress))
    )
    unique["generated"] = unique["prompt"].map(generated)
    unique["correct"] = [is_whole_name_match(g, a) for g, a in zip(unique["generated"], unique["aliases"])]
    unique["answer_logprob"] = answer_logprobs(model, tokenizer, unique["prompt"].tolist(), unique["answer"].tolist(), batch_size)
    return frame[["prompt", "answer"]].merge(
        unique[["prompt", "answer", "generated", "correct", "answer_logprob"]], on=["prompt", "answer"], how="left"
    )


def evaluate_one_hop(
    model, tokenizer, one_hop: pd.DataFrame, batch_size: int = 256, progress: bool = False,
    max_new_tokens: int | None = None, mode: EvaluateMode = "generate",
) -> pd.DataFrame:
    """One row per one-hop fact: relation, subject, object, generated, correct, answer_logprob."""
    scored = score_prompts(
        model, tokenizer, one_hop["prompt"].tolist(), one_hop["object"].tolist(),
        one_hop["object_aliases"].tolist(), max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
        mode=mode,
    )
    return pd.concat([one_hop[["relation", "subject", "object"]].reset_index(drop=True), scored[["generated", "correct", "answer_logprob"]]], axis=1)


TWO_HOP_READOUTS = {
    # readout: (prompt column, answer column, aliases column)
    "r1(e1)": ("prompt_first_hop", "e2", "e2_aliases"),
    "r2(e2)": ("prompt_one_hop", "e3", "e3_aliases"),
    "r2(r1(e1))": ("prompt_two_hop", "e3", "e3_aliases"),
}


def evaluate_two_hop(
    model, tokenizer, two_hop: pd.DataFrame, batch_size: int = 256, progress: bool = False,
    max_new_tokens: int | None = None, mode: EvaluateMode = "generate",
) -> pd.DataFrame:
    """One row per chain and readout: the bridge r1(e1), the second hop alone r2(e2), and
    the latent composition r2(r1(e1))."""
    frames = []
    base = two_hop[["composition", "e1", "e2", "e3", "split"]].reset_index(drop=True)
    for readout, (prompt_col, answer_col, alias_col) in TWO_HOP_READOUTS.items():
        scored = score_prompts(
            model, tokenizer, two_hop[prompt_col].tolist(), two_hop[answer_col].tolist(),
            two_hop[alias_col].tolist(), max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
            mode=mode,
        )
        frames.append(base.assign(readout=readout, **scored[["generated", "correct", "answer_logprob"]]))
    return pd.concat(frames, ignore_index=True)


def prompt_values(one_hop_scores: pd.DataFrame, two_hop_scores: pd.DataFrame) -> dict[str, pd.Series]:
    """Per headline metric, its value on every prompt it averages (1.0/0.0 for correctness,
    the answer's log-probability), indexed by the prompt's row in the score table: the one
    definition of what each metric of :func:`summarize_recall` averages, which the intervals
    and the paired tests between variants (:mod:`fkr_kedro.analysis.comparisons`) reuse."""
    values: dict[str, pd.Series] = {}
    if len(one_hop_scores):
        values["one_hop.accuracy"] = one_hop_scores["correct"].astype(float)
        values["one_hop.answer_logprob"] = one_hop_scores["answer_logprob"].astype(float)
        for relation, part in one_hop_scores.groupby("relation", sort=True):
            values[f"one_hop.accuracy.{relation}"] = part["correct"].astype(float)
    comp = two_hop_scores[two_hop_scores["readout"] == "r2(r1(e1))"]
    for split, part in comp.groupby("split", sort=True):
        values[f"two_hop.{split}.accuracy"] = part["correct"].astype(float)
        values[f"two_hop.{split}.answer_logprob"] = part["answer_logprob"].astype(float)
    for (split, readout), part in two_hop_scores.groupby(["split", "readout"], sort=True):
        values[f"two_hop.{split}.{readout}.accuracy"] = part["correct"].astype(float)
    return values


def summarize_recall(one_hop_scores: pd.DataFrame, two_hop_scores: pd.DataFrame, two_hop: pd.DataFrame) -> dict[str, float]:
    """Headline figures: one-hop accuracy (overall and per relation), two-hop accuracy per
    split and readout beside the chance rate of the composition; each with its standard
    error over prompts as ``<metric>_stderr`` (lm-evaluation-harness's convention)."""
    metrics: dict[str, float] = {}
    for name, values in prompt_values(one_hop_scores, two_hop_scores).items():
        metrics[name] = float(values.mean())
        metrics[f"{name}_stderr"] = stderr(values)
    chance = chance_rates(two_hop)
    comp = two_hop_scores[two_hop_scores["readout"] == "r2(r1(e1))"]
    for split, part in comp.groupby("split"):
        metrics[f"two_hop.{split}.chance"] = float(part["composition"].map(chance).mean())
    return metrics


@dataclass(frozen=True)
class RecallResult:
    """Per-fact and per-chain scores of one model, and their headline metrics."""

    one_hop: pd.DataFrame
    two_hop: pd.DataFrame
    metrics: dict[str, float]


@dataclass(frozen=True)
class RecallEstimate:
    """How long :func:`measure_recall` should take: ``measured`` prompts took ``seconds_measured``,
    extrapolated to all ``prompts`` (one-hop facts plus three readouts per chain)."""

    prompts: int
    measured: int
    seconds_measured: float

    @property
    def seconds(self) -> float:
        return self.prompts * self.seconds_measured / self.measured

    def line(self, label: str) -> str:
        """``evaluate gptq_w4_g32: ~95 s for 680 prompts (measured on the first 64)``."""
        return f"{label}: ~{self.seconds:.0f} s for {self.prompts} prompts (measured on the first {self.measured})"


def estimate_recall_seconds(
    model, tokenizer, one_hop_prompts: pd.DataFrame, two_hop_prompts: pd.DataFrame, batch_size: int = 256,
    max_new_tokens: int | None = None, mode: EvaluateMode = "generate",
    clock: Callable[[], float] = time.perf_counter, min_batches: int = ESTIMATE_MIN_BATCHES,
) -> RecallEstimate | None:
    """A short measured warm-up: one batch of the more numerous kind of prompt (the first
    ``batch_size`` one-hop facts, or the first two-hop prompts r2(r1(e1)), the longest of a
    chain's three), scored as :func:`measure_recall` scores them (same mode and generation
    bound), timed with ``clock`` after an untimed call on two prompts (one-time costs such as
    CUDA library initialisation stay out), and extrapolated to every prompt. None when there
    are fewer than ``min_batches`` batches: a short evaluation needs no estimate, and the
    warm-up would be a large share of it. The scores are not kept: the evaluation itself is
    unchanged."""
    total = len(one_hop_prompts) + len(TWO_HOP_READOUTS) * len(two_hop_prompts)
    if total == 0 or total < min_batches * batch_size:
        return None
    if len(one_hop_prompts) >= len(TWO_HOP_READOUTS) * len(two_hop_prompts):
        prompts, answer, aliases = one_hop_prompts, "object", "object_aliases"
        texts = prompts["prompt"]
    else:
        prompt_col, answer, aliases = TWO_HOP_READOUTS["r2(r1(e1))"]
        prompts = two_hop_prompts
        texts = prompts[prompt_col]
    if max_new_tokens is None:  # as score_prompts bounds the whole set (not the sample)
        max_new_tokens = generation_bound(tokenizer, prompts[answer].unique())
    measured = min(batch_size, len(prompts))

    def score(rows: int) -> None:
        score_prompts(
            model, tokenizer, texts.iloc[:rows].tolist(), prompts[answer].iloc[:rows].tolist(),
            prompts[aliases].iloc[:rows].tolist(), max_new_tokens=max_new_tokens, batch_size=batch_size, mode=mode,
        )

    score(min(2, measured))
    start = clock()
    score(measured)
    return RecallEstimate(prompts=total, measured=measured, seconds_measured=max(clock() - start, 0.0))


def _evaluation_label(model) -> str:
    """``evaluate <folder the model was loaded from>``: the variant's name for a variant
    (data/06_models/variants/gptq_w4_g32), ``base`` for the base model."""
    where = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    name = Path(str(where)).name if where else ""
    return f"evaluate {name}" if name else "evaluate"


def measure_recall(
    model, tokenizer, one_hop_prompts: pd.DataFrame, two_hop_prompts: pd.DataFrame, batch_size: int = 256,
    max_new_tokens: int | None = None, progress: bool = False, mode: EvaluateMode = "generate",
    estimate: bool = True, label: str | None = None, clock: Callable[[], float] = time.perf_counter,
) -> RecallResult:
    """One-hop recall and the two-hop readouts of a model, summarised by
    :func:`summarize_recall`, with the time taken (``eval.seconds``) and the throughput.

    With ``estimate`` and at least :data:`ESTIMATE_MIN_BATCHES` batches of prompts, one line
    first gives the expected time from a measured warm-up (:func:`estimate_recall_seconds`,
    timed with ``clock``): ``evaluate gptq_w4_g32: ~N s for M prompts (measured on the first
    K)``, named ``label`` (default: ``evaluate`` and the folder the model was loaded from).
    The warm-up is not counted in ``eval.seconds``."""
    if estimate:
        guess = estimate_recall_seconds(
            model, tokenizer, one_hop_prompts, two_hop_prompts, batch_size, max_new_tokens, mode, clock=clock
        )
        if guess is not None:
            log.info(guess.line(label or _evaluation_label(model)))
    start = time.perf_counter()
    one_hop = evaluate_one_hop(
        model, tokenizer, one_hop_prompts, batch_size, progress=progress, max_new_tokens=max_new_tokens, mode=mode
    )
    two_hop = evaluate_two_hop(
        model, tokenizer, two_hop_prompts, batch_size, progress=progress, max_new_tokens=max_new_tokens, mode=mode
    )
    seconds = time.perf_counter() - start
    metrics = summarize_recall(one_hop, two_hop, two_hop_prompts)
    metrics["eval.seconds"] = seconds
    metrics["eval.prompts_per_second"] = (len(one_hop) + len(two_hop)) / seconds
    return RecallResult(one_hop, two_hop, metrics)
