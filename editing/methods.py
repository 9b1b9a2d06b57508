"""Edit methods behind one interface, so an evaluator can run any of them by name.

An edit method is a frozen dataclass whose fields are its options, with a pure
`apply(state, model, case) -> state` and its many-case form `apply_many(states, model, cases,
reader)` (`reader`: an `rwkv_jax.batch.Reader` placed as the caller placed the model; optional).
`model` is anything with `params`, `cfg` and `tokenizer` attributes (`rwkv_jax.load(...)`'s
bundle, or `rwkv_jax.random_model()`); `case` is a `CaseEdit`, plain strings an evaluator
reads off a benchmark case. New methods subclass `EditMethod`, set `name` and register themselves
with `@register`.

    method = get_method("delta", components="wkv", layers="upper_half")
    edited = method.apply(state, model, case)
"""

from __future__ import annotations

import abc
import dataclasses
import math
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp

from editing import algebra, measure
from editing.algebra import Delta
from editing.calibration import TEMPLATES, Template, calibrate_with
from editing.select import Selection
from editing.writes import truncate
from rwkv_jax.batch import Encoder, Reader, broadcast, take
from rwkv_jax.chat import turn
from rwkv_jax.config import Config
from rwkv_jax.params import Params
from rwkv_jax.state import COMPONENTS, State


class ModelLike(Protocol):
    params: Params
    cfg: Config
    tokenizer: Encoder


@dataclasses.dataclass(frozen=True)
class CaseEdit:
    """One requested fact edit, as plain strings.

    Attributes:
      entity: who the fact is about ("Rohan").
      property: the attribute that changes ("vehicle").
      value_old: the value the live state holds ("hatchback").
      value_new: the value the edit should install ("minivan").
      p_old: calibration prompt stating the old value ("Rohan's vehicle is hatchback.").
      p_new: the same prompt with the new value ("Rohan's vehicle is minivan."). The two should
        differ only in the value.
      p_same: a differently worded prompt that states the *old* value, the second half of the
        null edit's pair. Empty: "The {property} of {entity} is {value_old}."
      correction: the sentence the in-context edit adds. Empty:
        "The {property} of {entity} is now {value_new}."
      transcript: the chat text that built the live state, for methods that read it
        (`reads == "transcript"`); empty when the caller has none.
      people: the names of the conversation's world, the entity among them or not: whom a method
        may ask about to protect (`addressed`, `optimized`), and whose statements `locate` tells
        apart from the entity's. Empty: methods that need them refuse the case.
      values: the property's possible values ("hatchback", "minivan", ...), which `locate` falls
        back on when the transcript never states value_old for the entity.
      properties: the property labels of the world ("vehicle", "city", ...), the property among
        them or not: the other facts `scoped` tells this one apart from. Empty: `scoped` refuses
        the case.
    """

    entity: str
    property: str
    value_old: str
    value_new: str
    p_old: str
    p_new: str
    p_same: str = ""
    correction: str = ""
    transcript: str = ""
    people: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    properties: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("people", "values", "properties"):
                if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                    raise TypeError(f"CaseEdit.{f.name} must be a sequence of non-empty str, got {value!r}")
                object.__setattr__(self, f.name, tuple(value))
            elif not isinstance(value, str):
                raise TypeError(f"CaseEdit.{f.name} must be a str, got {type(value).__name__}")
            elif not value and f.default is dataclasses.MISSING:
                raise ValueError(f"CaseEdit.{f.name} must not be empty")

    @property
    def same_value_prompt(self) -> str:
        return self.p_same or f"The {self.property} of {self.entity} is {self.value_old}."

    @property
    def correction_text(self) -> str:
        return self.correction or f"The {self.property} of {self.entity} is now {self.value_new}."


@dataclasses.dataclass(frozen=True)
class EditMethod(abc.ABC):
    """A named edit method; its dataclass fields are its options.

    `reads` declares what the method looks at besides the live state, so a report can compare
    methods that read alike (see `READS`); `erases` marks methods that remove the old value
    rather than install a new one.
    """

    name: ClassVar[str]
    reads: ClassVar[str] = "calibration"
    erases: ClassVar[bool] = False

    @abc.abstractmethod
    def apply(self, state: State, model: ModelLike, case: CaseEdit) -> State:
        """The edited state. Pure: `state` is not modified."""

    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        """States `[K, ...]`, row i edited by `cases[i]`. Methods that read text override this to
        read every case's text in one vmapped pass, through `reader` (an evaluator's, placed on
        its devices; None: one on `model`'s params); an evaluator edits a whole group so."""
        _check_many(states, cases)
        rows = [self.apply(take(states, i), model, case) for i, case in enumerate(cases)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *rows)

    @property
    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def label(self) -> str:
        """The name plus every option that differs from its default: `delta(components=wkv)`."""
        changed = [f"{f.name}={_short(getattr(self, f.name))}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default]
        return f"{self.name}({', '.join(changed)})" if changed else self.name


class GroupMethod(EditMethod):
    """A method written for a group of cases (`apply_many`); `apply` is that on a group of one."""

    def apply(self, state: State, model: ModelLike, case: CaseEdit) -> State:
        if state.batch_shape:
            raise ValueError(f"{self.name} edits one state with apply, got batch shape "
                             f"{state.batch_shape}; use apply_many")
        return take(self.apply_many(broadcast(state, 1), model, [case]), 0)

    @abc.abstractmethod
    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        """States `[K, ...]`, row i edited by `cases[i]`, text read through `reader` (None: one on
        `model`'s params)."""


def _short(value: Any) -> str:
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return "+".join(value)
    return str(value)


_REGISTRY: dict[str, type[EditMethod]] = {}

STARTS = ("zeros", "live")  # where a delta's calibration prompts are read from
IN_CONTEXT_FORMS = {"statement": "Noted.", "correction": "Understood."}  # form -> acknowledgement

# What a method reads besides the live state: nothing; calibration text built from the case's
# (entity, property, values); text added to the conversation itself; the transcript of the
# conversation that built the state.
READS = ("nothing", "calibration", "context", "transcript")


def register(cls: type[EditMethod]) -> type[EditMethod]:
    """Class decorator: makes an `EditMethod` subclass available to `get_method` by its name."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name`")
    if cls.reads not in READS:
        raise ValueError(f"{cls.__name__}.reads must be one of {READS}, got {cls.reads!r}")
    if _REGISTRY.get(name, cls) is not cls:
        raise ValueError(f"an edit method named {name!r} is already registered "
                         f"({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def method_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_method(name: str, **options: Any) -> EditMethod:
    """The registered method `name`, configured with `options` (its dataclass fields)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown edit method {name!r}; registered: {list(method_names())}")
    cls = _REGISTRY[name]
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"edit method {name!r} has no options {unknown}; it takes {sorted(valid)}")
    return cls(**options)


def reader_of(model: ModelLike, reader: Reader | None) -> Reader:
    """The reader an `apply_many` reads through: the one it was given, or one on `model`'s params."""
    return Reader(model.params, model.cfg) if reader is None else reader


def _check_case(case: CaseEdit) -> None:
    if not isinstance(case, CaseEdit):
        raise TypeError(f"case must be an editing.CaseEdit, got {type(case).__name__}")


def _check_many(states: State, cases: Sequence[CaseEdit]) -> None:
    if isinstance(cases, CaseEdit) or not cases:
        raise ValueError("cases must be a non-empty sequence of editing.CaseEdit")
    for case in cases:
        _check_case(case)
    if states.batch_shape != (len(cases),):
        raise ValueError(f"states batch shape {states.batch_shape} does not match {len(cases)} cases; "
                         "apply_many takes one state per case")


@register
@dataclasses.dataclass(frozen=True)
class NoEdit(EditMethod):
    """The unedited state: the floor every method is compared with."""

    name: ClassVar[str] = "none"
    reads: ClassVar[str] = "nothing"

    def apply(self, state: State, model: ModelLike, case: CaseEdit) -> State:
        _check_case(case)
        return state

    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        _check_many(states, cases)
        return states


@register
@dataclasses.dataclass(frozen=True)
class DeltaEdit(EditMethod):
    """The paper's edit: add `state(p_new) - state(p_old)` to the live state.

    Options (the §5.6 ablations): `template` "chat" or "bare" calibration; `components` "all" or
    a subset such as "wkv"; `layers` None (all), a span name ("upper_half", see
    `editing.select.SPANS`) or layer indices; `alpha` the edit strength. `rank` keeps each wkv
    head's top `rank` singular pairs of the delta (its "value" and "address" directions);
    `start="live"` calibrates from the live state being edited instead of the empty one, so the
    delta is addressed in the live context.
    """

    name: ClassVar[str] = "delta"
    template: Template = "chat"
    components: str | tuple[str, ...] = COMPONENTS
    layers: str | tuple[int, ...] | tuple[bool, ...] | None = None
    alpha: float = 1.0
    rank: int | None = None
    start: str = "zeros"

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"rank must be None or an int >= 1, got {self.rank!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        select = Selection(layers=self.layers, components=self.components)  # validates
        object.__setattr__(self, "layers", select.layers)
        object.__setattr__(self, "components", select.components)
        object.__setattr__(self, "alpha", float(self.alpha))

    @property
    def select(self) -> Selection:
        return Selection(layers=self.layers, components=self.components)

    def pair(self, case: CaseEdit) -> tuple[str, str]:
        """The calibration prompts `(from, to)`."""
        return case.p_old, case.p_new

    def deltas(self, model: ModelLike, cases: Sequence[CaseEdit], states: State | None = None,
               reader: Reader | None = None) -> Delta:
        """One delta per case `[K, ...]`, every calibration pair read in one vmapped pass (by
        `reader`), from the empty state or (`start="live"`) from `states` `[K]`."""
        for case in cases:
            _check_case(case)
        if self.start == "live" and states is None:
            raise ValueError("a delta calibrated from the live state needs the states it edits")
        d = calibrate_with(reader_of(model, reader), model.tokenizer, [self.pair(c) for c in cases],
                           template=self.template, init_state=states if self.start == "live" else None)
        return d if self.rank is None else d.replace(wkv=truncate(d.wkv, self.rank))

    def delta(self, model: ModelLike, case: CaseEdit, state: State | None = None) -> Delta:
        states = None if state is None else broadcast(state, 1)
        return take(self.deltas(model, [case], states), 0)

    def apply(self, state: State, model: ModelLike, case: CaseEdit) -> State:
        if self.start == "live" and state.batch_shape:
            raise ValueError(f"start='live' calibrates from one state, got batch shape "
                             f"{state.batch_shape}; use apply_many")
        return algebra.apply(state, self.delta(model, case, state if self.start == "live" else None),
                             alpha=self.alpha, select=self.select)

    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        _check_many(states, cases)
        return algebra.apply(states, self.deltas(model, cases, states, reader), alpha=self.alpha,
                             select=self.select)


@register
@dataclasses.dataclass(frozen=True)
class NullEdit(DeltaEdit):
    """A sham edit through the same machinery: calibrated on two wordings of the *old* value.

    It moves the state about as much as a real calibration does but carries no new fact, so
    whatever it changes is the cost of editing at all.
    """

    name: ClassVar[str] = "null"

    def pair(self, case: CaseEdit) -> tuple[str, str]:
        if case.same_value_prompt == case.p_old:
            raise ValueError("the null edit needs p_same worded differently from p_old; "
                             "identical prompts give an all-zero delta")
        return case.p_old, case.same_value_prompt


@register
@dataclasses.dataclass(frozen=True)
class RandomEdit(DeltaEdit):
    """A random direction with the real delta's norm in every wkv head and token-shift vector.

    Tells a targeted edit from a mere perturbation of the same size. The PRNG key is
    `jax.random.key(seed)` folded with a hash of the case, so cases get different directions
    and every run is reproducible. (An int rather than a key array keeps the method hashable
    and its options loggable.)
    """

    name: ClassVar[str] = "random"
    seed: int = 0

    def deltas(self, model: ModelLike, cases: Sequence[CaseEdit], states: State | None = None,
               reader: Reader | None = None) -> Delta:
        reference = super().deltas(model, cases, states, reader)
        hashes = jnp.array([zlib.crc32(f"{c.p_old}\0{c.p_new}".encode()) for c in cases], jnp.uint32)

        def noise_of(case_hash: jax.Array) -> State:
            key = jax.random.fold_in(jax.random.key(self.seed), case_hash)
            keys = jax.random.split(key, len(COMPONENTS))
            return State(**{c: jax.random.normal(k, getattr(reference, c).shape[1:])
                            for c, k in zip(COMPONENTS, keys, strict=True)})

        noise = jax.vmap(noise_of)(hashes)
        want, got = measure.norms(reference), measure.norms(noise)
        return State(**{c: getattr(noise, c) * State.per_unit(c, want.unit(c) / got.unit(c))
                        for c in COMPONENTS})


@register
@dataclasses.dataclass(frozen=True)
class InContextEdit(EditMethod):
    """The baseline without state arithmetic: a turn read through the normal forward pass.

    `form="statement"` (default) tells the model the case's own edit sentence, the form its
    conversations state facts in: `User: <p_new>\\n\\nAssistant: Noted.\\n\\n`.
    `form="correction"` is the older wording, `User: Correction: <correction_text>\\n\\nAssistant:
    Understood.\\n\\n`, a form the model never saw. `ack` replaces the form's acknowledgement and
    `prefix` the correction's lead-in.
    """

    name: ClassVar[str] = "in_context"
    reads: ClassVar[str] = "context"
    form: str = "statement"
    prefix: str = "Correction: "
    ack: str = ""

    def __post_init__(self) -> None:
        if self.form not in IN_CONTEXT_FORMS:
            raise ValueError(f"form must be one of {list(IN_CONTEXT_FORMS)}, got {self.form!r}")

    def text(self, case: CaseEdit) -> str:
        ack = self.ack or IN_CONTEXT_FORMS[self.form]
        said = case.p_new if self.form == "statement" else self.prefix + case.correction_text
        return turn("user", said) + turn("assistant", ack)

    def apply(self, state: State, model: ModelLike, case: CaseEdit) -> State:
        _check_case(case)
        batch = state.batch_shape
        n = math.prod(batch)
        # any batch shape -> [n] states reading the same text
        flat = jax.tree.map(lambda x: x.reshape((n,) + x.shape[len(batch):]), state)
        _, out = Reader(model.params, model.cfg).read_texts(model.tokenizer, [self.text(case)] * n, flat)
        return jax.tree.map(lambda x: x.reshape(batch + x.shape[1:]), out)

    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        _check_many(states, cases)
        return reader_of(model, reader).read_texts(model.tokenizer, [self.text(c) for c in cases], states)[1]
