"""What an evaluation runs for each case (paper §5.4): pure planning, no model.

Per case: every edit branch (a method, calibrated on the target or on the `wrong_entity`), every
filler setting (none, or k neutral or adversarial turns), and every question (the target's
paraphrases, the jointly edited properties' questions, the probes). A row is one question asked in
one branch under one setting; `row_keys(case, spec)` lists them in the order they are written.

Two methods always run: `none` (the retention filter and the old-value baseline) and `random`
(a norm-matched random delta). Every method that installs the new value is also calibrated on the
wrong entity. Those two controls are measured at ft=0 only, where specificity is defined. A method
that erases (`EditMethod.erases`) runs the same branches and questions; its rows keep the case's
expected answers, and what it is judged on is whether the old value is gone and what comes instead
(`old_stripped`, `new_stripped`, `others_stripped`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from editing import CaseEdit, EditMethod, get_method
from rime.chat import chat_text
from rime.data.checks import mentions
from rime.data.content import content
from rime.data.schema import CalibrationPair, Case
from rime.data.turns import FILLER_MODES, MAX_FILLER_TURNS, filler_turns, recipient_messages
from rime.eval.scoring import contains_any
from rwkv_jax.chat import chat_prompt

HEADLINE_METHODS = ("delta", "null", "in_context")
HEADLINE_FILLERS = (0, 1)
SHAMS = ("none", "null", "random")  # carry no new value, so a wrong-entity variant means nothing
TARGET, WRONG_ENTITY = "target", "wrong_entity"
NO_FILLER = "none"
EDIT, JOINT = "edit", "joint"

RowKey = tuple[str, str, str, str, int, str, int]  # case, method, variant, filler mode, turns, kind, index


@dataclasses.dataclass(frozen=True)
class Branch:
    """One edited state of a case: a method, calibrated on the target or on the wrong entity."""

    method: EditMethod
    variant: str = TARGET

    @property
    def label(self) -> str:
        return self.method.label

    @property
    def is_control(self) -> bool:
        return self.variant == WRONG_ENTITY or self.method.name == "random"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What the conversation holds between the edit and the question: k filler turns of a mode."""

    mode: str
    turns: int


@dataclasses.dataclass(frozen=True)
class Question:
    """A question and what its answer is scored against.

    expected: any of these in the answer makes it correct. old / new: answers that show the old
    fact survived / the new value arrived (for probes: the edited property's values, so a probe
    answered with the new value shows the edit bled into it). others: for the target's own
    questions, the other answers the passage offers (see `passage_answers`); empty for probes.
    """

    kind: str
    index: int
    text: str
    expected: tuple[str, ...]
    old: tuple[str, ...]
    new: tuple[str, ...]
    others: tuple[str, ...] = ()


def parse_method(spec: str) -> EditMethod:
    """`NAME` or `NAME:option=value:...` (tuples joined by `+`): `delta:components=wkv:layers=upper_half`.

    Each option is tried on its own first, so an error names the option that caused it."""
    name, *options = spec.strip().split(":")
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"method {spec!r}: option {option!r} is not KEY=VALUE")
        kwargs[key] = _value(value)
        try:
            method = get_method(name, **{key: kwargs[key]})
            default = next(f.default for f in dataclasses.fields(method) if f.name == key)
            if type(default) in _KINDS and not isinstance(kwargs[key], _KINDS[type(default)]):
                raise ValueError(f"expected {_KINDS[type(default)][-1].__name__}, like the default {default!r}")
        except (ValueError, TypeError) as err:
            raise ValueError(f"method {spec!r}: option {key}={value!r}: {err}") from None
    try:
        return get_method(name, **kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"method {spec!r}: {err}") from None


# What an option parsed from text must be, by the type of its default (an int option takes no float).
_KINDS: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,)}


def _value(text: str) -> Any:
    if "+" in text:
        return tuple(_value(part) for part in text.split("+"))
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclasses.dataclass(frozen=True)
class Spec:
    """The protocol's settings, everything but the model and the cases.

    methods: every method that runs (`build` adds `none` and `random`); `branches` adds the
    wrong-entity variants. fillers: filler turn counts (0 is always included); modes: filler modes
    for k > 0.
    """

    methods: tuple[EditMethod, ...]
    fillers: tuple[int, ...] = HEADLINE_FILLERS
    modes: tuple[str, ...] = FILLER_MODES
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        if "none" not in {m.name for m in self.methods}:
            raise ValueError("the protocol needs the `none` method: it is the retention filter")
        bad = [k for k in self.fillers if not 0 <= k <= MAX_FILLER_TURNS]
        if bad:
            raise ValueError(f"filler turn counts must be in 0..{MAX_FILLER_TURNS}, got {bad}")
        unknown = [m for m in self.modes if m not in FILLER_MODES]
        if unknown or not self.modes:
            raise ValueError(f"filler modes must be a non-empty subset of {FILLER_MODES}, got {list(self.modes)}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        object.__setattr__(self, "fillers", tuple(sorted({0, *self.fillers})))

    @classmethod
    def build(cls, methods: Sequence[str] = HEADLINE_METHODS, *, seed: int = 0, **settings: Any) -> Spec:
        """From method specs (see `parse_method`); `none` and `random` (with `seed`) are added
        unless given."""
        parsed = [parse_method(m) for m in methods]
        names = {m.name for m in parsed}
        none = [] if "none" in names else [get_method("none")]
        random = [] if "random" in names else [get_method("random", seed=seed)]
        ordered = [*none, *parsed, *random]
        labels = [m.label for m in ordered]
        if len(set(labels)) != len(labels):
            raise ValueError(f"methods repeat: {labels}")
        return cls(methods=tuple(ordered), **settings)

    def branches(self) -> list[Branch]:
        targets = [Branch(m) for m in self.methods]
        return targets + [Branch(m, WRONG_ENTITY) for m in self.methods if m.name not in SHAMS]

    def settings(self, branch: Branch) -> list[Setting]:
        """ft=0 for every branch; the filler grid for every branch that is not a control."""
        if branch.is_control:
            return [Setting(NO_FILLER, 0)]
        return [Setting(NO_FILLER, 0)] + [Setting(mode, k) for mode in self.modes for k in self.fillers if k]

    def config(self) -> dict:
        """The recorded part of a run's config."""
        return {
            "methods": [m.label for m in self.methods],
            "wrong_entity": [b.label for b in self.branches() if b.variant == WRONG_ENTITY],
            "fillers": list(self.fillers), "modes": list(self.modes),
            "max_new_tokens": self.max_new_tokens,
            "seeds": {m.label: m.options["seed"] for m in self.methods if "seed" in m.options},
            "reads": {m.label: m.reads for m in self.methods},
            "erases": [m.label for m in self.methods if m.erases],
        }


def property_label(key: str) -> str:
    """How a sentence names the property (`favourite drink`); unknown keys stand for themselves."""
    prop = content().properties.get(key)
    return prop.label if prop else key


def case_edit(entity: str, prop: str, old: str, new: str, pair: CalibrationPair, transcript: str) -> CaseEdit:
    """One edit of property `prop` (its key) as the editing registry takes it, with the bundled names,
    the property's values and every property's label as the world a method may draw on."""
    world = content()
    known = world.properties.get(prop)
    return CaseEdit(entity, property_label(prop), old, new, pair.source, pair.dst, transcript=transcript,
                    people=world.names, values=known.values if known else (),
                    properties=tuple(p.label for p in world.properties.values()))


def case_edits(case: Case, entity: str | None = None) -> list[tuple[CaseEdit, ...]]:
    """The case's edits as the editing registry takes them, in application order (see
    `Case.edit_steps`); with `entity`, every calibration text names it instead of the target.
    Each carries the recipient conversation as its transcript, and the bundled names and the
    property's values as the world a method may draw on."""
    if case.stack:
        values = [[(case.property, s.value_old, s.value_new)] for s in case.stack]
    else:
        values = [[(case.property, case.value_old, case.value_new)] * len(case.edits)]
    values[0] += [(j.property, j.value_old, j.value_new) for j in case.multi for _ in j.edits]
    who, transcript = entity or case.entity, recipient_text(case)
    return [tuple(case_edit(who, prop, old, new, e, transcript)
                  for e, (prop, old, new) in zip(step, step_values, strict=True))
            for step, step_values in zip(case.edit_steps(entity), values, strict=True)]


def edits_applied(params: Mapping[str, Any]) -> int:
    """How many edits a case's plan applies (`case_edits`, all steps), from its params: every stack
    step plus every jointly edited property, each one edit as the generator writes them."""
    return params["stack_depth"] + params["multi_prop_count"] - 1


def passage_answers(case: Case, prop: str, answers: Sequence[str]) -> tuple[str, ...]:
    """The values of property `prop` that the recipient passages state, other than `answers` (and
    anything containing or contained in one): someone else's value, or one the target held before
    an overwrite. For a composition question, their one-hop answers instead."""
    spec = content().properties.get(prop)
    if spec is None:
        return ()
    text = " ".join(case.recipient.passages)
    stated = [v for v in spec.values if mentions(text, v)]
    if case.params.cell.composition_hop and prop == case.property:
        stated = [alias for v in stated for alias in spec.hop.aliases[spec.hop.target_of[v]]]
    return tuple(dict.fromkeys(v for v in stated
                               if not contains_any(v, answers) and not any(v.casefold() in a.casefold()
                                                                           for a in answers)))


def questions(case: Case) -> list[Question]:
    """The target's paraphrases, then each joint property's questions, then the probes."""
    others = passage_answers(case, case.property, (*case.aliases, *case.old_aliases))
    out = [Question(EDIT, i, q, case.aliases, case.old_aliases, case.aliases, others)
           for i, q in enumerate(case.queries)]
    joint = [(q, (j.value_new,), (j.value_old,), passage_answers(case, j.property, (j.value_new, j.value_old)))
             for j in case.multi for q in j.queries]
    out += [Question(JOINT, i, q, new, old, new, rest) for i, (q, new, old, rest) in enumerate(joint)]
    counts: dict[str, int] = {}
    for probe in case.probe_queries:
        index = counts[probe.kind] = counts.get(probe.kind, -1) + 1
        out.append(Question(probe.kind, index, probe.query, (probe.expected,), (case.value_old,),
                            (case.value_new,)))
    return out


def row_keys(case: Case, spec: Spec) -> list[RowKey]:
    """Every row a finished case has, in the order they are written."""
    qs = questions(case)
    return [(case.id, b.label, b.variant, s.mode, s.turns, q.kind, q.index)
            for b in spec.branches() for s in spec.settings(b) for q in qs]


def recipient_text(case: Case) -> str:
    return chat_text(recipient_messages(case))


def filler_text(case: Case, mode: str, start: int, stop: int) -> str:
    """Filler turns start+1..stop, to read after the first `start` (the turns are one fixed sequence)."""
    return chat_text(filler_turns(case, mode, stop)[2 * start:])


def question_prompt(question: Question) -> str:
    return chat_prompt([("user", question.text)])


def scoped_label(label: str) -> str:
    """A method's label when it answers scoped (`rime.eval.sessions.SessionEvaluator`)."""
    return f"scoped({label})"


def scoped_base(label: str) -> str:
    """The method a scoped label names (`delta` for `scoped(delta)`); other labels are their own."""
    return label[len("scoped("):-1] if label.startswith("scoped(") and label.endswith(")") else label
