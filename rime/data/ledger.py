"""What a session's conversation holds after its edit list: the answer key of every fact.

A pure function of the facts and the actions, so the queries a generator writes and the answers a
checker expects come from one place. Facts are keyed by (entity, property).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rime.data.schema import Fact, Session, SessionEdit

Key = tuple[str, str]  # (entity, property)
ROLES = ("reliability", "retention", "locality", "reverted", "erased")


def history(facts: Sequence[Fact], edits: Sequence[SessionEdit]) -> list[dict[Key, str | None]]:
    """Every fact's value before each action and after the last (`len(edits) + 1` snapshots): an edit
    sets `value_new`, a revert restores the value the reverted edit replaced, an erase leaves None."""
    values: dict[Key, str | None] = {f.key: f.value for f in facts}
    snapshots = [dict(values)]
    for edit in edits:
        if edit.action == "edit":
            values[edit.key] = edit.value_new
        elif edit.action == "revert":
            values[edit.key] = edits[edit.reverts].value_old
        else:
            values[edit.key] = None
        snapshots.append(dict(values))
    return snapshots


def expected_answers(session: Session) -> dict[Key, str | None]:
    """Every fact's value after the whole edit list; None where it was erased."""
    return history(session.facts, session.edits)[-1]


def answer_key(facts: Sequence[Fact], edits: Sequence[SessionEdit]) -> dict[Key, tuple[str, str]]:
    """Every fact's (role, expected answer) after the last action.

    The role follows the last action on the fact: none, locality; the session's final action,
    reliability; an earlier edit, retention; a revert, reverted; an erase, erased, whose expected
    answer is the value that must be gone.
    """
    snapshots = history(facts, edits)
    last = {edit.key: i for i, edit in enumerate(edits)}
    key = {}
    for fact in facts:
        i = last.get(fact.key)
        if i is None:
            key[fact.key] = "locality", fact.value
            continue
        action = edits[i].action
        if action == "erase":
            key[fact.key] = "erased", snapshots[i][fact.key]
        else:
            role = "reverted" if action == "revert" else "reliability" if i == len(edits) - 1 else "retention"
            key[fact.key] = role, snapshots[-1][fact.key]
    return key
