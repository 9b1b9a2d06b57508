"""The closed vocabularies, sentence templates, scenes and filler turns RIME is written from.

The data lives in `rime/data/*.json` so it can be read and reviewed without reading code:

- `names.json`: fictional first names, pairwise substring-free so a name never hides inside another.
- `properties.json`: per property its label, values (several of them multi-token), the `slot_words` that
  name the slot itself (they may appear in both a recipient and an edit), and an optional one-hop map
  `hop` (value -> target -> accepted aliases) used by composition queries.
- `templates.json`: per property the sentences that state a fact in a recipient (`facts`), replace it over
  time (`updates`), ask for it (`queries`, `hop_queries`) and state it in an edit (`edits`,
  `conflict_edits`). Recipient and edit templates use disjoint wording, so an edit cannot lean on surface
  overlap with the passage it edits.
- `scenes.json`: recipient scenes and edit scenes (disjoint), time phrases, short-edit prefixes and
  assistant acknowledgements.
- `fillers_neutral.json`, `fillers_adversarial.json`: multi-turn filler pools.
- `prose.json`: training-only wordings (`prose()`): more facts, updates and questions per property, in
  ordinary English rather than the benchmark's templates, plus passage openings and lists. The benchmark
  never speaks them, so the corpus can teach the model English the benchmark does not test.

Templates are `str.format` strings over the slots `{name}`, `{value}`, `{a_value}`, `{old}` and `{a_old}`
(`a_` adds the indefinite article). Every statement template starts with `{name}`, so rendered text never
needs re-capitalising. Only `prose.json` may also refer back to the person with a pronoun (`{subj}`,
`{Subj}`, `{obj}`, `{poss}`, `{Poss}`) and name a second person (`{other}`, in `pairs`).
"""

from __future__ import annotations

import functools
import json
import string
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from types import MappingProxyType
from typing import Any

SLOTS = frozenset({"name", "value", "a_value", "old", "a_old"})
PRONOUNS = MappingProxyType({  # the words a template's pronoun slots take for each pronoun
    "she": MappingProxyType({"subj": "she", "Subj": "She", "obj": "her", "poss": "her", "Poss": "Her"}),
    "he": MappingProxyType({"subj": "he", "Subj": "He", "obj": "him", "poss": "his", "Poss": "His"}),
})
PRONOUN_SLOTS = frozenset(PRONOUNS["she"])


@dataclass(frozen=True)
class Hop:
    """A one-hop map for composition queries (e.g. city -> country)."""

    name: str
    target_of: MappingProxyType  # value -> canonical target
    aliases: MappingProxyType  # canonical target -> accepted answers, the target itself first
    queries: tuple[str, ...]


@dataclass(frozen=True)
class Property:
    """One closed-vocabulary attribute of a person, with everything needed to write about it."""

    key: str
    label: str
    values: tuple[str, ...]
    slot_words: tuple[str, ...]
    facts: tuple[str, ...]
    updates: tuple[str, ...]
    queries: tuple[str, ...]
    edits: tuple[str, ...]
    conflict_edits: tuple[str, ...]
    hop: Hop | None


@dataclass(frozen=True)
class Scene:
    """A setting for a passage; edit scenes have no `details`."""

    name: str
    intros: tuple[str, ...]
    details: tuple[str, ...]
    closings: tuple[str, ...]


@dataclass(frozen=True)
class Filler:
    """One filler exchange inserted between an edit and a query."""

    user: str
    assistant: str


@dataclass(frozen=True)
class Content:
    """Everything the generator and the training corpus draw from."""

    names: tuple[str, ...]
    properties: MappingProxyType  # key -> Property
    recipient_scenes: tuple[Scene, ...]
    edit_scenes: tuple[Scene, ...]
    time_phrases: tuple[str, ...]
    short_edit_prefixes: tuple[str, ...]
    acknowledgements: tuple[str, ...]
    neutral_fillers: tuple[Filler, ...]
    adversarial_fillers: MappingProxyType  # property key -> tuple[Filler, ...]

    def hop_properties(self) -> tuple[str, ...]:
        """Properties that support one-hop (composition) queries."""
        return tuple(key for key, prop in self.properties.items() if prop.hop is not None)


def with_article(text: str) -> str:
    """`"orange"` -> `"an orange"`; the vowel rule holds for every value in the vocabulary."""
    return ("an " if text[0].lower() in "aeiou" else "a ") + text


def render(template: str, name: str, value: str = "", old: str = "", pronoun: str | None = None,
           other: str = "") -> str:
    """Fills a template's slots; unused slots are ignored. `pronoun` (a key of `PRONOUNS`) is needed
    only by templates with pronoun slots."""
    if pronoun is None and refers_back(template):
        raise ValueError(f"template {template!r} refers to the person by pronoun: pass pronoun=")
    return template.format(
        name=name, value=value, a_value=with_article(value) if value else "",
        old=old, a_old=with_article(old) if old else "", other=other, **PRONOUNS.get(pronoun, {}),
    )


def pronouns(seed: int) -> Callable[[str], str]:
    """A pronoun per name, fixed for one `seed` (one dialogue) and independent across seeds, so a
    text refers to each person consistently while no name is tied to a pronoun."""
    keys = sorted(PRONOUNS)
    return lambda name: keys[zlib.crc32(f"{seed}:{name}".encode()) % len(keys)]


def template_slots(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


@functools.cache  # `render` asks for every sentence it writes, of a small fixed set of templates
def refers_back(template: str) -> bool:
    """Whether a template names its person by pronoun as well as by name."""
    return bool(template_slots(template) & PRONOUN_SLOTS)


def _read(filename: str) -> Any:
    return json.loads(resources.files("rime.data").joinpath(filename).read_text("utf-8"))


def _check_template(where: str, template: str, allowed: set[str], statement: bool) -> None:
    """Queries use only `{name}`; statements start with `{name}` and state a value."""
    slots = template_slots(template)
    if "name" not in slots or not slots <= allowed:
        raise ValueError(f"{where}: template {template!r} must use {{name}} and only {sorted(allowed)}")
    if statement and not (template.startswith("{name}") and slots & {"value", "a_value"}):
        raise ValueError(f"{where}: template {template!r} must start with {{name}} and state a value")


def _hop(key: str, data: dict, values: tuple[str, ...], queries: list[str]) -> Hop:
    target_of = {value: target for target, spec in data["targets"].items() for value in spec["values"]}
    if set(target_of) != set(values):
        raise ValueError(f"{key}: the hop map must cover every value exactly ({sorted(set(values) ^ set(target_of))})")
    aliases = {
        target: tuple(dict.fromkeys([target, *spec["aliases"]])) for target, spec in data["targets"].items()
    }
    return Hop(data["name"], MappingProxyType(target_of), MappingProxyType(aliases), tuple(queries))


def _property(key: str, spec: dict, templates: dict) -> Property:
    values = tuple(spec["values"])
    statement = {"name", "value", "a_value"}
    kinds = {  # kind -> (allowed slots, is a statement, fewest templates)
        "facts": (statement, True, 3),
        "updates": (SLOTS, True, 2),
        "queries": ({"name"}, False, 3),
        "hop_queries": ({"name"}, False, 3 if "hop" in spec else 0),
        "edits": (statement, True, 3),
        "conflict_edits": (statement, True, 3),
    }
    for kind, (allowed, is_statement, fewest) in kinds.items():
        if len(templates.get(kind, ())) < fewest:
            raise ValueError(f"{key}.{kind}: needs at least {fewest} templates")
        for template in templates.get(kind, ()):
            _check_template(f"{key}.{kind}", template, allowed, is_statement)
    hop = _hop(key, spec["hop"], values, templates["hop_queries"]) if "hop" in spec else None
    return Property(
        key=key, label=spec["label"], values=values, slot_words=tuple(spec["slot_words"]),
        facts=tuple(templates["facts"]), updates=tuple(templates["updates"]),
        queries=tuple(templates["queries"]), edits=tuple(templates["edits"]),
        conflict_edits=tuple(templates["conflict_edits"]), hop=hop,
    )


def _scenes(data: dict) -> tuple[Scene, ...]:
    return tuple(
        Scene(name, tuple(s["intros"]), tuple(s.get("details", ())), tuple(s["closings"]))
        for name, s in data.items()
    )


def _neutral_fillers(data: dict) -> tuple[Filler, ...]:
    """Each topic's tips become turns, the user message cycling through the question frames."""
    frames = data["frames"]
    turns, i = [], 0
    for topic in data["topics"]:
        for tip in topic["tips"]:
            turns.append(Filler(frames[i % len(frames)].format(topic=topic["topic"]), tip))
            i += 1
    return tuple(turns)


@functools.cache
def content() -> Content:
    """Loads and checks the bundled content once per process."""
    specs, templates, scenes = _read("properties.json"), _read("templates.json"), _read("scenes.json")
    if set(specs) != set(templates):
        raise ValueError(f"properties.json and templates.json disagree: {sorted(set(specs) ^ set(templates))}")
    adversarial = _read("fillers_adversarial.json")
    return Content(
        names=tuple(_read("names.json")),
        properties=MappingProxyType({key: _property(key, specs[key], templates[key]) for key in specs}),
        recipient_scenes=_scenes(scenes["recipient_scenes"]),
        edit_scenes=_scenes(scenes["edit_scenes"]),
        time_phrases=tuple(scenes["time_phrases"]),
        short_edit_prefixes=tuple(scenes["short_edit_prefixes"]),
        acknowledgements=tuple(scenes["acknowledgements"]),
        neutral_fillers=_neutral_fillers(_read("fillers_neutral.json")),
        adversarial_fillers=MappingProxyType(
            {key: tuple(Filler(u, a) for u, a in turns) for key, turns in adversarial.items()}
        ),
    )


@dataclass(frozen=True)
class Prose:
    """The corpus's wider English: each property with the prose wordings added to its own, and the
    openings and list forms a prose passage may take."""

    properties: Mapping[str, Property]
    intros: tuple[str, ...]
    lists: tuple[str, ...]  # over {label} and {items}
    list_items: tuple[str, ...]  # over {name} and {value}
    pairs: Mapping[str, tuple[str, ...]]  # property key -> two people sharing a value, {name} and {other}
    referring: Mapping[str, Property]  # `properties` with only the updates that refer back by pronoun


def _widened(prop: Property, generic: dict, own: dict) -> Property:
    """`prop` with the generic (label-filled) and its own prose templates after its templates."""
    extra = {}
    statement = {"name", "value", "a_value"} | PRONOUN_SLOTS
    for kind, allowed in (("facts", statement), ("updates", SLOTS | PRONOUN_SLOTS), ("queries", {"name"})):
        templates = _labelled(prop, generic, own, kind)
        for template in templates:
            _check_template(f"prose.{prop.key}.{kind}", template, allowed, statement=False)
            if kind != "queries" and not template_slots(template) & {"value", "a_value"}:
                raise ValueError(f"prose.{prop.key}.{kind}: template {template!r} must state a value")
        extra[kind] = getattr(prop, kind) + tuple(templates)
    return replace(prop, **extra)


def _labelled(prop: Property, generic: dict, own: dict, kind: str) -> list[str]:
    return [t.replace("{label}", prop.label) for t in generic[kind]] + own.get(kind, [])


def _pairs(prop: Property, generic: dict, own: dict) -> tuple[str, ...]:
    templates = _labelled(prop, generic, own, "pairs")
    for template in templates:
        slots = template_slots(template)
        if not {"name", "other"} <= slots <= {"name", "other", "value", "a_value"} or not slots & {"value", "a_value"}:
            raise ValueError(f"prose.{prop.key}.pairs: template {template!r} must use {{name}}, {{other}} and a value")
    return tuple(templates)


@functools.cache
def prose() -> Prose:
    """Loads and checks `prose.json` once per process."""
    data, properties = _read("prose.json"), content().properties
    unknown = set(data) - set(properties) - {"_about", "generic", "frames"}
    if unknown:
        raise ValueError(f"prose.json names unknown properties {sorted(unknown)}")
    frames = data["frames"]
    wide = {k: _widened(p, data["generic"], data.get(k, {})) for k, p in properties.items()}
    return Prose(
        properties=MappingProxyType(wide),
        intros=tuple(frames["intros"]), lists=tuple(frames["lists"]), list_items=tuple(frames["list_items"]),
        pairs=MappingProxyType({k: _pairs(p, data["generic"], data.get(k, {})) for k, p in properties.items()}),
        referring=MappingProxyType(
            {k: replace(p, updates=tuple(filter(refers_back, p.updates))) for k, p in wide.items()}
        ),
    )
