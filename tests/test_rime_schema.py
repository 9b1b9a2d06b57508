"""The RIME case format: round trips, hand-written paper cases, and one specific error per fault."""

import copy
import json
import re

import pytest

import rime
from rime import (
    Case,
    CaseError,
    ExclusionError,
    FieldTypeError,
    FieldValueError,
    InconsistentCaseError,
    MissingFieldError,
    UnknownFieldError,
)

# The Appendix A example, typed in by hand in the paper's own (partial) format.
PAPER_CASE = {
    "entity": "Rohan",
    "property": "vehicle",
    "value_old": "hatchback",
    "value_new": "minivan",
    "recipient": {
        "passages": ["Rohan drives a hatchback while Esme rides a scooter, Amara rides a motorcycle, "
                     "Soren drives a convertible, and Noor drives a sedan."],
        "entity_order": ["Rohan", "Soren", "Amara", "Noor", "Esme"],
        "target_position": 0,
    },
    "edits": [{"style": "canonical_bare", "source": "Rohan\u2019s vehicle is hatchback.",
               "dst": "Rohan\u2019s vehicle is minivan."}],
    "queries": ["What type of vehicle does Rohan drive?", "What is Rohan's vehicle?"],
    "expected_answer_substring": "minivan",
    "probe_queries": [{"query": "What is Esme's vehicle?", "expected": "scooter"},
                      {"query": "What is Amara's vehicle?", "expected": "motorcycle"}],
    "params": {"distractor_count": 4, "overwrite_count": 0, "composition_hop": False,
               "multi_prop_count": 1, "stack_depth": 1},
}

# A second hand-written case: one-hop composition with no params at all and its own old aliases.
HOP_CASE = {
    "entity": "Ilse",
    "property": "city",
    "value_old": "Oslo",
    "value_new": "Lisbon",
    "recipient": {"passages": ["Ilse lives in Oslo and works at the harbour."], "entity_order": ["Ilse"],
                  "target_position": 0},
    "edits": [{"style": "template_short", "source": "Ilse moved to Oslo.", "dst": "Ilse moved to Lisbon."}],
    "queries": ["Which country does Ilse live in?"],
    "expected_answer_substring": "Portugal",
    "aliases": ["Portugal", "Portuguese"],
    "old_aliases": ["Norway"],
    "params": {"composition_hop": True},
}


@pytest.fixture(scope="module")
def generated():
    return rime.build_splits(seed=11, test_size=60, dev_size=30)


@pytest.fixture(scope="module")
def cases(generated):
    return generated["test"] + generated["dev"]


def test_generated_cases_round_trip_through_dicts_and_json(cases):
    for case in cases:
        record = case.to_dict()
        assert Case.from_dict(record) == case
        assert Case.from_dict(json.loads(json.dumps(record))).to_dict() == record


def test_records_carry_every_paper_field_first_in_paper_order(cases):
    paper = ["entity", "property", "value_old", "value_new", "recipient", "edits", "queries",
             "expected_answer_substring", "probe_queries", "params"]
    keys = list(cases[0].to_dict())
    assert [k for k in keys if k in paper] == paper
    assert set(cases[0].to_dict()["recipient"]) == {"passages", "entity_order", "target_position"}


def test_hand_written_paper_case_loads_with_documented_defaults():
    case = Case.from_dict(copy.deepcopy(PAPER_CASE))
    assert case.split == "custom"
    assert re.fullmatch(r"case-[0-9a-f]{10}", case.id)
    assert Case.from_dict(copy.deepcopy(PAPER_CASE)).id == case.id  # the default id is stable
    assert case.aliases == ("minivan",) and case.old_aliases == ("hatchback",)
    assert case.stack == () and case.multi == ()
    assert all(p.kind == "other_entity" for p in case.probe_queries)
    p = case.params.cell
    assert (p.conflict_marker, p.recipient_richness, p.edit_style, case.params.target_position) == (
        "none", "bare", "canonical_bare", 0)
    assert case.wrong_entity not in case.recipient.entity_order
    assert case.wrong_entity not in " ".join(case.recipient.passages)
    # the paper's own fields come back unchanged
    record = case.to_dict()
    for key, value in PAPER_CASE.items():
        if key not in ("probe_queries", "params"):
            assert record[key] == value
    assert all(record["params"][k] == v for k, v in PAPER_CASE["params"].items())
    assert Case.from_dict(record) == case


def test_hand_written_composition_case_infers_params_from_its_shape():
    case = Case.from_dict(copy.deepcopy(HOP_CASE))
    assert case.params.cell.composition_hop and case.params.cell.distractor_count == 0
    assert case.params.cell.edit_style == "template_short" and case.params.cell.stack_depth == 1
    assert case.aliases == ("Portugal", "Portuguese") and case.old_aliases == ("Norway",)


def test_composition_case_without_old_aliases_is_rejected():
    record = copy.deepcopy(HOP_CASE)
    del record["old_aliases"]
    with pytest.raises(MissingFieldError) as err:
        Case.from_dict(record)
    assert err.value.field == "old_aliases"


def test_edit_steps_apply_stack_in_order_and_multi_with_the_first_step(cases):
    case = next(c for c in cases if c.params.cell.stack_depth == 3 and c.params.cell.multi_prop_count == 3)
    steps = case.edit_steps()
    assert len(steps) == 3
    assert steps[0][0].source.count(case.value_old) == 1
    assert [len(s) for s in steps] == [3, 1, 1]
    assert case.value_new in steps[-1][0].dst
    renamed = case.edit_steps(case.wrong_entity)
    for step, new_step in zip(steps, renamed):
        for edit, new_edit in zip(step, new_step):
            assert case.entity not in new_edit.source + new_edit.dst
            assert new_edit.source == edit.source.replace(case.entity, case.wrong_entity)


def _base(cases, **params):
    case = next(c for c in cases if all(c.params.to_dict()[k] == v for k, v in params.items()))
    return copy.deepcopy(case.to_dict())


def _delete(path):
    def mutate(record):
        *head, last = path
        for key in head:
            record = record[key]
        del record[last]
    return mutate


def _set(path, value):
    def mutate(record):
        *head, last = path
        for key in head:
            record = record[key]
        record[last] = value(record[last]) if callable(value) else value
    return mutate


MALFORMED = [
    # (name, base params, mutation, error class, field)
    ("missing entity", {}, _delete(["entity"]), MissingFieldError, "entity"),
    ("missing passages", {}, _delete(["recipient", "passages"]), MissingFieldError, "recipient.passages"),
    ("missing edit dst", {}, _delete(["edits", 0, "dst"]), MissingFieldError, "edits[0].dst"),
    ("unknown top-level field", {}, _set(["colour"], "red"), UnknownFieldError, "colour"),
    ("unknown params field", {}, _set(["params", "distractors"], 2), UnknownFieldError, "params.distractors"),
    ("position as a string", {}, _set(["recipient", "target_position"], "0"), FieldTypeError,
     "recipient.target_position"),
    ("count as a boolean", {}, _set(["params", "distractor_count"], True), FieldTypeError,
     "params.distractor_count"),
    ("queries as a string", {}, _set(["queries"], "What?"), FieldTypeError, "queries"),
    ("query as a number", {}, _set(["queries", 0], 7), FieldTypeError, "queries[0]"),
    ("hop as a string", {}, _set(["params", "composition_hop"], "no"), FieldTypeError, "params.composition_hop"),
    ("unknown edit style", {}, _set(["edits", 0, "style"], "poetic"), FieldValueError, "edits[0].style"),
    ("unknown richness", {}, _set(["params", "recipient_richness"], "lush"), FieldValueError,
     "params.recipient_richness"),
    ("unknown probe kind", {"distractor_count": 2}, _set(["probe_queries", 0, "kind"], "nearby"),
     FieldValueError, "probe_queries[0].kind"),
    ("no queries", {}, _set(["queries"], []), FieldValueError, "queries"),
    ("empty passage", {}, _set(["recipient", "passages", 0], "  "), FieldValueError, "recipient.passages[0]"),
    ("blank line in a passage", {}, _set(["recipient", "passages", 0], lambda p: p + "\n\nMore."),
     FieldValueError, "recipient.passages[0]"),
    ("position out of range", {"distractor_count": 0}, _set(["recipient", "target_position"], 3),
     FieldValueError, "recipient.target_position"),
    ("new value equals old", {}, lambda r: r.update(value_new=r["value_old"]), FieldValueError, "value_new"),
    ("target not at its position", {"distractor_count": 2},
     _set(["recipient", "entity_order"], lambda order: order[1:] + order[:1]), InconsistentCaseError,
     "recipient.entity_order"),
    ("distractor count disagrees", {"distractor_count": 2}, _set(["params", "distractor_count"], 4),
     InconsistentCaseError, "params.distractor_count"),
    ("stack depth disagrees", {"stack_depth": 2}, _set(["params", "stack_depth"], 3), InconsistentCaseError,
     "params.stack_depth"),
    ("broken stack chain", {"stack_depth": 3}, _set(["stack", 1, "value_old"], "somewhere else"),
     InconsistentCaseError, "stack[1].value_old"),
    ("answer is not the new value", {"composition_hop": False},
     lambda r: r.update(expected_answer_substring="nothing like it", aliases=["nothing like it"]),
     InconsistentCaseError, "expected_answer_substring"),
    ("same-value distractor holds another value", {"distractor_count": 2},
     lambda r: next(p for p in r["probe_queries"] if p["kind"] == "same_value_distractor").update(
         expected=r["value_new"]), InconsistentCaseError, None),
    ("wrong entity is in the passage", {}, lambda r: r.update(wrong_entity=r["entity"]), InconsistentCaseError,
     "wrong_entity"),
    ("composition with overwrites", {"overwrite_count": 1}, _set(["params", "composition_hop"], True),
     ExclusionError, "params"),
    ("composition with multi-property edit", {"multi_prop_count": 2, "overwrite_count": 0},
     _set(["params", "composition_hop"], True), ExclusionError, "params"),
    ("composition with stacking", {"stack_depth": 2, "overwrite_count": 0, "multi_prop_count": 1},
     _set(["params", "composition_hop"], True), ExclusionError, "params"),
    ("conflict marker with overwrites", {"overwrite_count": 2}, _set(["params", "conflict_marker"], "explicit"),
     ExclusionError, "params"),
    ("conflict marker with composition", {"composition_hop": True},
     _set(["params", "conflict_marker"], "explicit"), ExclusionError, "params"),
]


@pytest.mark.parametrize("name,params,mutate,error,field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_malformed_case_gets_its_specific_error(cases, name, params, mutate, error, field):
    record = _base(cases, **params)
    mutate(record)
    with pytest.raises(error) as err:
        Case.from_dict(record)
    if field is not None:
        assert err.value.field == field
        assert repr(field) in str(err.value)
    assert err.value.case_id == record.get("id") and record["id"] in str(err.value)
    assert isinstance(err.value, CaseError) and isinstance(err.value, ValueError)


def test_exclusion_errors_name_the_broken_rule(cases):
    record = _base(cases, overwrite_count=1)
    record["params"]["conflict_marker"] = "explicit"
    with pytest.raises(ExclusionError, match="conflict markers are incompatible with overwrites"):
        Case.from_dict(record)


def test_non_object_record_is_a_type_error():
    with pytest.raises(FieldTypeError):
        Case.from_dict(["not", "a", "case"])
