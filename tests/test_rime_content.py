"""The vocabularies, templates and filler pools have the variety and hygiene the benchmark needs."""

import itertools
import re

import pytest

import rime
from rime.data.content import PRONOUN_SLOTS, PRONOUNS, content, pronouns, prose, render, template_slots
from rwkv_jax.tokenizer import world_tokenizer


def phrases(strings):
    """A case-insensitive pattern matching any of `strings` as whole words."""
    return re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, strings)) + r")(?![\w-])", re.IGNORECASE)


@pytest.fixture(scope="module")
def c():
    return content()


def answers(c):
    """Every string a correct answer could be scored against."""
    found = [v for p in c.properties.values() for v in p.values]
    found += [a for p in c.properties.values() if p.hop for names in p.hop.aliases.values() for a in names]
    return found


def test_properties_have_closed_vocabularies_with_multi_token_values(c):
    assert len(c.properties) >= 10
    tokenizer = world_tokenizer()
    multi_token = [v for p in c.properties.values() for v in p.values if len(tokenizer.encode(" " + v)) > 1]
    multi_word = [v for p in c.properties.values() for v in p.values if re.search(r"[ -]", v)]
    for prop in c.properties.values():
        assert len(prop.values) >= 15 and len(set(prop.values)) == len(prop.values), prop.key
        assert any(re.search(r"[ -]", v) for v in prop.values), prop.key
    assert len(multi_word) >= 40 and len(multi_token) >= 60
    assert {"light blue", "San Francisco", "double bass"} <= {v for p in c.properties.values() for v in p.values}


def test_no_value_or_alias_contains_another(c):
    # substring scoring must never confuse two answers, across every property
    values = [v for p in c.properties.values() for v in p.values]
    for a, b in itertools.combinations(values, 2):
        assert a.lower() not in b.lower() and b.lower() not in a.lower(), (a, b)
    for prop in c.properties.values():
        if prop.hop:
            for t1, t2 in itertools.combinations(prop.hop.aliases, 2):
                for a, b in itertools.product(prop.hop.aliases[t1], prop.hop.aliases[t2]):
                    assert a.lower() not in b.lower() and b.lower() not in a.lower(), (a, b)


def test_hop_maps_cover_their_values_and_have_alias_sets(c):
    hops = [p for p in c.properties.values() if p.hop]
    assert {p.key for p in hops} >= {"city", "pet", "instrument", "job"}
    for prop in hops:
        assert set(prop.hop.target_of) == set(prop.values)
        assert len(set(prop.hop.target_of.values())) >= 4
        assert any(len(names) > 1 for names in prop.hop.aliases.values())
        assert len(prop.hop.queries) >= 3


def test_names_are_many_distinct_and_hide_no_answer(c):
    names = [n.lower() for n in c.names]
    assert len(names) >= 300 and len(set(names)) == len(names)
    for a, b in itertools.combinations(names, 2):
        assert a not in b and b not in a, (a, b)
    for answer in answers(c):
        assert not any(answer.lower() in name for name in names), answer


def test_templates_offer_several_phrasings_of_every_kind(c):
    for prop in c.properties.values():
        assert len(prop.queries) >= 3 and len(prop.facts) >= 3 and len(prop.edits) >= 3
        assert len(prop.conflict_edits) >= 3 and len(prop.updates) >= 2
        assert not set(prop.facts) & set(prop.edits)


def test_scenes_are_disjoint_and_state_no_facts(c):
    recipient = {s.name for s in c.recipient_scenes}
    edit = {s.name for s in c.edit_scenes}
    assert len(recipient) >= 8 and len(edit) >= 8 and not recipient & edit
    facts, names = phrases(answers(c)), phrases(c.names)
    for scene in (*c.recipient_scenes, *c.edit_scenes):
        for sentence in (*scene.intros, *scene.details, *scene.closings):
            assert not facts.search(sentence) and not names.search(sentence), sentence


def test_filler_pools_are_large_distinct_and_never_name_anyone(c):
    neutral = c.neutral_fillers
    adversarial = [f for pool in c.adversarial_fillers.values() for f in pool]
    facts, names = phrases(answers(c)), phrases(c.names)
    for pool in (neutral, adversarial):
        assert len(pool) >= 100 and len({f.user for f in pool}) == len(pool)
        for f in pool:
            assert f.user.strip() and f.assistant.strip() and "\n" not in f.user + f.assistant
            assert not names.search(f"{f.user} {f.assistant}"), f
    for f in neutral:  # neutral turns stay off every property's answers
        assert not facts.search(f"{f.user} {f.assistant}"), f
    assert set(c.adversarial_fillers) == set(c.properties)
    assert all(len(pool) >= rime.MAX_FILLER_TURNS + 4 for pool in c.adversarial_fillers.values())


def test_pronoun_wordings_need_a_pronoun_and_stay_out_of_the_benchmark(c):
    template = "{name} grew up in {old}. {Subj} lives in {value} now."
    assert render(template, "Ana", "Lyon", "Oslo", pronoun="she") == "Ana grew up in Oslo. She lives in Lyon now."
    assert render(template, "Bo", "Lyon", "Oslo", pronoun="he").endswith("He lives in Lyon now.")
    with pytest.raises(ValueError, match="pronoun"):
        render(template, "Ana", "Lyon", "Oslo")
    benchmark = [t for p in c.properties.values() for kind in ("facts", "updates", "queries", "edits", "conflict_edits")
                 for t in getattr(p, kind)]
    assert not any(template_slots(t) & PRONOUN_SLOTS for t in benchmark)
    assert any(template_slots(t) & PRONOUN_SLOTS for p in prose().properties.values() for t in p.updates)
    one = pronouns(7)
    assert {one("Ana") for _ in range(3)} == {one("Ana")}
    assert {pronouns(seed)("Ana") for seed in range(40)} == set(PRONOUNS)
