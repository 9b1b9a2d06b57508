"""The rules a RIME case must satisfy beyond JSON types: value domains, agreement between fields, the
paper's exclusion rules, and answers that substring scoring can tell apart. They run whenever a `Case`
is constructed, so generated and hand-written cases are held to the same rules."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import TYPE_CHECKING

from rime.data.axes import AXES, PROBE_KINDS, violations
from rime.data.errors import ExclusionError, FieldValueError, InconsistentCaseError

if TYPE_CHECKING:
    from rime.data.schema import CalibrationPair, Case


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


def _related(a: str, b: str) -> bool:
    """Whether one string contains the other, ignoring case: substring scoring could not tell them apart."""
    a, b = a.lower(), b.lower()
    return a in b or b in a


def _check_texts(case: Case) -> None:
    def text(field: str, value: str) -> None:
        if not value.strip():
            raise FieldValueError(case.id, field, "must not be empty")
        if "\n\n" in value:
            raise FieldValueError(case.id, field, "contains a blank line, which a chat turn cannot carry")

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
    if _related(case.value_old, case.value_new):
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
        if _related(joint.value_old, joint.value_new):
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
    clash = [(a, b) for a in case.aliases for b in case.old_aliases if _related(a, b)]
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
