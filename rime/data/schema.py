"""The RIME case record: the paper's Appendix A format plus the fields the control axes need.

A case is one JSON object (`Case.to_dict` writes it, `Case.from_dict` reads and validates it):

    id, split                  a unique name and the split it belongs to
    entity, property           the target person and attribute
    value_old, value_new       the value before and after the edit
    recipient                  passages: user turns that establish value_old (each overwrite is a later
                               passage); entity_order: people in order of first mention;
                               target_position: index of `entity` in entity_order
    edits                      [{style, source, dst}]: the one-step edit old -> new, applied jointly
    queries                    paraphrases of the target question (one-hop questions for composition)
    expected_answer_substring  what a correct answer after the edit contains
    probe_queries              [{query, expected, kind}]: facts the edit must leave alone; kind is
                               other_entity, same_entity (crosstalk) or same_value_distractor (another
                               person holding value_old)
    params                     the control-axis vector (see `rime.data.axes`) plus target_position
    aliases                    every accepted answer after the edit (the alias set for composition)
    old_aliases                answers showing the old fact survived
    stack                      stack_depth > 1: [{value_old, value_new, style, source, dst}] applied in
                               order instead of `edits`, chaining value_old -> ... -> value_new
    multi                      [{property, value_old, value_new, edits, queries}]: further properties of
                               the same person, edited jointly with the first step
    wrong_entity               a name absent from the case, for the wrong-entity control

A session (`"kind": "session"`; a single case may say `"kind": "single"`, its default) is the many-edit
case: one conversation stating facts about several people, then edits applied one after another:

    people                     everyone the session is about, in order of first mention
    facts                      [{entity, property, value}]: what the passages state, one value per fact
    passages                   user turns that state the facts
    edits                      [{action, entity, property, value_old, value_new, style, source, dst, reverts,
                               fillers}] in order: action "edit" sets value_new, "revert" undoes edit number
                               `reverts` (value_new is that edit's value_old), "erase" removes the fact
                               (value_new and dst empty); reverts is null for the others; source / dst are the
                               calibration pair; fillers the [{user, assistant}] exchanges read after the action
    queries                    [{query, entity, property, expected, role}] asked after the last action;
                               role (`rime.data.ledger`): reliability (the last action's edit), retention
                               (earlier edits), locality (untouched facts), reverted, erased (expected is the
                               value that must be gone)

A hand-written case in the paper's format may leave out every field but entity, property, value_old,
value_new, recipient, edits, queries and expected_answer_substring. Defaults: id = "case-" + 10 hex
digits of the SHA-1 of the record; split = "custom"; probe_queries, stack, multi = []; probe kind =
"other_entity"; aliases = [expected_answer_substring]; old_aliases = [value_old] (required when
composition_hop is true); wrong_entity = a bundled name absent from the case, fixed by the id. In params:
distractor_count = len(entity_order) - 1, overwrite_count = 0, composition_hop = false,
multi_prop_count = 1 + len(multi), stack_depth = max(1, len(stack)), conflict_marker = "none",
recipient_richness = "bare", edit_style = edits[0].style, target_position = recipient.target_position.

Errors are `rime.data.errors.CaseError` subclasses naming the case id and the field path, one class per
kind of fault; `rime.data.checks` holds the rules beyond JSON types.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from rime.data.axes import Cell
from rime.data.checks import case_texts, check_case, check_session, mentions
from rime.data.content import Filler, content
from rime.data.errors import FieldTypeError, FieldValueError, MissingFieldError, UnknownFieldError

_REQUIRED = object()


@dataclass(frozen=True)
class CalibrationPair:
    """A calibration pair: `source` states the old value, `dst` the new one, in the same words."""

    style: str
    source: str
    dst: str

    def to_dict(self) -> dict:
        return {"style": self.style, "source": self.source, "dst": self.dst}


@dataclass(frozen=True)
class StackStep:
    """One edit of a stacked sequence, with the values it moves between."""

    value_old: str
    value_new: str
    edit: CalibrationPair

    def to_dict(self) -> dict:
        return {"value_old": self.value_old, "value_new": self.value_new, **self.edit.to_dict()}


@dataclass(frozen=True)
class JointEdit:
    """Another property of the target edited together with the main one."""

    property: str
    value_old: str
    value_new: str
    edits: tuple[CalibrationPair, ...]
    queries: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"property": self.property, "value_old": self.value_old, "value_new": self.value_new,
                "edits": [e.to_dict() for e in self.edits], "queries": list(self.queries)}


@dataclass(frozen=True)
class Probe:
    """A question about a fact the edit must not change."""

    query: str
    expected: str
    kind: str = "other_entity"

    def to_dict(self) -> dict:
        return {"query": self.query, "expected": self.expected, "kind": self.kind}


@dataclass(frozen=True)
class Recipient:
    """The passages that build the live state, and where the target is mentioned."""

    passages: tuple[str, ...]
    entity_order: tuple[str, ...]
    target_position: int

    def to_dict(self) -> dict:
        return {"passages": list(self.passages), "entity_order": list(self.entity_order),
                "target_position": self.target_position}


class Controls(NamedTuple):
    """The case's position on every control axis, and where the target is first mentioned."""

    cell: Cell
    target_position: int

    def to_dict(self) -> dict:
        return {**self.cell._asdict(), "target_position": self.target_position}


@dataclass(frozen=True)
class Case:
    """One RIME case; constructing it checks every cross-field rule."""

    id: str
    split: str
    entity: str
    property: str
    value_old: str
    value_new: str
    recipient: Recipient
    edits: tuple[CalibrationPair, ...]
    queries: tuple[str, ...]
    expected_answer_substring: str
    probe_queries: tuple[Probe, ...]
    params: Controls
    aliases: tuple[str, ...]
    old_aliases: tuple[str, ...]
    stack: tuple[StackStep, ...]
    multi: tuple[JointEdit, ...]
    wrong_entity: str

    def __post_init__(self) -> None:
        check_case(self)

    def to_dict(self) -> dict:
        """The JSON record, in the paper's field order with our fields after them."""
        return {
            "id": self.id, "split": self.split, "entity": self.entity, "property": self.property,
            "value_old": self.value_old, "value_new": self.value_new,
            "recipient": self.recipient.to_dict(), "edits": [e.to_dict() for e in self.edits],
            "queries": list(self.queries), "expected_answer_substring": self.expected_answer_substring,
            "probe_queries": [p.to_dict() for p in self.probe_queries], "params": self.params.to_dict(),
            "aliases": list(self.aliases), "old_aliases": list(self.old_aliases),
            "stack": [s.to_dict() for s in self.stack], "multi": [m.to_dict() for m in self.multi],
            "wrong_entity": self.wrong_entity,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Case:
        """Reads a record, filling documented defaults; raises a `CaseError` subclass naming the field."""
        record = read_record(data)
        if not isinstance(record, Case):
            raise FieldValueError(record.id, "kind", f"is {SESSION!r}; read it with Session.from_dict")
        return record

    def edit_steps(self, entity: str | None = None) -> list[tuple[CalibrationPair, ...]]:
        """The edits in application order; the edits of one step are applied jointly.

        The first step is `edits` (or the first stack step) together with every `multi` edit; the rest
        of the stack follows. With `entity`, the target's name is replaced by it in every calibration
        text: the wrong-entity control.
        """
        main = [(step.edit,) for step in self.stack] or [self.edits]
        steps = [main[0] + tuple(e for joint in self.multi for e in joint.edits), *main[1:]]
        if entity is None:
            return steps
        name = re.compile(rf"\b{re.escape(self.entity)}\b")
        return [tuple(CalibrationPair(e.style, name.sub(entity, e.source), name.sub(entity, e.dst)) for e in step)
                for step in steps]


SINGLE, SESSION = "single", "session"


@dataclass(frozen=True)
class Fact:
    """One value of one person's property, as the passages state it."""

    entity: str
    property: str
    value: str

    @property
    def key(self) -> tuple[str, str]:
        return self.entity, self.property

    def to_dict(self) -> dict:
        return {"entity": self.entity, "property": self.property, "value": self.value}


@dataclass(frozen=True)
class SessionEdit:
    """One action of a session's edit list, and the filler exchanges read after it."""

    action: str
    entity: str
    property: str
    value_old: str
    value_new: str
    edit: CalibrationPair
    reverts: int | None
    fillers: tuple[Filler, ...]

    @property
    def key(self) -> tuple[str, str]:
        return self.entity, self.property

    def to_dict(self) -> dict:
        return {"action": self.action, "entity": self.entity, "property": self.property,
                "value_old": self.value_old, "value_new": self.value_new, **self.edit.to_dict(),
                "reverts": self.reverts, "fillers": [{"user": f.user, "assistant": f.assistant} for f in self.fillers]}


@dataclass(frozen=True)
class SessionQuery:
    """A question asked after the last action, about one fact."""

    query: str
    entity: str
    property: str
    expected: str
    role: str

    @property
    def key(self) -> tuple[str, str]:
        return self.entity, self.property

    def to_dict(self) -> dict:
        return {"query": self.query, "entity": self.entity, "property": self.property,
                "expected": self.expected, "role": self.role}


@dataclass(frozen=True)
class Session:
    """One many-edit session; constructing it checks every cross-field rule (`check_session`)."""

    id: str
    split: str
    people: tuple[str, ...]
    facts: tuple[Fact, ...]
    passages: tuple[str, ...]
    edits: tuple[SessionEdit, ...]
    queries: tuple[SessionQuery, ...]

    def __post_init__(self) -> None:
        check_session(self)

    def to_dict(self) -> dict:
        return {"id": self.id, "split": self.split, "kind": SESSION, "people": list(self.people),
                "facts": [f.to_dict() for f in self.facts], "passages": list(self.passages),
                "edits": [e.to_dict() for e in self.edits], "queries": [q.to_dict() for q in self.queries]}

    @classmethod
    def from_dict(cls, data: Any) -> Session:
        """Reads a session record; raises a `CaseError` subclass naming the field."""
        record = read_record(data)
        if not isinstance(record, Session):
            raise FieldValueError(record.id, "kind", f"is {SINGLE!r}; a session says \"kind\": \"session\"")
        return record


Record = Case | Session


def read_record(data: Any) -> Record:
    """A case of either kind, by its `kind` field (default "single")."""
    kind = data.get("kind", SINGLE) if isinstance(data, dict) else SINGLE
    return _read_session(data) if kind == SESSION else _read_case(data)


# ---------------------------------------------------------------------------------------------------
# Reading: JSON types, presence and unknown fields; `rime.data.checks` does the rest when the Case is built.


_KINDS = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object"}


class _Object:
    """One JSON object read field by field, so every error can name the field's path."""

    def __init__(self, case_id: str, data: Any, path: str):
        if not isinstance(data, dict):
            raise FieldTypeError(case_id, path or "<case>", f"expected an object, got {_type_name(data)}")
        self.case_id, self.data, self.path, self.read = case_id, data, path, set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type, default: Any = _REQUIRED) -> Any:
        self.read.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise MissingFieldError(self.case_id, self.at(key), "is required")
            return default
        return _typed(self.case_id, self.at(key), self.data[key], kind)

    def nullable(self, key: str, kind: type) -> Any:
        """An optional field that may also be null: None for both."""
        if self.data.get(key) is None:
            self.read.add(key)
            return None
        return self.get(key, kind)

    def strings(self, key: str, default: Any = _REQUIRED) -> tuple[str, ...]:
        items = self.get(key, list, default)
        return tuple(_typed(self.case_id, f"{self.at(key)}[{i}]", x, str) for i, x in enumerate(items))

    def objects(self, key: str, default: Any = _REQUIRED) -> list[_Object]:
        items = self.get(key, list, default)
        return [_Object(self.case_id, x, f"{self.at(key)}[{i}]") for i, x in enumerate(items)]

    def child(self, key: str, default: Any = _REQUIRED) -> _Object:
        return _Object(self.case_id, self.get(key, dict, default), self.at(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise UnknownFieldError(self.case_id, self.at(unknown[0]), "is not a field of a RIME case")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _typed(case_id: str, field: str, value: Any, kind: type) -> Any:
    # bool is an int subclass in Python; JSON keeps them apart, and so do we
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FieldTypeError(case_id, field, f"expected {_KINDS[kind]}, got {_type_name(value)}")
    return value


def _default_id(data: dict) -> str:
    digest = hashlib.sha1(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()
    return f"case-{digest[:10]}"


def _read_edit(obj: _Object) -> CalibrationPair:
    edit = CalibrationPair(obj.get("style", str), obj.get("source", str), obj.get("dst", str))
    obj.done()
    return edit


def _open_record(data: Any) -> tuple[_Object, str]:
    """The record as an `_Object` and its id (a digest when it has none); checks `kind`."""
    if not isinstance(data, dict):
        raise FieldTypeError("<unknown>", "<case>", f"expected an object, got {_type_name(data)}")
    raw_id = data["id"] if "id" in data else _default_id(data)
    record = _Object(raw_id if isinstance(raw_id, str) else "<unknown>", data, "")
    case_id = record.get("id", str, raw_id)
    kind = record.get("kind", str, SINGLE)
    if kind not in (SINGLE, SESSION):
        raise FieldValueError(case_id, "kind", f"{kind!r} is not one of {(SINGLE, SESSION)}")
    return record, case_id


def _read_session(data: Any) -> Session:
    record, case_id = _open_record(data)
    facts = []
    for obj in record.objects("facts"):
        facts.append(Fact(obj.get("entity", str), obj.get("property", str), obj.get("value", str)))
        obj.done()
    edits = []
    for obj in record.objects("edits"):
        fields = [obj.get(key, str) for key in ("action", "entity", "property", "value_old", "value_new")]
        pair = CalibrationPair(obj.get("style", str), obj.get("source", str), obj.get("dst", str))
        reverts = obj.nullable("reverts", int)
        fillers = []
        for filler in obj.objects("fillers", []):
            fillers.append(Filler(filler.get("user", str), filler.get("assistant", str)))
            filler.done()
        obj.done()
        edits.append(SessionEdit(*fields, pair, reverts, tuple(fillers)))
    queries = []
    for obj in record.objects("queries"):
        queries.append(SessionQuery(*(obj.get(key, str) for key in ("query", "entity", "property", "expected",
                                                                     "role"))))
        obj.done()
    fields = dict(id=case_id, split=record.get("split", str, "custom"), people=record.strings("people"),
                  facts=tuple(facts), passages=record.strings("passages"), edits=tuple(edits),
                  queries=tuple(queries))
    record.done()
    return Session(**fields)


def _read_case(data: Any) -> Case:
    case, case_id = _open_record(data)

    rec = case.child("recipient")
    recipient = Recipient(rec.strings("passages"), rec.strings("entity_order"), rec.get("target_position", int))
    rec.done()
    edits = tuple(_read_edit(e) for e in case.objects("edits"))
    stack = []
    for step in case.objects("stack", []):
        values = step.get("value_old", str), step.get("value_new", str)
        edit = CalibrationPair(step.get("style", str), step.get("source", str), step.get("dst", str))
        step.done()
        stack.append(StackStep(*values, edit))
    multi = []
    for joint in case.objects("multi", []):
        multi.append(JointEdit(joint.get("property", str), joint.get("value_old", str), joint.get("value_new", str),
                               tuple(_read_edit(e) for e in joint.objects("edits")), joint.strings("queries")))
        joint.done()
    probes = []
    for probe in case.objects("probe_queries", []):
        probes.append(Probe(probe.get("query", str), probe.get("expected", str),
                            probe.get("kind", str, "other_entity")))
        probe.done()

    par = case.child("params", {})
    params = Controls(Cell(
        distractor_count=par.get("distractor_count", int, len(recipient.entity_order) - 1),
        overwrite_count=par.get("overwrite_count", int, 0),
        composition_hop=par.get("composition_hop", bool, False),
        multi_prop_count=par.get("multi_prop_count", int, 1 + len(multi)),
        stack_depth=par.get("stack_depth", int, max(1, len(stack))),
        conflict_marker=par.get("conflict_marker", str, "none"),
        recipient_richness=par.get("recipient_richness", str, "bare"),
        edit_style=par.get("edit_style", str, edits[0].style if edits else ""),
    ), target_position=par.get("target_position", int, recipient.target_position))
    par.done()

    value_old, expected = case.get("value_old", str), case.get("expected_answer_substring", str)
    old_aliases = case.strings("old_aliases", _REQUIRED if params.cell.composition_hop else [value_old])
    fields = dict(
        id=case_id, split=case.get("split", str, "custom"), entity=case.get("entity", str),
        property=case.get("property", str), value_old=value_old, value_new=case.get("value_new", str),
        recipient=recipient, edits=edits, queries=case.strings("queries"), expected_answer_substring=expected,
        probe_queries=tuple(probes), params=params, aliases=case.strings("aliases", [expected]),
        old_aliases=old_aliases, stack=tuple(stack), multi=tuple(multi),
    )
    wrong_entity = case.get("wrong_entity", str, None)
    case.done()
    if wrong_entity is None:
        wrong_entity = _default_wrong_entity(case_id, case_texts(fields))
    return Case(**fields, wrong_entity=wrong_entity)


def _default_wrong_entity(case_id: str, texts: list[str]) -> str:
    """A bundled name absent from the case; the order is a hash of the id, so it is stable."""
    def rank(name: str) -> str:
        return hashlib.sha1(f"{case_id}:{name}".encode()).hexdigest()

    return next(n for n in sorted(content().names, key=rank) if not any(mentions(t, n) for t in texts))
