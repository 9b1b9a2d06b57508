"""Writes RIME text from bindings: recipient passages, edit statements and questions.

The benchmark generator and the training corpus both write through these functions, so the bundled
model is trained on exactly the language the benchmark speaks. Every function takes its random source
explicitly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from rime.data.content import Property, content, refers_back, render
from rime.data.schema import CalibrationPair

Facts = Sequence[tuple[str, str]]  # (property key, value) pairs of one person


Pronouns = Callable[[str], str] | None  # name -> a key of content.PRONOUNS, for templates that use one


def fact(rng: random.Random, prop: Property, name: str, value: str, pronoun_of: Pronouns = None) -> str:
    return render(rng.choice(prop.facts), name, value, pronoun=pronoun_of and pronoun_of(name))


def query(rng: random.Random, prop: Property, name: str) -> str:
    return rng.choice(prop.queries).format(name=name)


def queries(rng: random.Random, prop: Property, name: str, k: int, hop: bool = False) -> tuple[str, ...]:
    """k distinct paraphrases of the question (one-hop questions with `hop`)."""
    templates = prop.hop.queries if hop else prop.queries
    return tuple(t.format(name=name) for t in rng.sample(templates, k))


def recipient_passages(rng: random.Random, people: Sequence[tuple[str, Facts]],
                       updates: Sequence[tuple[str, str, str, str]], richness: str,
                       properties: Mapping[str, Property] | None = None, pronoun_of: Pronouns = None
                       ) -> tuple[str, ...]:
    """The recipient: one passage stating every person's facts in order, then one short passage per
    update `(name, property key, old, new)`, oldest first. `narrative` richness sets the facts in a
    scene with an opening, unrelated details and a closing; `bare` states the facts alone.
    `properties` gives the wordings (default: the benchmark's own) and `pronoun_of` each person's
    pronoun where a wording has one. An update that refers back to the person by pronoun gets no
    time phrase, and half the time its sentences go in two passages, so the pronoun reaches across
    a turn."""
    c = content()
    properties = c.properties if properties is None else properties
    scene = rng.choice(c.recipient_scenes)
    details = rng.sample(scene.details, len(scene.details))
    sentences = []
    for name, facts in people:
        sentences += [fact(rng, properties[key], name, value, pronoun_of) for key, value in facts]
        if richness == "narrative" and details and rng.random() < 0.5:
            sentences.append(details.pop())
    if richness == "narrative":
        sentences = [rng.choice(scene.intros), *sentences, rng.choice(scene.closings)]
    passages = [" ".join(sentences)]
    for name, key, old, new in updates:
        template, when = rng.choice(properties[key].updates), rng.choice(c.time_phrases)
        if refers_back(template):
            pronoun = pronoun_of and pronoun_of(name)
            sentences = [render(part, name, new, old, pronoun) for part in _sentences(template)]
            passages += sentences if rng.random() < 0.5 else [" ".join(sentences)]
            continue
        update = render(template, name, new, old)
        passages.append(f"{when} {update}" if template.startswith("{name}") else update)
    return tuple(passages)


def _sentences(template: str) -> list[str]:
    """A template's sentences: split after each full stop that ends a sentence."""
    parts = template.split(". ")
    return [part + "." for part in parts[:-1]] + parts[-1:]


def roster_items(pairs: Sequence[tuple[str, str]]) -> str:
    """`"Ana red, Bo blue"`: each value right after its name."""
    return ", ".join(f"{name} {value}" for name, value in pairs)


def roster(prop: Property, pairs: Sequence[tuple[str, str]]) -> str:
    """One property of several people as a list."""
    return f"The {prop.label} of each person: {roster_items(pairs)}."


def recital_query(prop: Property, names: Sequence[str]) -> str:
    """The question a roster answers, for these people in this order."""
    return f"What is the {prop.label} of {', '.join(names[:-1])} and {names[-1]}?"


def canonical_template(prop: Property, conflict: bool) -> str:
    """The paper's out-of-context calibration sentence, `"X's <label> is V."`."""
    return "{name}'s " + prop.label + (" is now {value}." if conflict else " is {value}.")


def edit_writer(rng: random.Random, style: str, conflict: bool, prop: Property) -> Callable[[str, str], str]:
    """Draws an edit's wording once and returns `state(name, value)`, so the two halves of a pair
    differ only in the value.

    canonical_bare: the fixed out-of-context form `"X's <label> is V."`; template_short: one sentence
    in the chat register of a user message; narrative: the sentence inside an edit scene (never a
    recipient scene). `conflict` marks the change ("now", "these days", "switched").
    """
    c = content()
    if style == "canonical_bare":
        template = canonical_template(prop, conflict)
        return lambda name, value: render(template, name, value)
    template = rng.choice(prop.conflict_edits if conflict else prop.edits)
    if style == "template_short":
        prefix = rng.choice(c.short_edit_prefixes)
        return lambda name, value: f"{prefix} {render(template, name, value)}"
    if style != "narrative":
        raise ValueError(f"unknown edit style {style!r}")
    scene = rng.choice(c.edit_scenes)
    intro, closing = rng.choice(scene.intros), rng.choice(scene.closings)
    return lambda name, value: f"{intro} {render(template, name, value)} {closing}"


def edit_pair(rng: random.Random, style: str, conflict: bool, prop: Property, name: str, old: str,
              new: str) -> CalibrationPair:
    state = edit_writer(rng, style, conflict, prop)
    return CalibrationPair(style, state(name, old), state(name, new))
