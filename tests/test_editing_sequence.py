"""Sequential edits: K applications of any method, each revertible exactly for the state it edited."""

import jax
import numpy as np
import pytest

from editing import CaseEdit, apply_recorded, apply_sequence, get_method, method_names, revert
from editing.calibration import read
from rwkv_jax.state import COMPONENTS

PEOPLE = ("Rohan", "Esme", "Silas", "Tomas", "Ines", "Abena")
TRANSCRIPT = "User: Rohan drives a hatchback. Esme drives a sedan. Rohan lives in Lyon.\n\nAssistant: Noted.\n\n"


def case(entity, prop, old, new, **extra):
    return CaseEdit(entity, prop, old, new, f"{entity}'s {prop} is {old}.", f"{entity}'s {prop} is {new}.",
                    transcript=TRANSCRIPT, people=PEOPLE, values=(old, new), **extra)


ROHAN_VEHICLE = case("Rohan", "vehicle", "hatchback", "minivan")
ESME_VEHICLE = case("Esme", "vehicle", "sedan", "tractor")
ROHAN_CITY = case("Rohan", "city", "Lyon", "Paris")
# the laws hold by construction for any method (a record keeps the states around one application);
# `optimized` is left out only for its compile time, `optimized`'s own tests cover its apply_many
LAWFUL = tuple(n for n in method_names() if n != "optimized")



@pytest.fixture(scope="module")
def live(model):
    """Two random live states `[2]`: the transcript read from perturbed starting states."""
    start = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(7), (2, *x.shape[1:])),
                         read(model.params, model.cfg, model.tokenizer, ["User: hi\n\n"])[1])
    return read(model.params, model.cfg, model.tokenizer, [TRANSCRIPT] * 2, start)[1]


def same(a, b):
    return all(np.array_equal(getattr(a, c), getattr(b, c)) for c in COMPONENTS)


@pytest.mark.parametrize("name", LAWFUL)
def test_every_method_edits_k_times_and_each_edit_reverts_bit_exactly_right_after(model, live, name):
    steps = [[ROHAN_VEHICLE, ESME_VEHICLE], [ROHAN_CITY, ROHAN_CITY], [ESME_VEHICLE, ROHAN_VEHICLE]]
    final, records = apply_sequence(get_method(name), live, model, steps)
    assert len(records) == 3
    assert same(records[0].before, live) and same(records[-1].after, final)
    for earlier, later in zip(records, records[1:]):
        assert same(earlier.after, later.before)  # each application starts where the last one ended
    for record in records:
        assert same(revert(record.after, record), record.before)
    assert same(revert(final, records[-1]), records[-2].after)


@pytest.mark.parametrize("name", ["delta", "in_context"])
def test_recorded_batch_equals_the_loop_over_rows(model, live, name):
    m = get_method(name)
    after, record = apply_recorded(m, live, model, [ROHAN_VEHICLE, ESME_VEHICLE])
    for i, c in enumerate([ROHAN_VEHICLE, ESME_VEHICLE]):
        one, _ = apply_recorded(m, jax.tree.map(lambda x: x[i:i + 1], live), model, [c])
        for comp in COMPONENTS:
            np.testing.assert_allclose(getattr(after, comp)[i], getattr(one, comp)[0], rtol=1e-5, atol=1e-5)
        assert same(jax.tree.map(lambda x: x[i], record.before), jax.tree.map(lambda x: x[i], live))


def test_reverting_an_earlier_delta_edit_keeps_the_later_one(model, live):
    """Deltas add, so taking the first of two back leaves the second as if applied alone."""
    delta = get_method("delta")
    final, records = apply_sequence(delta, live, model, [[ROHAN_VEHICLE] * 2, [ROHAN_CITY] * 2])
    only_second = delta.apply_many(live, model, [ROHAN_CITY] * 2)
    kept = revert(final, records[0])
    for comp in COMPONENTS:
        np.testing.assert_allclose(getattr(kept, comp), getattr(only_second, comp), rtol=1e-5, atol=1e-5)
    assert not np.allclose(kept.wkv, records[0].after.wkv)


def test_a_reverted_edit_after_more_reading_subtracts_only_its_increment(model, live):
    delta = get_method("delta")
    after, record = apply_recorded(delta, live, model, [ROHAN_VEHICLE] * 2)
    moved = read(model.params, model.cfg, model.tokenizer, ["User: and then?\n\n"] * 2, after)[1]
    back = revert(moved, record)
    increment = jax.tree.map(lambda a, b: a - b, record.after, record.before)
    changed = moved.wkv != record.after.wkv
    np.testing.assert_array_equal(back.wkv[changed], (moved.wkv - increment.wkv)[changed])
