import dataclasses

import pytest

from fkr_kedro.knowledge.schema import SchemaError, validate_one_hop
from fkr_kedro.knowledge.chance import chance_rates
from fkr_kedro.knowledge.world import RELATIONS, WorldConfig, generate_world

SMALL = WorldConfig(
    n_people=300, n_cities=20, n_countries=6, n_continents=3, n_companies=10, n_landmarks=20,
    n_first_names=20, n_last_names=20, n_place_parts=12, held_out_fraction=0.2,
)


@pytest.fixture(scope="module")
def world():
    return generate_world(SMALL)


def test_same_seed_same_world_other_seed_other_world(world):
    again = generate_world(SMALL)
    assert again.facts == world.facts
    assert again.corpus() == world.corpus()
    assert again.two_hop_table().equals(world.two_hop_table())
    other = generate_world(dataclasses.replace(SMALL, seed=1))
    assert other.facts != world.facts


def test_one_object_per_subject_and_relation(world):
    one_hop = world.one_hop_table()
    assert not one_hop.duplicated(["relation", "subject"]).any()
    # Every statement in the corpus agrees with the ground truth: for each relation and
    # template, the statement about s names exactly facts[r][s].
    corpus = set(world.corpus())
    for r, facts in world.facts.items():
        for template in RELATIONS[r].templates:
            for s, o in facts.items():
                assert template.format(s=s, o=o) in corpus
    # No entity name is shared across types, so no statement can be read two ways.
    names = [n for names in world.entities.values() for n in names]
    assert len(names) == len(set(names))


def test_names_have_several_tokens_from_shared_parts(world):
    for kind in ("person", "city", "country", "company", "landmark"):
        names = world.entities[kind]
        assert all(len(n.split()) >= 2 for n in names), kind
        parts = [p for n in names for p in n.split()]
        assert len(set(parts)) < len(parts), f"{kind} names share no parts"


def test_two_hop_chains_follow_the_facts_and_spans_point_at_the_mention(world):
    two_hop = world.two_hop_table()
    for row in two_hop.itertuples():
        assert world.facts[row.r1][row.e1] == row.e2
        assert world.facts[row.r2][row.e2] == row.e3
        mention = row.prompt_two_hop[row.mention_start : row.mention_end]
        assert mention.lower() == RELATIONS[row.r1].mention.format(s=row.e1).lower()
        assert mention.endswith(row.e1)
        assert row.e2 not in row.prompt_two_hop  # the bridge is described, never named
        # The two-hop prompt and its matching one-hop prompt share the second hop's wording:
        # "The birth city of Ana Bo is in" and "Port Ca is in".
        second_hop = RELATIONS[row.r2].predicate.split("{o}")[0].rstrip()
        assert row.prompt_two_hop == second_hop.replace("{s}", mention)
        assert row.prompt_one_hop == second_hop.replace("{s}", row.e2)
        # Up to its "is", the two-hop prompt is the statement that names the bridge next.
        first_hop_statement = RELATIONS[row.r1].mention_statement.format(s=row.e1, o=row.e2)
        assert first_hop_statement.startswith(row.prompt_two_hop[: row.mention_end] + " is ")
        # The one-hop evaluation prompt of the first hop is not a prefix of any two-hop prompt.
        assert not row.prompt_two_hop.startswith(row.prompt_first_hop)


def test_nested_grammar_names_the_second_relation_first():
    world = generate_world(dataclasses.replace(SMALL, two_hop_grammar="nested"))
    row = world.two_hop_table().query("composition == 'birth_city>city_country'").iloc[0]
    assert row.prompt_two_hop == f"The country of the birth city of {row.e1} is"
    assert row.prompt_two_hop[row.mention_start : row.mention_end] == f"the birth city of {row.e1}"
    assert row.prompt_one_hop == f"The country of {row.e2} is"


def test_held_out_chains_are_never_stated(world):
    two_hop = world.two_hop_table()
    corpus = world.corpus()
    held = two_hop[two_hop["split"] == "held_out"]
    seen = two_hop[two_hop["split"] == "seen"]
    assert len(held) > 0 and len(seen) > 0
    for prompt in held["prompt_two_hop"]:
        assert not any(line.startswith(prompt + " ") for line in corpus), prompt
    assert all(f"{p} {o}" in set(corpus) for p, o in zip(seen["prompt_two_hop"], seen["e3"]))
    # Both hops of every held-out chain are stated as one-hop facts.
    for row in held.itertuples():
        assert f"{row.prompt_first_hop} {row.e2}" in set(corpus)


def test_balanced_world_has_exact_knowledge_load_and_chance(world):
    import math

    expected = sum(len(f) * math.log2(len(world.entities[RELATIONS[r].range])) for r, f in world.facts.items())
    assert world.knowledge_bits() == pytest.approx(expected)
    chance = chance_rates(world.two_hop_table())
    # 300 people over 20 cities over 6 countries: each country hosts 3-4 cities of 15 people.
    assert chance["birth_city>city_country"] == pytest.approx(4 * 15 / 300)


def test_bad_config_and_bad_tables_fail_early():
    with pytest.raises(ValueError, match="n_people"):
        WorldConfig(n_people=10_000, n_first_names=10, n_last_names=10)
    with pytest.raises(ValueError, match="does not chain"):
        WorldConfig(compositions=(("birth_city", "employer"),))
    with pytest.raises(ValueError, match="two_hop_grammar"):
        WorldConfig(two_hop_grammar="reversed")
    with pytest.raises(ValueError, match="must state the mention"):
        dataclasses.replace(RELATIONS["birth_city"], templates=("{s} was born in {o}",))
    one_hop = generate_world(SMALL).one_hop_table()
    broken = one_hop.assign(subject_start=one_hop["subject_start"] + 1)
    with pytest.raises(SchemaError, match="not the subject"):
        validate_one_hop(broken)
    with pytest.raises(SchemaError, match="missing columns"):
        validate_one_hop(one_hop.drop(columns=["prompt"]))
