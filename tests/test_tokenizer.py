from transformers import AutoTokenizer

from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer


def test_round_trip_offsets_and_reload(tmp_path):
    corpus = generate_world(WorldConfig(n_people=100, n_cities=10, n_countries=4, n_continents=2,
                                        n_companies=5, n_landmarks=10, n_first_names=12,
                                        n_last_names=12, n_place_parts=10)).corpus()
    tok = build_word_tokenizer(corpus)
    for text in corpus[:200]:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert len(ids) == len(text.split()) + 1  # one token a word, plus BOS
    enc = tok(corpus[0], return_offsets_mapping=True)
    words = [corpus[0][a:b] for a, b in enc["offset_mapping"][1:]]
    assert words == corpus[0].split()

    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(corpus[:5])["input_ids"] == tok(corpus[:5])["input_ids"]
    assert reloaded.padding_side == "left"
    assert reloaded("an unseen Word")["input_ids"][1:] == [tok.unk_token_id] * 3
