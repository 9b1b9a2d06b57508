"""Many-edit sessions: the record, the answers an edit list leaves, the generator and the splits."""

import copy
import json
import random

import pytest

import rime
from rime import FieldTypeError, FieldValueError, InconsistentCaseError, MissingFieldError, Session, UnknownFieldError
from rime.data.corpus import bundled_held_out
from rime.data.sessions import action_counts, cells


def edit(action, entity, prop, old, new, source, dst, reverts=None, fillers=()):
    return {"action": action, "entity": entity, "property": prop, "value_old": old, "value_new": new,
            "style": "canonical_bare", "source": source, "dst": dst, "reverts": reverts,
            "fillers": [{"user": u, "assistant": a} for u, a in fillers]}


# Two people sharing a pet; edit, edit, revert the first, erase a fact nobody edited.
HAND = {
    "id": "hand-1", "kind": "session", "people": ["Ana", "Bo"],
    "facts": [{"entity": "Ana", "property": "pet", "value": "tabby cat"},
              {"entity": "Ana", "property": "city", "value": "Paris"},
              {"entity": "Bo", "property": "pet", "value": "tabby cat"},
              {"entity": "Bo", "property": "city", "value": "Lyon"}],
    "passages": ["Ana has a tabby cat. Ana lives in Paris.", "Bo has a tabby cat. Bo lives in Lyon."],
    "edits": [edit("edit", "Ana", "pet", "tabby cat", "border collie", "Ana's pet is tabby cat.",
                   "Ana's pet is border collie.", fillers=[("How do I fold a crane?", "Slowly.")]),
              edit("edit", "Bo", "city", "Lyon", "London", "Bo's city is Lyon.", "Bo's city is London."),
              edit("revert", "Ana", "pet", "border collie", "tabby cat", "Ana's pet is border collie.",
                   "Ana's pet is tabby cat.", reverts=0),
              edit("erase", "Ana", "city", "Paris", "", "Ana's city is Paris.", "")],
    "queries": [{"query": "What pet does Ana have?", "entity": "Ana", "property": "pet", "expected": "tabby cat",
                 "role": "reverted"},
                {"query": "Where does Ana live?", "entity": "Ana", "property": "city", "expected": "Paris",
                 "role": "erased"},
                {"query": "What pet does Bo have?", "entity": "Bo", "property": "pet", "expected": "tabby cat",
                 "role": "locality"},
                {"query": "Where does Bo live?", "entity": "Bo", "property": "city", "expected": "London",
                 "role": "retention"}],
}


def truncated(n, roles):
    """HAND with only its first n actions, and the query roles and answers that leaves."""
    data = copy.deepcopy(HAND)
    data["edits"] = data["edits"][:n]
    for query, (role, expected) in zip(data["queries"], roles, strict=True):
        query["role"], query["expected"] = role, expected
    return data


def test_hand_session_round_trips_and_is_a_case_kind(tmp_path):
    session = Session.from_dict(HAND)
    assert session.to_dict() == {**HAND, "split": "custom"}
    assert rime.read_record(session.to_dict()) == session
    path = tmp_path / "mixed.jsonl"
    single = rime.load("test")[0]
    rime.write_jsonl([single, session], path)
    assert rime.load(path) == [single, session]
    assert "kind" not in json.loads(path.read_text().splitlines()[0])  # single cases keep their shape
    assert rime.check_jsonl(path) == (2, [])


def test_expected_answers_follow_the_edit_list():
    assert rime.expected_answers(Session.from_dict(HAND)) == {
        ("Ana", "pet"): "tabby cat", ("Ana", "city"): None, ("Bo", "pet"): "tabby cat", ("Bo", "city"): "London"}
    two = Session.from_dict(truncated(2, [("retention", "border collie"), ("locality", "Paris"),
                                          ("locality", "tabby cat"), ("reliability", "London")]))
    assert rime.expected_answers(two) == {
        ("Ana", "pet"): "border collie", ("Ana", "city"): "Paris", ("Bo", "pet"): "tabby cat",
        ("Bo", "city"): "London"}
    one = Session.from_dict(truncated(1, [("reliability", "border collie"), ("locality", "Paris"),
                                          ("locality", "tabby cat"), ("locality", "Lyon")]))
    assert rime.expected_answers(one)[("Ana", "pet")] == "border collie"


def _set(path, value):
    def mutate(d):
        *parents, last = path
        for key in parents:
            d = d[key]
        d[last] = value
    return mutate


MALFORMED = [
    ("kind", _set(["kind"], "many"), FieldValueError, "kind"),
    ("missing facts", lambda d: d.pop("facts"), MissingFieldError, "facts"),
    ("typo", _set(["edits", 1, "filler"], []), UnknownFieldError, "edits[1].filler"),
    ("wrong type", _set(["edits", 0, "reverts"], "0"), FieldTypeError, "edits[0].reverts"),
    ("action", _set(["edits", 1, "action"], "swap"), FieldValueError, "edits[1].action"),
    ("stale value_old", _set(["edits", 1, "value_old"], "Paris"), InconsistentCaseError, "edits[1].value_old"),
    ("revert without index", _set(["edits", 2, "reverts"], None), InconsistentCaseError, "edits[2].reverts"),
    ("revert of a later edit", _set(["edits", 2, "reverts"], 3), FieldValueError, "edits[2].reverts"),
    ("revert of another fact", _set(["edits", 2, "reverts"], 1), InconsistentCaseError, "edits[2].reverts"),
    ("revert to a wrong value", _set(["edits", 2, "value_new"], "dachshund"), InconsistentCaseError,
     "edits[2].value_new"),
    ("erase with a value", _set(["edits", 3, "value_new"], "Rome"), FieldValueError, "edits[3].value_new"),
    ("edit of no fact", _set(["edits", 1, "property"], "job"), InconsistentCaseError, "edits[1]"),
    ("too many fillers", _set(["edits", 0, "fillers"], [{"user": "a", "assistant": "b"}] * 3), FieldValueError,
     "edits[0].fillers"),
    ("wrong answer", _set(["queries", 3, "expected"], "Lyon"), InconsistentCaseError, "queries[3].expected"),
    ("wrong role", _set(["queries", 2, "role"], "retention"), InconsistentCaseError, "queries[2].role"),
    ("unknown role", _set(["queries", 2, "role"], "sideways"), FieldValueError, "queries[2].role"),
    ("fact never asked", lambda d: d["queries"].pop(), InconsistentCaseError, "queries"),
    ("value never stated", _set(["facts", 3, "value"], "Oslo"), InconsistentCaseError, "facts[3].value"),
    ("stranger", _set(["facts", 3, "entity"], "Cy"), InconsistentCaseError, "facts[3].entity"),
    ("blank line", _set(["passages", 0], "Ana has a tabby cat.\n\nAna lives in Paris."), FieldValueError,
     "passages[0]"),
]


@pytest.mark.parametrize("name, mutate, error, field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_malformed_session_gets_its_specific_error(name, mutate, error, field):
    data = copy.deepcopy(HAND)
    mutate(data)
    with pytest.raises(error) as info:
        rime.read_record(data)
    assert type(info.value) is error
    assert (info.value.case_id, info.value.field) == ("hand-1", field)


def test_a_session_is_not_read_as_a_single_case_nor_the_reverse():
    with pytest.raises(FieldValueError, match="kind"):
        rime.Case.from_dict(HAND)
    with pytest.raises(FieldValueError, match="kind"):
        Session.from_dict(rime.load("test")[0].to_dict())


@pytest.mark.parametrize("n_facts, n_actions", [(6, 1), (8, 4), (12, 8), (16, 16)])
def test_generated_sessions_ask_the_facts_they_state_with_the_answers_of_their_actions(n_facts, n_actions):
    people = {6: 3, 8: 4, 12: 4, 16: 8}[n_facts]
    session = rime.make_session(random.Random(n_facts * 100 + n_actions), n_facts, people, n_actions, "s", "custom")
    assert len(session.facts) == n_facts and len(session.people) == people and len(session.edits) == n_actions
    for fact in session.facts:
        own = session.passages[session.people.index(fact.entity)]
        assert fact.value in own and fact.entity in own
    assert [(q.entity, q.property) for q in session.queries] == [f.key for f in session.facts]
    for q in session.queries:
        assert q.entity in q.query
    # replayed here step by step, independently of the ledger
    values = {f.key: f.value for f in session.facts}
    for e in session.edits:
        assert values[e.key] == e.value_old
        values[e.key] = {"edit": e.value_new, "revert": session.edits[e.reverts or 0].value_old,
                         "erase": None}[e.action]
    assert rime.expected_answers(session) == values
    actions = [e.action for e in session.edits]
    assert {a: actions.count(a) for a in ("edit", "revert", "erase")} == action_counts(n_actions)
    acted = [e.key for e in session.edits if e.action != "revert"]
    assert len(set(acted)) == len(acted)  # every edit and erase acts on its own fact
    if n_actions >= 2:
        edited = [e.entity for e in session.edits if e.action == "edit"]
        assert len(set(edited)) < len(edited)  # someone is edited twice
    words = [*session.people, *(f.value for f in session.facts), *(e.value_new for e in session.edits if e.value_new)]
    for e in session.edits:
        for filler in e.fillers:
            assert not any(w.lower() in f"{filler.user} {filler.assistant}".lower() for w in words)


def test_bundled_session_splits_match_the_build_and_cover_every_size():
    built = rime.build_session_splits(rime.DEFAULT_SEED)
    for name in ("session_test", "session_dev"):
        assert [s.to_dict() for s in rime.load(name)] == [s.to_dict() for s in built[name]], f"{name} is stale"
    sizes = {(len(s.facts), len(s.edits)) for s in built["session_test"]}
    assert sizes == set(cells()) and len(built["session_test"]) == 6 * len(cells())
    assert len(built["session_dev"]) == 3 * len(cells())
    passages = lambda split: {p for s in built[split] for p in s.passages}
    assert passages("session_test").isdisjoint(passages("session_dev"))


def test_session_texts_are_held_out_of_the_training_corpus():
    held_out = bundled_held_out()
    for session in rime.load("session_test") + rime.load("session_dev"):
        assert set(session.passages) <= held_out
        assert {e.edit.source for e in session.edits} <= held_out


def test_dataset_dict_round_trips_sessions(tmp_path):
    sessions = rime.load("session_dev")[:5]
    rime.to_dataset_dict({"test": rime.load("test")[:2], "session_dev": sessions}).save_to_disk(str(tmp_path / "hf"))
    assert rime.load(tmp_path / "hf", split="session_dev") == sessions

