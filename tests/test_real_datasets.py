"""Readers of the real datasets: LRE (one-hop) and TwoHopFact (two-hop) into the shared schema."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from fkr_kedro.knowledge.lre import LREFormatError, read_lre
from fkr_kedro.knowledge.schema import ONE_HOP_COLUMNS, TWO_HOP_COLUMNS, validate_one_hop, validate_two_hop
from fkr_kedro.knowledge.twohopfact import TwoHopFactFormatError, read_twohopfact
from conftest import TEST_DATA

# The LRE copy that sits beside the project checkout (../shared/data/lre), or FKR_LRE_DIR.
LRE_DIR = Path(os.environ.get("FKR_LRE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "lre"))
FIXTURE = Path(__file__).parent / "fixtures" / "twohopfact_sample.csv"

needs_lre = pytest.mark.skipif(not LRE_DIR.is_dir(), reason=f"LRE data folder {LRE_DIR} does not exist")


def _bpe(texts, trim_offsets: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style leading-space tokens), trained locally: no download."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def _word_level(texts) -> PreTrainedTokenizerFast:
    """Whitespace-split words: "Bob's" is one token, so "Bob" ends inside it."""
    vocab = {"<unk>": 0}
    for t in texts:
        for w in t.split():
            vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def _samples(folder: Path) -> dict[str, int]:
    return {p.stem: len(json.loads(p.read_text())["samples"]) for p in folder.rglob("*.json")}


def _write(folder: Path, name: str, data, sub: str = "factual") -> Path:
    path = folder / sub / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# ---------------------------------------------------------------------------- LRE, real data


@pytest.fixture(scope="module")
def lre_report():
    if not LRE_DIR.is_dir():
        pytest.skip(f"LRE data folder {LRE_DIR} does not exist")
    return read_lre(LRE_DIR)


@needs_lre
def test_lre_reads_every_file_and_counts_every_fact(lre_report):
    counts = lre_report.counts.set_index("relation")
    expected = _samples(LRE_DIR)
    assert set(counts.index) == set(expected)
    assert counts["facts"].to_dict() == expected
    assert counts["facts"].sum() == sum(expected.values())
    # Every sample is an exact duplicate, a row's object or one of its aliases.
    one_hop = lre_report.one_hop
    objects = one_hop.groupby("relation")["object_aliases"].agg(lambda s: sum(len(a) for a in s))
    for rel, row in counts.iterrows():
        assert row["unique_subjects"] == row["placed"] + row["unplaced"]
        assert row["facts"] == row["exact_duplicates"] + objects.get(rel, 0)
    assert counts["unplaced"].sum() == 0 and lre_report.unplaced.empty
    assert set(counts["relation_type"]) == {"bias", "commonsense", "factual", "linguistic"}


@needs_lre
def test_lre_spans_point_at_subjects(lre_report):
    df = lre_report.one_hop
    assert list(df.columns[: len(ONE_HOP_COLUMNS)]) == ONE_HOP_COLUMNS
    validate_one_hop(df)
    for row in df.itertuples():
        assert row.prompt[row.subject_start : row.subject_end] == row.subject
        assert row.object == row.object_aliases[0]
    assert not df.duplicated(["relation", "subject"]).any()
    capital = df[(df.relation == "country_capital_city") & (df.subject == "France")].iloc[0]
    assert capital.prompt == "The capital city of France is" and capital.object == "Paris"


@needs_lre
def test_lre_one_to_many_subjects_keep_all_objects(lre_report):
    df = lre_report.one_hop
    gl = df[(df.relation == "superhero_person") & (df.subject == "Green Lantern")].iloc[0]
    assert gl.object == "Hal Jordan" and len(gl.object_aliases) == 5 and gl.n_objects == 5
    counts = lre_report.counts.set_index("relation")
    assert counts.loc["superhero_person", "one_to_many_subjects"] == (
        df[df.relation == "superhero_person"].n_objects > 1
    ).sum() > 0


@needs_lre
def test_lre_filters_and_template_index():
    factual = read_lre(LRE_DIR, relation_types=["factual"], template_index=1)
    assert set(factual.counts["relation_type"]) == {"factual"}
    c = factual.counts.set_index("relation")
    # Relations with a single template cannot use index 1: all their rows are unplaced.
    assert c.loc["person_father", "placed"] == 0
    assert c.loc["person_father", "unplaced"] == c.loc["person_father", "unique_subjects"]
    assert (factual.unplaced.reason == "no template at index 1").sum() == c["unplaced"].sum()
    row = factual.one_hop[(factual.one_hop.relation == "country_capital_city")].iloc[0]
    assert row.prompt.startswith("The capital of ")
    with pytest.raises(ValueError, match="no LRE relation"):
        read_lre(LRE_DIR, relation_types=["nonsense"])


@needs_lre
def test_lre_bpe_placement_counts_add_up(lre_report):
    tok = _bpe(lre_report.one_hop["prompt"].tolist())
    report = read_lre(LRE_DIR, tokenizer=tok)
    c = report.counts
    assert (c["placed"] + c["unplaced"] == c["unique_subjects"]).all()
    assert c["placed"].sum() == len(report.one_hop)
    assert c["unplaced"].sum() == len(report.unplaced)
    assert c["facts"].sum() == lre_report.counts["facts"].sum()
    # Placed subjects really sit on token boundaries (leading-space tokens start one early).
    sample = report.one_hop.sample(n=min(300, len(report.one_hop)), random_state=0)
    enc = tok(sample["prompt"].tolist(), return_offsets_mapping=True)
    for row, offsets in zip(sample.itertuples(), enc["offset_mapping"]):
        starts = {s for s, e in offsets}
        ends = {e for s, e in offsets}
        assert row.subject_start in starts or row.subject_start - 1 in starts
        assert row.subject_end in ends


# ------------------------------------------------------------------------ LRE, synthetic files


def _good(subjects=(("France", "Paris"),), templates=("The capital city of {} is",)):
    return {
        "name": "country capital city",
        "prompt_templates": list(templates),
        "properties": {"relation_type": "factual", "domain_name": "country", "range_name": "city", "symmetric": False},
        "samples": [{"subject": s, "object": o} for s, o in subjects],
    }


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "invalid JSON"),
        ({k: v for k, v in _good().items() if k != "samples"}, "missing keys \\['samples'\\]"),
        ({k: v for k, v in _good().items() if k != "prompt_templates"}, "missing keys \\['prompt_templates'\\]"),
        ({**_good(), "samples": [{"subject": "France"}]}, "sample 0 lacks \\['object'\\]"),
        ({**_good(), "samples": [{"object": "Paris"}]}, "sample 0 lacks \\['subject'\\]"),
        ({**_good(), "prompt_templates": []}, "prompt_templates"),
        ([1, 2], "not an object"),
    ],
)
def test_malformed_lre_files_name_the_file(tmp_path, content, problem):
    _write(tmp_path, "fine", _good())
    bad = _write(tmp_path, "broken_relation", content)
    with pytest.raises(LREFormatError, match=problem) as info:
        read_lre(tmp_path)
    assert str(bad) in str(info.value)


def test_missing_lre_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_lre(tmp_path / "nope")


def test_lre_unplaced_are_reported_not_dropped(tmp_path):
    _write(tmp_path, "capital", _good([("France", "Paris"), ("Peru", "Lima"), ("France", "Paris")]))
    _write(tmp_path, "no_slot", _good([("A", "b")], templates=("no slot here",)), sub="linguistic")
    _write(tmp_path, "two_slots", _good([("A", "b")], templates=("{} and {}",)), sub="linguistic")
    _write(tmp_path, "father", _good([("Bob", "Tom"), ("Ann", "Joe"), ("Ann", "Jim")], templates=("{}'s father is",)))
    _write(tmp_path, "mother", _good([("Stevie Wonder", "Lula")], templates=("The mother of {} is",)))

    plain = read_lre(tmp_path)
    c = plain.counts.set_index("relation")
    assert c.loc["capital", ["facts", "exact_duplicates", "unique_subjects", "placed"]].tolist() == [3, 1, 2, 2]
    assert c.loc["no_slot", "unplaced"] == 1 and c.loc["two_slots", "unplaced"] == 1
    assert set(plain.unplaced.relation) == {"no_slot", "two_slots"}
    assert plain.unplaced.reason.str.contains("slots, not 1").all()
    ann = plain.one_hop[plain.one_hop.subject == "Ann"].iloc[0]
    assert ann.object == "Joe" and ann.object_aliases == ["Joe", "Jim"]
    assert c.loc["father", "one_to_many_subjects"] == 1 and c.loc["father", "placed"] == 2

    # Word-level tokens: "Bob's" is one token, so "Bob" does not end on a token boundary.
    words = _word_level(plain.one_hop["prompt"])
    tok_report = read_lre(tmp_path, tokenizer=words)
    c = tok_report.counts.set_index("relation")
    assert c.loc["father", "placed"] == 0 and c.loc["father", "unplaced"] == 2
    assert c.loc["capital", "placed"] == 2 and c.loc["mother", "placed"] == 1
    assert (c["placed"] + c["unplaced"] == c["unique_subjects"]).all()
    assert tok_report.unplaced[tok_report.unplaced.relation == "father"].reason.str.contains("end not on").all()

    # Byte-level BPE with untrimmed offsets: " Stevie" starts one character early, still placed.
    bpe = _bpe(["The mother of Stevie Wonder is"] * 5, trim_offsets=False)
    enc = bpe("The mother of Stevie Wonder is", return_offsets_mapping=True)
    assert 13 in {s for s, e in enc["offset_mapping"]}  # the leading space of " Stevie"
    assert read_lre(tmp_path, tokenizer=bpe).counts.set_index("relation").loc["mother", "placed"] == 1


# ------------------------------------------------------------------------------- TwoHopFact


def test_twohopfact_fixture_chains():
    table = read_twohopfact(FIXTURE)
    chains, rejected = table
    assert list(chains.columns[: len(TWO_HOP_COLUMNS)]) == TWO_HOP_COLUMNS
    validate_two_hop(chains)
    assert len(chains) + len(rejected) == len(pd.read_csv(FIXTURE))
    assert (chains["split"] == "held_out").all()
    mentions = {r.e1: r.prompt_two_hop[r.mention_start : r.mention_end] for r in chains.itertuples()}
    assert mentions == {
        "Superstition": "the singer of 'Superstition'",
        "Inception": "the director of Inception",
        "Apple": "The CEO of Apple",
        "Hamlet": "the author of Hamlet",
        "Paris": "the country of Paris",
    }
    s = chains.set_index("e1").loc["Superstition"]
    assert (s.r1, s.r2, s.e2, s.e3) == ("song_singer", "person_mother", "Stevie Wonder", "Lula Mae Hardaway")
    assert s.composition == "song_singer>person_mother"
    assert s.prompt_one_hop == "The mother of Stevie Wonder is"
    assert s.prompt_first_hop == "The singer of 'Superstition' is"
    assert s.e2_aliases == ["Stevie Wonder", "Stevland Hardaway Morris", "Little Stevie Wonder"]
    assert chains.set_index("e1").loc["Paris"].e3_aliases == ["Euro", "euro", "EUR"]  # JSON list
    hamlet = chains.set_index("e1").loc["Hamlet"]  # no r1.type / r2.type: derived from the prompts
    assert (hamlet.r1, hamlet.r2) == ("the author of {}", "The spouse of {} is")
    assert hamlet.prompt_first_hop == ""


def test_twohopfact_malformed_rows_are_rejected_with_reason():
    rejected = read_twohopfact(FIXTURE).rejected
    reasons = dict(zip(rejected.e1, rejected.reason))
    assert set(reasons) == {"Titanic", "Avatar"}
    assert "not a prefix" in reasons["Titanic"]
    assert "unparsable aliases" in reasons["Avatar"]


def test_twohopfact_missing_columns(tmp_path):
    df = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    path = tmp_path / "bad.csv"
    df.drop(columns=["e3.value", "r2(r1(e1)).subject_cut.prompt"]).to_csv(path, index=False)
    with pytest.raises(TwoHopFactFormatError, match="e3.value") as info:
        read_twohopfact(path)
    assert "r2(r1(e1)).subject_cut.prompt" in str(info.value)
    with pytest.raises(ValueError, match="split"):
        read_twohopfact(FIXTURE, split="train")


# ------------------------------------------------------------------------------ downloads


def test_datasets_are_fetched_by_url_only_when_missing(tmp_path):
    from fkr_kedro.knowledge.download import DatasetUnavailableError, fetch_file, fetch_zip_folder

    # An LRE-shaped archive (the authors' repository zip: relations-main/data/<type>/<name>.json).
    archive = tmp_path / "relations.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("relations-main/README.md", "not data")
        z.writestr("relations-main/data/factual/capital.json", json.dumps(
            {"name": "capital", "prompt_templates": ["The capital of {} is"], "samples": [{"subject": "France", "object": "Paris"}]}
        ))
    folder = fetch_zip_folder(tmp_path / "01_raw" / "lre", archive.as_uri(), "relations-main/data", "LRE relations")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == ["factual/capital.json"]
    assert read_lre(folder).counts["facts"].tolist() == [1]
    csv_path = fetch_file(tmp_path / "01_raw" / "TwoHopFact.csv", FIXTURE.as_uri(), "TwoHopFact CSV")
    assert csv_path.read_bytes() == FIXTURE.read_bytes()
    # Present: never fetched again (the URL is not even tried).
    assert fetch_file(csv_path, "http://127.0.0.1:9/unused.csv", "TwoHopFact CSV") == csv_path
    # Missing and unreachable: a clear error naming where to put a copy; nothing left behind.
    with pytest.raises(DatasetUnavailableError, match=r"downloading it from http://127.0.0.1:9/x.zip failed .*copy the data to"):
        fetch_zip_folder(tmp_path / "other" / "lre", "http://127.0.0.1:9/x.zip", "data", "LRE relations")
    assert not (tmp_path / "other" / "lre").exists()
    with pytest.raises(DatasetUnavailableError, match="no URL is configured"):
        fetch_file(tmp_path / "absent.csv", None, "TwoHopFact CSV")


@needs_lre
@pytest.mark.slow
def test_lre_alone_runs_offline_on_the_test_model(kedro_project):
    """knowledge.one_hop: lre with no two-hop source: the prompts come from the local LRE
    copy only (no URL to fall back on), and the test model trains and is measured on them."""
    from conftest import run_kedro

    params = {
        "knowledge": {"source": None, "one_hop": "lre", "two_hop": "none"},
        "lre": {"path": str(LRE_DIR), "url": None, "place_on_tokens": False},
        "evaluation_sample": {"max_per_relation": 3},
        "training": {"steps": 30, "warmup_steps": 5},  # what is tested is the plumbing, not recall
    }
    run_kedro(kedro_project, pipeline="data_prep", params=params)
    run_kedro(kedro_project, pipeline="train", params=params)

    one_hop = pd.read_parquet(kedro_project / TEST_DATA / "05_model_input/one_hop_prompts.parquet")
    two_hop = pd.read_parquet(kedro_project / TEST_DATA / "05_model_input/two_hop_prompts.parquet")
    lre = read_lre(LRE_DIR, ["factual", "commonsense", "linguistic", "bias"])
    assert set(one_hop["relation"]) == set(lre.one_hop["relation"])
    assert one_hop.groupby("relation").size().max() == 3
    assert two_hop.empty and list(two_hop.columns)[: len(TWO_HOP_COLUMNS)] == TWO_HOP_COLUMNS
    summary = json.loads((kedro_project / TEST_DATA / "02_intermediate/world_summary.json").read_text())
    assert summary["source"].startswith("LRE") and summary["source"].endswith("(one-hop only)")
    metrics = json.loads((kedro_project / TEST_DATA / "08_reporting/training_metrics.json").read_text())
    # Measured on every LRE relation sampled, and on no two-hop chain.
    per_relation = {k.removeprefix("one_hop.accuracy.") for k in metrics
                    if k.startswith("one_hop.accuracy.") and not k.endswith("_stderr")}
    assert per_relation == set(one_hop["relation"]) and not any(k.startswith("two_hop") for k in metrics)
