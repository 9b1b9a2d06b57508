"""Writes one RIME case for a chosen cell of the axis grid.

Bindings are drawn per case: people from the name pool, values from the property's vocabulary. Within
a case every value of the main property is distinct (history, old, intermediate stack values, new,
distractors), except that with two or more distractors one of them holds `value_old` on purpose: the
same-value distractor whose answer an edit must not change. The target also holds one property that
is never edited, for the crosstalk probe.
"""

from __future__ import annotations

import random
from itertools import pairwise

from rime.data.axes import Cell
from rime.data.content import Property, content
from rime.data.schema import CalibrationPair, Case, Controls, JointEdit, Probe, Recipient, StackStep
from rime.data.sentences import edit_pair, queries, query, recipient_passages

QUERIES_PER_CASE = 3
QUERIES_PER_JOINT_EDIT = 2
OTHER_ENTITY_PROBES = 2


def _old_and_new(rng: random.Random, prop: Property, hop: bool) -> tuple[str, str]:
    """Two values; for composition they must lead to different one-hop answers."""
    if not hop:
        old, new = rng.sample(prop.values, 2)
        return old, new
    old = rng.choice(prop.values)
    target = prop.hop.target_of[old]
    return old, rng.choice([v for v in prop.values if prop.hop.target_of[v] != target])


def make_case(rng: random.Random, cell: Cell, target_position: int, property_key: str, case_id: str,
              split: str) -> Case:
    """The case for `cell` with the target at `target_position`, about `property_key`."""
    c = content()
    prop = c.properties[property_key]
    n_people = cell.distractor_count + 1
    names = rng.sample(c.names, n_people + 1)
    order, wrong_entity = names[:n_people], names[n_people]
    target = order[target_position]
    distractors = [name for name in order if name != target]

    old, new = _old_and_new(rng, prop, cell.composition_hop)
    spare = [v for v in prop.values if v not in (old, new)]
    rng.shuffle(spare)
    history = [spare.pop() for _ in range(cell.overwrite_count)]  # earlier values, oldest first
    between = [spare.pop() for _ in range(cell.stack_depth - 1)]  # intermediate stacked values
    same_value = rng.choice(distractors) if len(distractors) >= 2 else None
    held = {name: old if name == same_value else spare.pop() for name in distractors}

    # mp - 1 properties edited jointly, plus one never-edited property for the crosstalk probe
    *joint_keys, crosstalk_key = rng.sample([k for k in c.properties if k != property_key],
                                            cell.multi_prop_count)
    joint = [(key, *rng.sample(c.properties[key].values, 2)) for key in joint_keys]
    crosstalk = rng.choice(c.properties[crosstalk_key].values)

    target_facts = [(property_key, (history or [old])[0]), *((k, o) for k, o, _ in joint),
                    (crosstalk_key, crosstalk)]
    rng.shuffle(target_facts)
    people = [(name, target_facts if name == target else [(property_key, held[name])]) for name in order]
    replaced = [*history, old]
    updates = [(target, property_key, a, b) for a, b in pairwise(replaced)]
    passages = recipient_passages(rng, people, updates, cell.recipient_richness)

    conflict = cell.conflict_marker == "explicit"

    def edit(p: Property, a: str, b: str) -> CalibrationPair:
        return edit_pair(rng, cell.edit_style, conflict, p, target, a, b)

    chain = [old, *between, new]
    stack = tuple(StackStep(a, b, edit(prop, a, b)) for a, b in pairwise(chain)) if between else ()
    multi = tuple(
        JointEdit(key, o, n, (edit(c.properties[key], o, n),),
                  queries(rng, c.properties[key], target, QUERIES_PER_JOINT_EDIT))
        for key, o, n in joint
    )

    if cell.composition_hop:
        hop = prop.hop
        aliases, old_aliases = hop.aliases[hop.target_of[new]], hop.aliases[hop.target_of[old]]
    else:
        aliases, old_aliases = (new,), (old,)

    others = [name for name in distractors if name != same_value]
    probes = [Probe(query(rng, prop, name), held[name], "other_entity")
              for name in rng.sample(others, min(OTHER_ENTITY_PROBES, len(others)))]
    if same_value:
        probes.append(Probe(query(rng, prop, same_value), old, "same_value_distractor"))
    probes.append(Probe(query(rng, c.properties[crosstalk_key], target), crosstalk, "same_entity"))

    return Case(
        id=case_id, split=split, entity=target, property=property_key, value_old=old, value_new=new,
        recipient=Recipient(passages, tuple(order), target_position),
        edits=(edit(prop, old, new),),
        queries=queries(rng, prop, target, QUERIES_PER_CASE, hop=cell.composition_hop),
        expected_answer_substring=aliases[0], probe_queries=tuple(probes),
        params=Controls(cell, target_position),
        aliases=aliases, old_aliases=old_aliases, stack=stack, multi=multi, wrong_entity=wrong_entity,
    )
