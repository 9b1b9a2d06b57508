"""The rules a RIME case must satisfy beyond JSON types: value domains, agreement between fields, the
paper's exclusion rules, and answers that substring scoring can tell apart. They run whenever a `Case`
is constructed, so generated and hand-written cases are held to the same rules."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import TYPE_CHECKING

from rime.data.axes import AXES, PROBE_KINDS, violations
from rime.data.errors import ExclusionError, FieldValueError, InconsistentCaseError
from rime.data.ledger import ROLES, answer_key, history

if TYPE_CHECKING:
    from rime.data.schema import CalibrationPair, Case, Session

SESSION_ACTIONS = ("edit", "revert", "erase")
SESSION_MAX_FILLERS = 2


def mentions(text: str, name: str) -> bool:
    """Whether `name` occurs in `text` as a whole word."""
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def case_texts(fields: dict) -> list[str]:
    """Every text of a case (given as its fields) that a person's name could appear in."""
    recipient = fields["recipient"]
    texts = [*recipient.passages, *recipient.entity_order, *fields["queries"]]
    texts += [t for e in fields["edits"] for t in (e.source, e.dst)]
    texts += [t for s in fields["stack"] for t in (s.edit.source, s.edit.dst)]
    texts += [t for m in fields["multi"] for e in m.edits for t in (e.source, e.dst)]
    texts += [*(p.query for p in fields["probe_queries"]), *(q for m in fields["multi"] for q in m.queries)]
    return texts


def related(a: str, b: str) -> bool:
    """Whether one string contains the other, ignoring case: substring scoring could not tell them apart."""
    a, b = a.lower(), b.lower()
    return a in b or b in a


def _text_checker(case_id: str):
    def text(field: str, value: str) -> None:
        if not value.strip():
            raise FieldValueError(case_id, field, "must not be empty")
        if "\n\n" in value:
            raise FieldValueError(case_id, field, "contains a blank line, which a chat turn cannot carry")

    return text


def _check_texts(case: Case) -> None:
    text = _text_checker(case.id)

    for field in ("id", "split", "entity", "property", "value_old", "value_new", "expected_answer_substring",
                  "wrong_entity"):
        text(field, getattr(case, field))
    for field, items in (("recipient.passages", case.recipient.passages), ("queries", case.queries),
                         ("aliases", case.aliases), ("old_aliases", case.old_aliases),
                         ("recipient.entity_order", case.recipient.entity_order)):
        if not items:
            raise FieldValueError(case.id, field, "must not be empty")
        for i, item in enumerate(items):
            text(f"{field}[{i}]", item)
    if not case.edits:
        raise FieldValueError(case.id, "edits", "must not be empty")
    for field, edit in _all_edits(case):
        if edit.style not in AXES["edit_style"]:
            raise FieldValueError(case.id, f"{field}.style", f"{edit.style!r} is not one of {AXES['edit_style']}")
        text(f"{field}.source", edit.source)
        text(f"{field}.dst", edit.dst)
    for i, probe in enumerate(case.probe_queries):
        text(f"probe_queries[{i}].query", probe.query)
        text(f"probe_queries[{i}].expected", probe.expected)
        if probe.kind not in PROBE_KINDS:
            raise FieldValueError(case.id, f"probe_queries[{i}].kind", f"{probe.kind!r} is not one of {PROBE_KINDS}")


def _all_edits(case: Case) -> list[tuple[str, CalibrationPair]]:
    edits = [(f"edits[{i}]", e) for i, e in enumerate(case.edits)]
    edits += [(f"stack[{i}]", s.edit) for i, s in enumerate(case.stack)]
    edits += [(f"multi[{i}].edits[{j}]", e) for i, m in enumerate(case.multi) for j, e in enumerate(m.edits)]
    return edits


def _check_params(case: Case) -> None:
    p, order = case.params.cell, case.recipient.entity_order
    for axis in ("conflict_marker", "recipient_richness", "edit_style"):
        if getattr(p, axis) not in AXES[axis]:
            raise FieldValueError(case.id, f"params.{axis}", f"{getattr(p, axis)!r} is not one of {AXES[axis]}")
    for axis, least in (("distractor_count", 0), ("overwrite_count", 0), ("multi_prop_count", 1),
                        ("stack_depth", 1)):
        if getattr(p, axis) < least:
            raise FieldValueError(case.id, f"params.{axis}", f"must be at least {least}")
    agreements = (
        ("distractor_count", p.distractor_count == len(order) - 1,
         f"is {p.distractor_count} but entity_order names {len(order) - 1} people besides the target"),
        ("target_position", case.params.target_position == case.recipient.target_position,
         "differs from recipient.target_position"),
        ("multi_prop_count", p.multi_prop_count == 1 + len(case.multi),
         f"is {p.multi_prop_count} but multi lists {len(case.multi)} extra properties"),
        ("stack_depth", len(case.stack) == (p.stack_depth if p.stack_depth > 1 else 0),
         f"is {p.stack_depth} but stack has {len(case.stack)} steps (none when the depth is 1)"),
        ("edit_style", p.edit_style == case.edits[0].style, "differs from edits[0].style"),
    )
    for axis, agrees, reason in agreements:
        if not agrees:
            raise InconsistentCaseError(case.id, f"params.{axis}", reason)
    broken = violations(p)
    if broken:
        raise ExclusionError(case.id, "params", "; ".join(broken))


def _check_recipient(case: Case) -> None:
    r = case.recipient
    if len(set(r.entity_order)) != len(r.entity_order):
        raise FieldValueError(case.id, "recipient.entity_order", "names a person twice")
    if not 0 <= r.target_position < len(r.entity_order):
        raise FieldValueError(case.id, "recipient.target_position",
                              f"{r.target_position} is out of range for {len(r.entity_order)} people")
    if r.entity_order[r.target_position] != case.entity:
        raise InconsistentCaseError(case.id, "recipient.entity_order",
                                    f"position {r.target_position} is {r.entity_order[r.target_position]!r}, "
                                    f"not the target {case.entity!r}")
    text = " ".join(r.passages)
    for name in r.entity_order:
        if not mentions(text, name):
            raise InconsistentCaseError(case.id, "recipient.passages", f"never mention {name!r}")
    if any(mentions(t, case.wrong_entity) for t in case_texts(vars(case))):
        raise InconsistentCaseError(case.id, "wrong_entity", f"{case.wrong_entity!r} appears in the case")


def _check_values(case: Case) -> None:
    if related(case.value_old, case.value_new):
        raise FieldValueError(case.id, "value_new",
                              f"{case.value_new!r} and value_old {case.value_old!r} contain one another")
    if case.stack:
        chain = [case.stack[0].value_old, *(s.value_new for s in case.stack)]
        for i, (step, nxt) in enumerate(pairwise(case.stack)):
            if step.value_new != nxt.value_old:
                raise InconsistentCaseError(case.id, f"stack[{i + 1}].value_old", "does not continue the chain")
        if chain[0] != case.value_old or chain[-1] != case.value_new:
            raise InconsistentCaseError(case.id, "stack", "must run from value_old to value_new")
    properties = [case.property]
    for i, joint in enumerate(case.multi):
        if joint.property in properties:
            raise FieldValueError(case.id, f"multi[{i}].property", f"{joint.property!r} is already edited")
        properties.append(joint.property)
        if related(joint.value_old, joint.value_new):
            raise FieldValueError(case.id, f"multi[{i}].value_new", "contains or is contained in value_old")
        if not joint.edits or not joint.queries:
            raise FieldValueError(case.id, f"multi[{i}]", "needs at least one edit and one query")
    for i, probe in enumerate(case.probe_queries):
        if probe.kind == "same_value_distractor" and probe.expected != case.value_old:
            raise InconsistentCaseError(case.id, f"probe_queries[{i}].expected",
                                        "a same-value distractor must hold value_old")


def _check_answers(case: Case) -> None:
    expected = case.expected_answer_substring
    if expected not in case.aliases:
        raise InconsistentCaseError(case.id, "aliases", "must include expected_answer_substring")
    if not case.params.cell.composition_hop and expected.lower() not in case.value_new.lower():
        raise InconsistentCaseError(case.id, "expected_answer_substring",
                                    f"{expected!r} is not part of value_new {case.value_new!r}")
    clash = [(a, b) for a in case.aliases for b in case.old_aliases if related(a, b)]
    if clash:
        raise InconsistentCaseError(case.id, "aliases",
                                    f"{clash[0][0]!r} and old alias {clash[0][1]!r} contain one another")


def check_case(case: Case) -> None:
    """Raises the first rule `case` breaks, as a `CaseError` subclass."""
    _check_texts(case)
    _check_recipient(case)
    _check_params(case)
    _check_values(case)
    _check_answers(case)


def _check_session_texts(session: Session) -> None:
    text = _text_checker(session.id)
    text("id", session.id)
    text("split", session.split)
    for field in ("people", "facts", "passages", "edits", "queries"):
        if not getattr(session, field):
            raise FieldValueError(session.id, field, "must not be empty")
    for i, name in enumerate(session.people):
        text(f"people[{i}]", name)
    for i, passage in enumerate(session.passages):
        text(f"passages[{i}]", passage)
    for i, fact in enumerate(session.facts):
        for field in ("entity", "property", "value"):
            text(f"facts[{i}].{field}", getattr(fact, field))
    for i, edit in enumerate(session.edits):
        at = f"edits[{i}]"
        if edit.action not in SESSION_ACTIONS:
            raise FieldValueError(session.id, f"{at}.action", f"{edit.action!r} is not one of {SESSION_ACTIONS}")
        if edit.edit.style not in AXES["edit_style"]:
            raise FieldValueError(session.id, f"{at}.style", f"{edit.edit.style!r} is not one of {AXES['edit_style']}")
        erase = edit.action == "erase"
        for field, value in (("entity", edit.entity), ("property", edit.property), ("value_old", edit.value_old),
                             ("source", edit.edit.source)):
            text(f"{at}.{field}", value)
        for field, value in (("value_new", edit.value_new), ("dst", edit.edit.dst)):
            if erase and value:
                raise FieldValueError(session.id, f"{at}.{field}", "must be empty for an erase")
            if not erase:
                text(f"{at}.{field}", value)
        if len(edit.fillers) > SESSION_MAX_FILLERS:
            raise FieldValueError(session.id, f"{at}.fillers", f"holds {len(edit.fillers)} exchanges; at most "
                                  f"{SESSION_MAX_FILLERS} follow an action")
        for j, filler in enumerate(edit.fillers):
            text(f"{at}.fillers[{j}].user", filler.user)
            text(f"{at}.fillers[{j}].assistant", filler.assistant)
    for i, query in enumerate(session.queries):
        for field in ("query", "entity", "property", "expected"):
            text(f"queries[{i}].{field}", getattr(query, field))
        if query.role not in ROLES:
            raise FieldValueError(session.id, f"queries[{i}].role", f"{query.role!r} is not one of {ROLES}")


def _check_session_facts(session: Session) -> None:
    if len(set(session.people)) != len(session.people):
        raise FieldValueError(session.id, "people", "names a person twice")
    passages, seen = " ".join(session.passages), set()
    for name in session.people:
        if not mentions(passages, name):
            raise InconsistentCaseError(session.id, "passages", f"never mention {name!r}")
    for i, fact in enumerate(session.facts):
        if fact.entity not in session.people:
            raise InconsistentCaseError(session.id, f"facts[{i}].entity", f"{fact.entity!r} is not in people")
        if fact.key in seen:
            raise FieldValueError(session.id, f"facts[{i}]", f"states {fact.entity}'s {fact.property} twice")
        seen.add(fact.key)
        if fact.value.lower() not in passages.lower():
            raise InconsistentCaseError(session.id, f"facts[{i}].value", f"{fact.value!r} is never stated")


def _check_reverts(session: Session) -> None:
    for i, edit in enumerate(session.edits):
        at = f"edits[{i}].reverts"
        if (edit.action == "revert") != (edit.reverts is not None):
            raise InconsistentCaseError(session.id, at, "is required for a revert and only for one")
        if edit.action != "revert":
            continue
        if not 0 <= edit.reverts < i:
            raise FieldValueError(session.id, at, f"{edit.reverts} is not an earlier action")
        target = session.edits[edit.reverts]
        if target.action != "edit" or target.key != edit.key:
            raise InconsistentCaseError(session.id, at, f"action {edit.reverts} is not an edit of "
                                        f"{edit.entity}'s {edit.property}")
        if any(e.key == edit.key for e in session.edits[edit.reverts + 1:i]):
            raise InconsistentCaseError(session.id, at, "the fact changed again since that edit")


def _check_session_edits(session: Session) -> None:
    snapshots = history(session.facts, session.edits)
    for i, edit in enumerate(session.edits):
        at = f"edits[{i}]"
        if edit.key not in snapshots[i]:
            raise InconsistentCaseError(session.id, at, f"edits {edit.entity}'s {edit.property}, which no fact states")
        held = snapshots[i][edit.key]
        if held is None:
            raise InconsistentCaseError(session.id, at, f"acts on {edit.entity}'s {edit.property} after it was erased")
        if edit.value_old != held:
            raise InconsistentCaseError(session.id, f"{at}.value_old", f"is {edit.value_old!r} but the fact holds "
                                        f"{held!r} at this point")
        if edit.action != "erase" and related(edit.value_old, edit.value_new):
            raise FieldValueError(session.id, f"{at}.value_new",
                                  f"{edit.value_new!r} and value_old {edit.value_old!r} contain one another")
        if edit.action == "revert" and edit.value_new != session.edits[edit.reverts].value_old:
            raise InconsistentCaseError(session.id, f"{at}.value_new", "is not the value the reverted edit replaced")


def _check_session_queries(session: Session) -> None:
    key, asked = answer_key(session.facts, session.edits), set()
    for i, query in enumerate(session.queries):
        if query.key not in key:
            raise InconsistentCaseError(session.id, f"queries[{i}]", f"asks {query.entity}'s {query.property}, which "
                                        "no fact states")
        role, expected = key[query.key]
        if query.role != role:
            raise InconsistentCaseError(session.id, f"queries[{i}].role", f"is {query.role!r}; the edit list makes "
                                        f"it {role!r}")
        if query.expected != expected:
            raise InconsistentCaseError(session.id, f"queries[{i}].expected", f"is {query.expected!r}; the edit "
                                        f"list leaves {expected!r}")
        asked.add(query.key)
    missing = [k for k in key if k not in asked]
    if missing:
        raise InconsistentCaseError(session.id, "queries", f"never ask {missing[0][0]}'s {missing[0][1]}")


def check_session(session: Session) -> None:
    """Raises the first rule `session` breaks, as a `CaseError` subclass."""
    _check_session_texts(session)
    _check_session_facts(session)
    _check_reverts(session)
    _check_session_edits(session)
    _check_session_queries(session)
