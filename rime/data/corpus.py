"""An unlimited training corpus for the bundled model, written with the benchmark's own templates.

Each dialogue draws fresh bindings (people, properties, values), so no binding can be memorised; the
model can only score by reading the passage. A dialogue opens with a recipient (one to five people,
one to three properties each, sometimes overwritten over time, bare or narrative), then mixes:

- questions with the answer the model must produce: the value bound at that point (the latest one
  after an overwrite or a restatement), or the one-hop answer (a country, a kind of vet, ...);
- filler exchanges, neutral or adjacent to a property in play, that never mention its facts;
- fact statements in the three edit styles, with and without conflict markers, restating a known
  fact with a new value, or adding a fact about a new person or property.

Answers are the bare value (`"light blue"`), so the first answer token is the value's first token.
Dialogues that contain a passage or edit text of a bundled split (dev, test, the sessions) verbatim are
never emitted.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Collection, Iterable, Iterator

from rime.data.axes import AXES
from rime.data.content import Property, content, pronouns, prose, render
from rime.data.schema import Record, Session
from rime.data.sentences import (
    canonical_template,
    edit_writer,
    fact,
    query,
    recipient_passages,
    recital_query,
    roster,
    roster_items,
)
from rime.data.storage import BUNDLED_SPLITS, load
from rime.data.turns import Message, avoiding, filler_pool

WORD = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")
_SLOT = re.compile(r"\{\w+\}")


@dataclasses.dataclass(frozen=True)
class Mix:
    """Which question a dialogue asks. A model can score on the default mix by answering the value
    stated most often or most recently for the asked property; questions about anyone holding the
    passage's main property (`ask_main`), about people whose value differs from one two others
    share (`ask_unique`), fewer questions about the fact just stated (`recent`), and a roll call
    right after the passage that asks every holder of the main property in turn (`roll_call`, the
    share of dialogues that have one) leave binding values to people as the only way to answer.
    A roll call can still be answered last by elimination; a drill (`drill`, the share of
    dialogues that are one) asks `2k + 1` questions about holders drawn with replacement, so only
    the binding answers it. A plain passage (`plain`, the share of passages that are) states the
    main property alone, bare and never updated: the shortest form of the binding task. A roster
    (`roster`, the share of plain passages that are one) lists each name right before its value,
    where a model learns to bind first, and from where binding carries over to sentences that put
    words between them. A recital (`recital`, the share of drills that are one) asks for every
    holder at once, and the reply puts each name right before its value: the same help on the
    asking side, where a question puts words between the name and the answer. A prose dialogue
    (`prose`, the share of dialogues that are) also draws its facts, updates and questions from
    `prose.json`'s wider English, may open with a diary or notebook line, state a plain passage
    as a list, state two people who share a value in one sentence, and write an update that
    refers back to the person by pronoun, sometimes in the next turn. `updates` sets how many of
    a passage's facts change later and `refer_back` how many prose passages word every update
    with a pronoun (`wide-updates` changes one or more facts in three passages of four, four in
    five of its prose passages refer back, and it asks about the latest change more often). A session
    (`session`, the share of dialogues that are one) states three to eight people's facts one
    user turn per person, then mixes edits and questions and ends on a quiz: the many-fact
    conversations of `rime.data.sessions`, with fresh bindings."""

    shared_value: float = 0.25  # a passage of three or more people has two share the main value
    ask_unique: float = 0.0
    ask_main: float = 0.0
    recent: float = 0.6
    roll_call: float = 0.0
    drill: float = 0.0
    plain: float = 0.0
    roster: float = 0.0
    recital: float = 0.0
    prose: float = 0.0
    session: float = 0.0
    updates: tuple[int, ...] = (0, 0, 1, 2)  # how many of a passage's facts change later: drawn from these
    refer_back: float = 0.0  # the share of prose passages whose updates all refer back by pronoun


MIXES = {
    "default": Mix(),
    "binding": Mix(shared_value=0.5, ask_unique=0.25, ask_main=0.5, recent=0.3, roll_call=0.5),
    "drill": Mix(shared_value=0.5, ask_unique=0.25, ask_main=0.5, recent=0.3, drill=0.5),
    "plain-drill": Mix(shared_value=0.0, drill=1.0, plain=1.0),
    "roster-drill": Mix(shared_value=0.0, drill=1.0, plain=1.0, roster=0.5, recital=0.5),
    "wide": Mix(shared_value=0.5, ask_unique=0.25, ask_main=0.5, recent=0.3, drill=0.3, prose=0.5, session=0.3),
    "wide-updates": Mix(shared_value=0.5, ask_unique=0.25, ask_main=0.5, recent=0.5, drill=0.3, prose=0.5,
                        session=0.3, updates=(0, 1, 1, 2), refer_back=0.8),
}
SESSION_PEOPLE = (3, 8)
SESSION_SHARE_RATE = 0.3


class _Dialogue:
    """The facts bound so far and the turns written so far."""

    def __init__(self, rng: random.Random, mix: Mix):
        self.rng, self.mix, self.messages, self.facts = rng, mix, [], {}  # facts: (name, key) -> value
        self.prose = bool(mix.prose) and rng.random() < mix.prose
        self.props = prose().properties if self.prose else content().properties
        self.pronoun_of = pronouns(rng.getrandbits(32)) if self.prose else None
        self.recent: tuple[str, str] | None = None
        self.main = ""  # the property every person in the passage holds
        self.unique: list[tuple[str, str]] = []  # people whose value differs from a shared one

    def say(self, user: str, assistant: str | None = None) -> None:
        reply = assistant if assistant is not None else self.rng.choice(content().acknowledgements)
        self.messages += [("user", user), ("assistant", reply)]

    def names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.facts))

    def holders(self) -> list[str]:
        """Everyone the passage gives the main property."""
        return [name for name, key in self.facts if key == self.main]

    def ask_main(self, name: str) -> None:
        self.say(query(self.rng, self.props[self.main], name), self.facts[name, self.main])


def _open(d: _Dialogue) -> None:
    """The recipient: people with a shared main property and some extra facts, maybe overwritten."""
    c, rng = content(), d.rng
    keys = list(c.properties)
    main = d.main = rng.choice(keys)
    plain = d.mix.plain and rng.random() < d.mix.plain
    listed = d.prose and rng.random() < 0.15  # the main property alone, as a list
    plain = plain or listed
    names = rng.sample(c.names, rng.randint(2 if plain else 1, 5))
    values = rng.sample(d.props[main].values, len(names))
    if len(names) >= 3 and rng.random() < d.mix.shared_value:
        values[-1] = values[0]  # two people sharing a value
        d.unique = [(name, main) for name in names[1:-1]]
    pair = d.prose and bool(d.unique) and not plain and rng.random() < 0.5  # the sharers in one sentence
    people = []
    for name, value in zip(names, values):
        extra = [] if plain else rng.sample([k for k in keys if k != main], rng.choice((0, 0, 1, 2)))
        paired = pair and name in (names[0], names[-1])
        facts = [*([] if paired else [(main, value)]), *((k, rng.choice(d.props[k].values)) for k in extra)]
        rng.shuffle(facts)
        people.append((name, facts))
        d.facts.update({(name, k): v for k, v in [(main, value), *facts]})
    updates = []
    for _ in range(0 if plain else rng.choice(d.mix.updates)):
        name, key = rng.choice(list(d.facts))
        old = d.facts[name, key]
        new = rng.choice([v for v in d.props[key].values if v != old])
        updates.append((name, key, old, new))
        d.facts[name, key] = new
        d.recent = (name, key)
    if plain and d.mix.roster and rng.random() < d.mix.roster:
        d.say(roster(c.properties[main], list(zip(names, values))))
        return
    if listed:
        d.say(_prose_list(rng, d.props[main], list(zip(names, values))))
        return
    richness = "bare" if plain else rng.choice(("bare", "narrative"))
    referring = d.prose and d.mix.refer_back and rng.random() < d.mix.refer_back
    wordings = prose().referring if referring else d.props
    passages = list(recipient_passages(rng, people, updates, richness, wordings, d.pronoun_of))
    if pair:
        both = render(rng.choice(prose().pairs[main]), names[0], values[0], other=names[-1])
        passages[0] = f"{both} {passages[0]}" if rng.random() < 0.5 else f"{passages[0]} {both}"
    if d.prose and richness == "bare" and rng.random() < 0.3:
        passages[0] = f"{rng.choice(prose().intros)} {passages[0]}"
    for passage in passages:
        d.say(passage)


def _prose_list(rng: random.Random, prop: Property, pairs: list[tuple[str, str]]) -> str:
    """One property of several people as a list in one of prose.json's forms."""
    item = rng.choice(prose().list_items)
    items = ", ".join(render(item, name, value) for name, value in pairs)
    text = rng.choice(prose().lists).format(label=prop.label, items=items)
    return text[0].upper() + text[1:]


def _question(d: _Dialogue) -> None:
    rng, mix = d.rng, d.mix
    if d.unique and mix.ask_unique and rng.random() < mix.ask_unique:
        name, key = rng.choice(d.unique)
    elif mix.ask_main and d.main and rng.random() < mix.ask_main:
        name, key = rng.choice(d.holders()), d.main
    else:
        name, key = d.recent if d.recent and rng.random() < mix.recent else rng.choice(list(d.facts))
    d.recent = None
    prop, value = d.props[key], d.facts[name, key]
    if prop.hop and rng.random() < 0.35:
        d.say(rng.choice(prop.hop.queries).format(name=name), prop.hop.target_of[value])
    else:
        d.say(query(rng, prop, name), value)


def _roll_call(d: _Dialogue) -> None:
    holders = d.holders()
    for name in d.rng.sample(holders, len(holders)):
        d.ask_main(name)


def _drill(d: _Dialogue) -> None:
    holders, rng = d.holders(), d.rng
    if d.mix.recital and rng.random() < d.mix.recital:
        for _ in range(2):
            order = rng.sample(holders, len(holders))
            d.say(recital_query(content().properties[d.main], order),
                  roster_items([(name, d.facts[name, d.main]) for name in order]))
        return
    for _ in range(2 * len(holders) + 1):
        d.ask_main(rng.choice(holders))


def _filler(d: _Dialogue) -> None:
    rng = d.rng
    mode = rng.choice(("neutral", "adversarial"))
    key = rng.choice([k for _, k in d.facts])
    words = [*d.names(), *d.facts.values()]
    usable = avoiding(filler_pool(mode, key), words)
    for filler in rng.sample(usable, min(len(usable), rng.choice((1, 1, 2, 3)))):
        d.say(filler.user, filler.assistant)


def _statement(d: _Dialogue) -> None:
    """A fact in an edit style: a new value for a known fact, a new property, or a new person."""
    c, rng = content(), d.rng
    roll = rng.random()
    if roll < 0.6:
        name, key = rng.choice(list(d.facts))
    else:
        name = rng.choice(d.names()) if roll < 0.8 else rng.choice([n for n in c.names if n not in d.names()])
        key = rng.choice(list(c.properties))
    old = d.facts.get((name, key))
    value = rng.choice([v for v in d.props[key].values if v != old])
    conflict = old is not None and rng.random() < 0.5
    d.say(edit_writer(rng, rng.choice(AXES["edit_style"]), conflict, d.props[key])(name, value))
    d.facts[name, key] = value
    d.recent = (name, key)


def _session(d: _Dialogue) -> None:
    """A many-fact conversation: one turn per person, then edits and questions, then a quiz."""
    rng = d.rng
    held: dict[str, list[str]] = {}  # property -> values stated so far
    for name in rng.sample(content().names, rng.randint(*SESSION_PEOPLE)):
        facts = []
        for key in rng.sample(list(d.props), rng.choice((2, 3))):
            taken = held.setdefault(key, [])
            shared = taken and rng.random() < SESSION_SHARE_RATE
            value = rng.choice(taken) if shared else rng.choice(d.props[key].values)
            taken.append(value)
            facts.append((key, value))
            d.facts[name, key] = value
        d.say(" ".join(fact(rng, d.props[key], name, value, d.pronoun_of) for key, value in facts))
        if rng.random() < 0.2:
            _filler(d)
    for event in rng.choices((_question, _filler, _statement), weights=(4, 1, 3), k=rng.randint(3, 10)):
        event(d)
    for _ in range(rng.randint(2, 6)):
        _question(d)


def sample_dialogue(rng: random.Random, mix: Mix = MIXES["default"]) -> list[Message]:
    """One training dialogue as (role, text) turns; every assistant answer is correct at its point."""
    d = _Dialogue(rng, mix)
    if mix.session and rng.random() < mix.session:
        _session(d)
        return d.messages
    _open(d)
    if mix.drill and rng.random() < mix.drill:
        _drill(d)
        return d.messages
    if mix.roll_call and rng.random() < mix.roll_call:
        _roll_call(d)
    events = rng.choices((_question, _filler, _statement), weights=(5, 2, 2), k=rng.randint(2, 7))
    for event in events:
        event(d)
    if events[-1] is not _question:
        _question(d)
    return d.messages


def held_out_texts(cases: Iterable[Record]) -> frozenset[str]:
    """The user-side texts of benchmark cases and sessions: passages and every calibration text."""
    texts = set()
    for case in cases:
        if isinstance(case, Session):
            texts.update(case.passages)
            texts.update(t for e in case.edits for t in (e.edit.source, e.edit.dst) if t)
            continue
        texts.update(case.recipient.passages)
        texts.update(t for step in case.edit_steps() for e in step for t in (e.source, e.dst))
    return frozenset(texts)


def bundled_held_out() -> frozenset[str]:
    """The user-side texts of every bundled split, which no training dialogue contains."""
    return held_out_texts([case for split in BUNDLED_SPLITS for case in load(split)])


def admissible_dialogue(rng: random.Random, mix: Mix, exclude: Collection[str]) -> list[Message]:
    """The next dialogue of `sample_dialogue(rng, mix)` with no user turn in `exclude`."""
    while True:
        messages = sample_dialogue(rng, mix)
        if not any(role == "user" and text in exclude for role, text in messages):
            return messages


def dialogue_turns(seed: int, exclude: Collection[str] | None = None) -> Iterator[list[Message]]:
    """Endless dialogues as turns, deterministic in `seed`; any dialogue with a user turn in `exclude`
    (default: the texts of every bundled split) is skipped."""
    exclude = bundled_held_out() if exclude is None else exclude
    rng = random.Random(f"rime-corpus:{seed}")
    while True:
        yield admissible_dialogue(rng, MIXES["default"], exclude)


def vocabulary() -> frozenset[str]:
    """Every word (letter/digit run) and punctuation mark that benchmark cases and corpus dialogues
    can contain, including the chat template's role names: the seed of a compact token vocabulary."""
    c = content()
    texts = [*c.names, *c.time_phrases, *c.short_edit_prefixes, *c.acknowledgements, "a an User Assistant:"]
    texts += [*prose().intros, *prose().lists, *prose().list_items]
    for prop in (*c.properties.values(), *prose().properties.values()):
        texts += [*prop.values, *prop.facts, *prop.updates, *prop.queries, *prop.edits, *prop.conflict_edits,
                  canonical_template(prop, True)]
        if prop.hop:
            texts += [*prop.hop.queries, *prop.hop.aliases]
    for scene in (*c.recipient_scenes, *c.edit_scenes):
        texts += [*scene.intros, *scene.details, *scene.closings]
    fillers = [*c.neutral_fillers, *(f for pool in c.adversarial_fillers.values() for f in pool)]
    texts += [t for f in fillers for t in (f.user, f.assistant)]
    return frozenset(w for text in texts for w in WORD.findall(_SLOT.sub(" ", text)))
