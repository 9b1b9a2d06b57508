"""Every generated case obeys the benchmark's rules: exclusions, what the recipient states, how the
edits are written, what the probes ask, and which filler turns a case gets."""

import re

import pytest

import rime
from rime.data.content import content

# The axis values and exclusion rules as the issue and the paper state them.
AXIS_VALUES = {
    "distractor_count": {0, 2, 4}, "overwrite_count": {0, 1, 2}, "composition_hop": {False, True},
    "multi_prop_count": {1, 2, 3}, "stack_depth": {1, 2, 3}, "conflict_marker": {"none", "explicit"},
    "recipient_richness": {"bare", "narrative"},
    "edit_style": {"canonical_bare", "template_short", "narrative"},
}
RULES = {
    "composition x overwrites": lambda p: p.composition_hop and p.overwrite_count > 0,
    "composition x multi-property": lambda p: p.composition_hop and p.multi_prop_count > 1,
    "composition x stacking": lambda p: p.composition_hop and p.stack_depth > 1,
    "conflict marker x overwrites": lambda p: p.conflict_marker == "explicit" and p.overwrite_count > 0,
    "conflict marker x composition": lambda p: p.conflict_marker == "explicit" and p.composition_hop,
}
MARKER = re.compile(r"\b(now|no longer|these days)\b")
FUNCTION_WORDS = set("""a an the is are was were be been of in on at to and for with by s it that this as has
have had from their there then so but or just also very all every after before into out up down over off than
too its not no do does did what which who where when how i you we they them me us about around between one
while once""".split())


def mentions(text, phrase):
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text) is not None


def last_position(text, phrase):
    return max((m.start() for m in re.finditer(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text)), default=-1)


@pytest.fixture(scope="module")
def cases():
    built = [rime.build_splits(seed=seed) for seed in (0, 1)]
    return [case for splits in built for split in splits.values() for case in split]


def all_values():
    return {v for p in content().properties.values() for v in p.values}


def test_no_case_breaks_an_exclusion_rule(cases):
    for case in cases:
        broken = [name for name, rule in RULES.items() if rule(case.params.cell)]
        assert not broken, (case.id, broken)


def test_every_case_sits_on_the_axis_grid(cases):
    for case in cases:
        for axis, values in AXIS_VALUES.items():
            assert getattr(case.params.cell, axis) in values, (case.id, axis)
    for axis, values in AXIS_VALUES.items():
        assert {getattr(c.params.cell, axis) for c in cases} == values, axis


def test_recipient_mentions_people_in_entity_order_with_the_target_at_its_position(cases):
    for case in cases:
        first = case.recipient.passages[0]
        order = case.recipient.entity_order
        assert len(order) == case.params.cell.distractor_count + 1
        starts = [re.search(rf"\b{re.escape(name)}\b", first).start() for name in order]
        assert starts == sorted(starts), case.id
        assert order[case.params.target_position] == case.entity


def test_recipient_ends_on_value_old_and_never_states_value_new(cases):
    for case in cases:
        passages = case.recipient.passages
        assert len(passages) == case.params.cell.overwrite_count + 1
        text = " ".join(passages)
        assert not mentions(text, case.value_new), case.id
        last = passages[-1]
        if case.params.cell.overwrite_count:  # the last update replaces an older value with value_old
            assert mentions(last, case.entity) and mentions(last, case.value_old)
            prop_values = [v for v in content().properties[case.property].values if mentions(last, v)]
            assert len(prop_values) == 2
            assert max(prop_values, key=lambda v: last_position(last, v)) == case.value_old, case.id
        target_sentences = [s for s in re.split(r"(?<=\.) ", passages[0]) if mentions(s, case.entity)]
        stated = [v for s in target_sentences for v in content().properties[case.property].values if mentions(s, v)]
        assert len(stated) == 1, case.id
        if not case.params.cell.overwrite_count:
            assert stated == [case.value_old]


def test_values_of_the_main_property_are_distinct_except_the_same_value_distractor(cases):
    for case in cases:
        stack_values = [s.value_new for s in case.stack[:-1]]
        others = [p.expected for p in case.probe_queries if p.kind == "other_entity"]
        chain = [case.value_old, *stack_values, case.value_new, *others]
        assert len(set(chain)) == len(chain), case.id
        for value in stack_values:
            assert not mentions(" ".join(case.recipient.passages), value)


def test_probes_cover_other_people_the_same_person_and_a_same_value_distractor(cases):
    for case in cases:
        kinds = [p.kind for p in case.probe_queries]
        distractors = case.params.cell.distractor_count
        assert kinds.count("same_entity") == 1
        assert kinds.count("same_value_distractor") == (1 if distractors >= 2 else 0), case.id
        # up to two people holding other values; with two or more distractors one holds value_old
        assert kinds.count("other_entity") == {0: 0, 2: 1, 4: 2}[distractors]
        text = " ".join(case.recipient.passages)
        for probe in case.probe_queries:
            assert mentions(text, probe.expected), (case.id, probe)
            assert not mentions(probe.expected, case.value_new)
            named = [n for n in case.recipient.entity_order if mentions(probe.query, n)]
            assert len(named) == 1
            sentences = [s for s in re.split(r"(?<=\.) ", case.recipient.passages[0]) if mentions(s, named[0])]
            assert any(mentions(s, probe.expected) for s in sentences), (case.id, probe)
            if probe.kind == "same_entity":
                assert named == [case.entity]
                assert probe.expected not in content().properties[case.property].values
            else:
                assert named != [case.entity]
                assert probe.expected in content().properties[case.property].values
            if probe.kind == "same_value_distractor":
                assert probe.expected == case.value_old


def test_edit_pairs_differ_only_in_the_value(cases):
    def unarticled(text):
        return re.sub(r"\b(a|an) ", "", text)

    for case in cases:
        pairs = [(case.value_old, case.value_new, case.edits[0])]
        pairs += [(s.value_old, s.value_new, s.edit) for s in case.stack]
        pairs += [(m.value_old, m.value_new, m.edits[0]) for m in case.multi]
        for old, new, edit in pairs:
            assert edit.style == case.params.cell.edit_style
            assert mentions(edit.source, old) and not mentions(edit.source, new)
            assert mentions(edit.dst, new) and not mentions(edit.dst, old)
            assert unarticled(edit.source).replace(old, new) == unarticled(edit.dst), case.id
            assert mentions(edit.source, case.entity)
            others = [n for n in case.recipient.entity_order if n != case.entity]
            assert not any(mentions(edit.source, n) for n in others)


def test_conflict_marker_appears_exactly_in_explicit_cases(cases):
    for case in cases:
        for step in case.edit_steps():
            for edit in step:
                marked = bool(MARKER.search(edit.source)) and bool(MARKER.search(edit.dst))
                assert marked == (case.params.cell.conflict_marker == "explicit"), (case.id, edit)


def test_edit_styles_have_their_shape(cases):
    for case in cases:
        edit = case.edits[0]
        sentences = len(re.findall(r"[.!?](?: |$)", edit.dst))
        if edit.style == "canonical_bare":
            assert edit.dst.startswith(f"{case.entity}'s ") and sentences == 1
        elif edit.style == "template_short":
            assert sentences == 1 and not edit.dst.startswith(case.entity)
        else:
            assert sentences == 3


def test_edits_share_no_wording_with_the_recipient(cases):
    c = content()
    bound = {w.lower() for p in c.properties.values() for w in p.slot_words}
    bound |= {w.lower() for v in all_values() for w in re.findall(r"[A-Za-z]+", v)}
    for case in cases:
        names = {n.lower() for n in case.recipient.entity_order}

        def words(text):
            found = {w.lower() for w in re.findall(r"[A-Za-z]+", text)}
            return found - FUNCTION_WORDS - bound - names

        recipient = words(" ".join(case.recipient.passages))
        for step in case.edit_steps():
            for edit in step:
                shared = words(edit.source) & recipient
                assert not shared, (case.id, shared, edit.source)


def test_composition_cases_ask_one_hop_and_accept_the_alias_set(cases):
    for case in cases:
        prop = content().properties[case.property]
        if case.params.cell.composition_hop:
            hop = prop.hop
            target = hop.target_of[case.value_new]
            assert case.expected_answer_substring == target and set(case.aliases) == set(hop.aliases[target])
            assert set(case.old_aliases) == set(hop.aliases[hop.target_of[case.value_old]])
            assert target != hop.target_of[case.value_old]
            assert not any(mentions(q, case.value_old) for q in case.queries)
            assert set(case.queries) <= {t.format(name=case.entity) for t in hop.queries}
        else:
            assert case.aliases == (case.value_new,) and case.old_aliases == (case.value_old,)
            assert set(case.queries) <= {t.format(name=case.entity) for t in prop.queries}
        assert len(set(case.queries)) == len(case.queries) == 3


def test_multi_property_edits_target_other_properties_of_the_same_person(cases):
    for case in cases:
        text = " ".join(case.recipient.passages)
        crosstalk = next(p for p in case.probe_queries if p.kind == "same_entity")
        assert len(case.multi) == case.params.cell.multi_prop_count - 1
        for joint in case.multi:
            assert joint.property != case.property
            assert mentions(text, joint.value_old) and not mentions(text, joint.value_new)
            assert crosstalk.expected not in content().properties[joint.property].values
            assert all(mentions(q, case.entity) for q in joint.queries)


def test_wrong_entity_is_a_name_the_case_never_uses(cases):
    for case in cases:
        texts = [*case.recipient.passages, *case.queries, *(p.query for p in case.probe_queries)]
        texts += [t for step in case.edit_steps() for e in step for t in (e.source, e.dst)]
        assert case.wrong_entity in content().names
        assert not any(mentions(t, case.wrong_entity) for t in texts), case.id


def test_recipient_messages_alternate_passages_and_acknowledgements(cases):
    case = next(c for c in cases if c.params.cell.overwrite_count == 2)
    messages = rime.recipient_messages(case)
    assert [r for r, _ in messages] == ["user", "assistant"] * 3
    assert [t for r, t in messages if r == "user"] == list(case.recipient.passages)
    assert len({t for r, t in messages if r == "assistant"}) == 1


@pytest.mark.parametrize("mode", rime.FILLER_MODES)
def test_filler_turns_are_a_stable_prefix_and_never_mention_the_case(cases, mode):
    for case in cases[::7]:
        six = rime.filler_turns(case, mode, 6)
        assert len(six) == 12 and [r for r, _ in six] == ["user", "assistant"] * 6
        assert rime.filler_turns(case, mode, 2) == six[:4]
        assert rime.filler_turns(case, mode, 0) == []
        assert len({t for r, t in six if r == "user"}) == 6
        words = [*case.recipient.entity_order, case.value_old, case.value_new,
                 *(p.expected for p in case.probe_queries)]
        for _, text in six:
            assert not any(w.lower() in text.lower() for w in words), (case.id, text)
    neighbours = [rime.filler_turns(c, mode, 6) for c in cases[:20]]
    assert len({tuple(n) for n in neighbours}) > 1


def test_adversarial_fillers_stay_on_the_edited_property(cases):
    case = cases[0]
    pool = {f.user for f in content().adversarial_fillers[case.property]}
    assert {t for r, t in rime.filler_turns(case, "adversarial", 6) if r == "user"} <= pool
