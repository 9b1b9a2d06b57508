"""The training corpus: G1 chat format, correct answers (latest value wins), coverage of every
dialogue ingredient, determinism, and no dev/test text ever emitted."""

import itertools
import random
import re

import pytest

import rime
from rime.chat import chat_text, dialogues
from rime.data.content import content, prose
from rime.data.corpus import MIXES, sample_dialogue
from rwkv_jax.chat import turn

TURN = re.compile(r"(User|Assistant): (.*?)\n\n", re.DOTALL)


def parse(text):
    """The dialogue's turns, asserting the text is nothing but well-formed G1 turns."""
    turns = TURN.findall(text)
    assert "".join(turn(role.lower(), body) for role, body in turns) == text
    assert [r for r, _ in turns] == ["User", "Assistant"] * (len(turns) // 2)
    return [(r.lower(), body) for r, body in turns]


def phrases(strings):
    """A pattern matching any of `strings` as whole words."""
    return re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, strings)) + r")(?![\w-])")


NAMES = phrases(content().names)
VALUES = {key: phrases(prop.values) for key, prop in content().properties.items()}


@pytest.fixture(scope="module")
def sample():
    return list(itertools.islice(dialogues(seed=0), 400))


@pytest.fixture(scope="module")
def wide():
    rng = random.Random("wide")
    return [chat_text(sample_dialogue(rng, MIXES["wide"])) for _ in range(400)]


def owner_of(answer):
    """(property, is_hop) whose answer `answer` is; values and hop targets are unique."""
    found = []
    for prop in content().properties.values():
        if answer in prop.values:
            found.append((prop, False))
        if prop.hop and answer in prop.hop.aliases:
            found.append((prop, True))
    assert len(found) == 1, answer
    return found[0]


LIST_ITEM = re.compile(r", (?!and so )")  # "X is a V, and so is Y" gives both the value
PRONOUN = re.compile(r"\b(?:[Ss]he|[Hh]e|her|his|him)\b")


def latest_value(turns, name, prop):
    """The value of `prop` last stated for `name`: in the latest sentence naming both, the value
    mentioned last (updates name the old value before the new one). A list names several people in
    one sentence, one item per comma, unless its last item is "and so is Y". A sentence that names
    nobody but has a pronoun is about the one person the sentence before it named, even across a
    turn."""
    latest, last_named = None, []
    for role, text in turns:
        if role != "user":
            continue
        sentences = re.split(r"(?<=[.?!]) ", text)
        parts = (LIST_ITEM.split(s) if len(NAMES.findall(s)) > 1 else [s] for s in sentences)
        for sentence in itertools.chain.from_iterable(parts):
            named = NAMES.findall(sentence)
            if not named and PRONOUN.search(sentence) and len(last_named) == 1:
                named = last_named
            stated = VALUES[prop.key].findall(sentence)
            if stated and name in named:
                latest = stated[-1]
            last_named = named
    return latest


def test_dialogues_are_g1_chat_text_built_from_turns(sample):
    for text in sample[:100]:
        turns = parse(text)
        assert len(turns) >= 4 and turns[-1][0] == "assistant"


@pytest.fixture(scope="module")
def updates():
    rng = random.Random("wide-updates")
    return [chat_text(sample_dialogue(rng, MIXES["wide-updates"])) for _ in range(400)]


@pytest.mark.parametrize("mix", ["sample", "wide", "updates"])
def test_every_answer_is_the_latest_bound_value_or_its_one_hop_answer(mix, request):
    asked = hop_asked = 0
    for text in request.getfixturevalue(mix):
        turns = parse(text)
        for i in range(0, len(turns), 2):
            (_, question), (_, answer) = turns[i], turns[i + 1]
            named = NAMES.findall(question)
            if not question.endswith("?") or not named:
                continue
            assert len(named) == 1, question
            prop, hop = owner_of(answer)
            value = latest_value(turns[:i], named[0], prop)
            assert value is not None, (question, answer)
            assert (prop.hop.target_of[value] if hop else value) == answer, (text, question)
            asked += 1
            hop_asked += hop
    assert asked >= 400 and hop_asked >= 20


def test_corpus_covers_every_ingredient(sample):
    c = content()
    fillers = {f.user for f in c.neutral_fillers} | {f.user for p in c.adversarial_fillers.values() for f in p}
    seen = set()
    for text in sample:
        turns = parse(text)
        users = [t for r, t in turns if r == "user"]
        if any(t.startswith(tuple(c.time_phrases)) for t in users):
            seen.add("overwrite")
        if any(re.match(r"^\w+'s [a-z ]+ is (now )?[\w -]+\.$", t) for t in users):
            seen.add("canonical statement")
        if any(t.startswith(tuple(c.short_edit_prefixes)) for t in users):
            seen.add("short statement")
        if any(t.startswith(tuple(i for s in c.edit_scenes for i in s.intros)) for t in users):
            seen.add("narrative statement")
        if any(re.search(r"\b(now|no longer|these days)\b", t) for t in users):
            seen.add("conflict marker")
        if any(t in fillers for t in users[1:]):
            seen.add("filler")
        first = users[0]
        if len(set(NAMES.findall(first))) >= 4:
            seen.add("many people")
        if sum(bool(pattern.search(first)) for pattern in VALUES.values()) >= 3:
            seen.add("several properties")
    assert seen == {"overwrite", "canonical statement", "short statement", "narrative statement",
                    "conflict marker", "filler", "many people", "several properties"}


def test_bindings_vary_between_dialogues(sample):
    firsts = [parse(t)[0][1] for t in sample]
    assert len(set(firsts)) == len(firsts)
    names = {n for t in sample[:50] for n in NAMES.findall(parse(t)[0][1])}
    assert len(names) >= 100


def test_same_seed_same_corpus_other_seed_differs(sample):
    again = list(itertools.islice(dialogues(seed=0), 20))
    assert again == sample[:20]
    other = list(itertools.islice(dialogues(seed=1), 20))
    assert not set(other) & set(sample[:20])


def test_dev_and_test_texts_never_appear(sample):
    held_out = rime.held_out_texts([*rime.load("test"), *rime.load("dev")])
    assert len(held_out) > 1000
    for text in sample:
        users = {t for r, t in parse(text) if r == "user"}
        assert not users & held_out


def test_excluded_texts_are_filtered_out():
    first_run = list(itertools.islice(rime.dialogue_turns(seed=7, exclude=frozenset()), 30))
    passages = frozenset(turns[0][1] for turns in first_run)
    filtered = list(itertools.islice(rime.dialogue_turns(seed=7, exclude=passages), 30))
    assert not {t for turns in filtered for r, t in turns if r == "user"} & passages


def test_vocabulary_lists_every_word_of_cases_and_dialogues(sample):
    vocabulary = rime.vocabulary()
    word = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")
    used = {w for text in sample for w in word.findall(text)}
    for case in rime.load("test"):
        texts = [*case.recipient.passages, *case.queries, *(p.query for p in case.probe_queries),
                 *(t for step in case.edit_steps() for e in step for t in (e.source, e.dst))]
        used |= {w for t in texts for w in word.findall(t)}
    assert used <= vocabulary, sorted(used - vocabulary)
    assert len(vocabulary) < 5000


def test_training_corpus_draws_from_the_callers_rng_and_cuts_questions_before_the_answer():
    import random

    from rime.chat import TrainingCorpus

    corpus = TrainingCorpus(exclude=frozenset())
    assert corpus.dialogue(random.Random(3)) == corpus.dialogue(random.Random(3))
    assert corpus.dialogue(random.Random(3)) != corpus.dialogue(random.Random(4))
    for prompt, answer in corpus.questions(random.Random(5), 20):
        assert prompt.endswith("\n\nAssistant:") and prompt.startswith("User: ")
        assert answer and "\n" not in answer
        # the full dialogue is the prompt plus the answer turn
        assert (prompt + " " + answer + "\n\n").count("Assistant:") == prompt.count("Assistant:")


def test_training_corpus_skips_excluded_dialogues():
    import random

    from rime.chat import TrainingCorpus

    first = TrainingCorpus(exclude=frozenset()).dialogue(random.Random(9))
    passage = first.split("\n\n")[0].removeprefix("User: ")
    assert passage not in TrainingCorpus(exclude=frozenset({passage})).dialogue(random.Random(9))


def test_binding_mix_asks_the_people_who_do_not_hold_the_shared_value():
    import random

    from rime.data import corpus

    asked = 0
    for seed in range(200):
        d = corpus._Dialogue(random.Random(seed), corpus.Mix(shared_value=1.0, ask_unique=1.0))
        corpus._open(d)
        if len(d.names()) < 3:
            assert not d.unique
            continue
        main = d.unique[0][1]
        before = len(d.messages)
        corpus._question(d)
        question, answer = d.messages[before][1], d.messages[before + 1][1]
        asked += 1
        who = next(name for name, _ in d.unique if name in question)
        hop = content().properties[main].hop
        assert answer in (d.facts[who, main], hop.target_of[d.facts[who, main]] if hop else None)
    assert asked > 50


def test_ask_main_asks_everyone_holding_the_main_property():
    import random

    from rime.data import corpus

    positions = set()
    for seed in range(200):
        d = corpus._Dialogue(random.Random(seed), corpus.Mix(ask_main=1.0))
        corpus._open(d)
        holders = [name for name, key in d.facts if key == d.main]
        if len(holders) < 2:
            continue
        before = len(d.messages)
        corpus._question(d)
        question, answer = d.messages[before][1], d.messages[before + 1][1]
        who = next(name for name in holders if name in question)
        hop = content().properties[d.main].hop
        assert answer in (d.facts[who, d.main], hop.target_of[d.facts[who, d.main]] if hop else None)
        positions.add(holders.index(who))
    assert positions == set(range(5))


def test_roll_call_asks_every_holder_of_the_main_property_once():
    import random

    from rime.data import corpus

    for seed in range(30):
        rng = random.Random(seed)
        messages = corpus.sample_dialogue(rng, corpus.Mix(roll_call=1.0))
        d = corpus._Dialogue(random.Random(seed), corpus.Mix(roll_call=1.0))
        corpus._open(d)
        holders = {name: d.facts[name, d.main] for name, key in d.facts if key == d.main}
        opening = len(d.messages)
        call = messages[opening:opening + 2 * len(holders)]
        asked = [next(n for n in holders if n in q) for (_, q), _ in zip(call[::2], call[1::2], strict=True)]
        assert sorted(asked) == sorted(holders)
        assert [a for _, a in call[1::2]] == [holders[n] for n in asked]


def test_drill_asks_holders_of_the_main_property_with_replacement():
    import random

    from rime.data import corpus

    repeated = 0
    for seed in range(60):
        messages = corpus.sample_dialogue(random.Random(seed), corpus.Mix(drill=1.0))
        d = corpus._Dialogue(random.Random(seed), corpus.Mix(drill=1.0))
        corpus._open(d)
        holders = {name: d.facts[name, d.main] for name, key in d.facts if key == d.main}
        drill = messages[len(d.messages):]
        assert len(drill) == 2 * (2 * len(holders) + 1)
        asked = [next(n for n in holders if n in q) for (_, q), _ in zip(drill[::2], drill[1::2], strict=True)]
        assert [a for _, a in drill[1::2]] == [holders[n] for n in asked]
        repeated += len(set(asked)) < len(asked)
    assert repeated == 60  # 2k + 1 draws from k holders always repeat someone


def test_plain_passages_state_only_the_main_property_of_two_to_five_people():
    import random

    from rime.data import corpus

    mix = corpus.MIXES["plain-drill"]
    for seed in range(60):
        d = corpus._Dialogue(random.Random(seed), mix)
        corpus._open(d)
        holders = d.holders()
        assert 2 <= len(holders) <= 5 and len(d.facts) == len(holders)
        (role, passage), _ = d.messages  # one bare passage and its acknowledgement: no updates
        assert role == "user" and all(name in passage for name in holders)
        others = [n for n in content().names if n not in holders and re.search(rf"\b{n}\b", passage)]
        assert not others
        sentences = re.split(r"(?<=[.!?]) (?=[A-Z])", passage)
        assert len(sentences) == len(holders)  # no scene intro, detail or closing


def test_rosters_and_recitals_put_each_value_right_after_its_name():
    import random

    from rime.data import corpus

    mix = corpus.MIXES["roster-drill"]
    rosters = recitals = 0
    for seed in range(80):
        messages = corpus.sample_dialogue(random.Random(seed), mix)
        d = corpus._Dialogue(random.Random(seed), mix)
        corpus._open(d)
        holders, label = d.holders(), content().properties[d.main].label
        value = {name: d.facts[name, d.main] for name in holders}
        passage = messages[0][1]
        if passage.startswith("The "):
            rosters += 1
            listed = passage.removeprefix(f"The {label} of each person: ").removesuffix(".").split(", ")
            assert listed == [f"{name} {value[name]}" for name in holders]
        asked, replies = [q for _, q in messages[2::2]], [a for _, a in messages[3::2]]
        if asked[0].startswith("What is the "):
            recitals += 1
            assert len(asked) == 2
            for question, reply in zip(asked, replies):
                order = re.findall(r"[A-Z]\w+", question.removeprefix("What is the "))
                assert sorted(order) == sorted(holders)
                assert reply == ", ".join(f"{name} {value[name]}" for name in order)
        else:
            assert len(asked) == 2 * len(holders) + 1
            for question, reply in zip(asked, replies):
                (name,) = [n for n in holders if re.search(rf"\b{n}\b", question)]
                assert reply == value[name]
    assert 20 <= rosters <= 60 and 20 <= recitals <= 60  # about half of each


def test_default_mix_never_asks_by_uniqueness_or_main_property():
    import random

    from rime.data import corpus

    default = corpus.MIXES["default"]
    assert (default.ask_unique, default.ask_main, default.recent, default.roll_call, default.drill,
            default.plain, default.roster, default.recital) == (0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0)
    first = [corpus.sample_dialogue(random.Random(s)) for s in range(20)]
    assert first == [corpus.sample_dialogue(random.Random(s), corpus.Mix()) for s in range(20)]


def test_prose_widens_every_property_after_the_benchmarks_own_wordings():
    for key, prop in content().properties.items():
        wide = prose().properties[key]
        for kind in ("facts", "updates", "queries"):
            ours, theirs = getattr(prop, kind), getattr(wide, kind)
            assert theirs[:len(ours)] == ours and len(theirs) >= len(ours) + 5, (key, kind)
            assert not any("{label}" in t for t in theirs)
        assert (wide.edits, wide.conflict_edits, wide.values) == (prop.edits, prop.conflict_edits, prop.values)


def test_the_wide_mix_has_prose_openings_lists_and_sessions(wide):
    p = prose()
    intros, lists = tuple(p.intros), tuple(t.split("{")[0] for t in p.lists if not t.startswith("{"))
    seen = set()
    for text in wide:
        users = [t for r, t in parse(text) if r == "user"]
        seen |= {"opening"} if users[0].startswith(intros) else set()
        seen |= {"list"} if users[0].startswith(lists) or re.match(r"^[A-Z][a-z ]+ by person: ", users[0]) else set()
        people = [t for t in users if len(set(NAMES.findall(t))) == 1 and not t.endswith("?")]
        if len(people) >= 3 and len({NAMES.findall(t)[0] for t in people[:3]}) == 3:
            seen.add("session")
    assert seen == {"opening", "list", "session"}


def test_the_default_mix_never_speaks_prose(sample):
    benchmark = {t for prop in content().properties.values() for t in prop.queries}
    extra = {t for prop in prose().properties.values() for t in prop.queries} - benchmark
    asked = {body for text in sample for role, body in parse(text) if role == "user" and body.endswith("?")}
    names = [n for n in content().names]
    templates = {re.sub("|".join(map(re.escape, names)), "{name}", q) for q in asked}
    assert not templates & extra


def test_prose_updates_refer_back_by_pronoun_consistently_and_across_turns(updates):
    """A pronoun sentence follows one naming its person; each dialogue gives a person one pronoun,
    and no name is tied to a pronoun across dialogues."""
    gender = {"she": "she", "her": "she", "he": "he", "his": "he", "him": "he"}
    across_turns = within_turn = 0
    used_for = {}  # name -> pronouns over all dialogues
    for text in updates:
        told = {}  # name -> pronouns in this dialogue
        previous = ""
        for sentence in (s for r, t in parse(text) if r == "user" for s in re.split(r"(?<=[.?!]) ", t)):
            words = {gender[w.lower()] for w in PRONOUN.findall(sentence)}
            named = set(NAMES.findall(sentence)) or set(NAMES.findall(previous))
            if words and len(named) == 1:
                told.setdefault(named.pop(), set()).update(words)
            previous = sentence
        for name, said in told.items():
            assert len(said) == 1, (name, said, text)
            used_for.setdefault(name, set()).update(said)
        users = [t for r, t in parse(text) if r == "user"]
        across_turns += sum(bool(re.match(r"(She|He) ", t)) and not NAMES.search(t) for t in users)
        within_turn += sum(bool(re.search(r"\. (She|He) ", t)) for t in users)
    assert across_turns >= 8 and within_turn >= 8
    assert sum(len(s) == 2 for s in used_for.values()) >= 8


def test_prose_passages_state_two_people_sharing_a_value_in_one_sentence(updates):
    both = [s for text in updates for r, t in parse(text) if r == "user" for s in re.split(r"(?<=[.?!]) ", t)
            if len(set(NAMES.findall(s))) == 2 and re.search(r" both | and so | each | same | matching ", s)]
    assert len(both) >= 8
