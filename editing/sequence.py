"""Edits applied one after another to a live state, each kept so that it can be taken back.

Editing K times is K pure applications of a method, each returning the `algebra.Edit` record that
`algebra.revert` needs: any one can be taken back later, bit-exactly for the entries nothing has
touched since (so right after it, the state it was applied to), first order where later edits or
turns have changed them (their increment is subtracted). Methods need nothing new: a record only
keeps the states before and after.
"""

from __future__ import annotations

from collections.abc import Sequence

from editing.algebra import Edit
from editing.methods import CaseEdit, EditMethod, ModelLike
from rwkv_jax.batch import Reader
from rwkv_jax.state import State


def apply_recorded(method: EditMethod, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> tuple[State, Edit]:
    """`method.apply_many` on states `[B]` (one case each) and the record that undoes it, `[B]` too."""
    after = method.apply_many(states, model, cases, reader)
    return after, Edit(before=states, after=after)


def apply_sequence(method: EditMethod, states: State, model: ModelLike, steps: Sequence[Sequence[CaseEdit]],
                   reader: Reader | None = None) -> tuple[State, list[Edit]]:
    """States `[B]` edited by `steps[0]` (one case per row), then `steps[1]`, ...; with every step's
    record, in order."""
    records = []
    for cases in steps:
        states, record = apply_recorded(method, states, model, cases, reader)
        records.append(record)
    return states, records

