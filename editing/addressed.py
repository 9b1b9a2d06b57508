"""Edits that write only where the model reads about the person: `addressed` and `erase`.

The plain delta adds the whole calibrated difference to every head, so whatever else the heads
hold moves with it. These methods first find the read keys `R` of their own question about
(entity, property) at the live state (`editing.keys`), then change each head only along them
(`editing.writes`): `addressed` makes `S + dS` read along `R` what the calibrated state `S + delta`
would read, `erase` makes it read nothing there. With `protect=n`, the read keys of the same
question about n other people (from the bundled name list) must read exactly as before.

Under the wrong-entity control every text names the wrong person: the calibration, the question
and so the keys.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from editing import algebra, writes
from editing.calibration import TEMPLATES, Template, calibrate_with
from editing.keys import KEY_KINDS, KeyKind, other_people, question, read_keys_with
from editing.methods import STARTS, CaseEdit, GroupMethod, ModelLike, _check_many, reader_of, register
from editing.select import Selection
from rwkv_jax.batch import Reader, take
from rwkv_jax.state import State


@dataclasses.dataclass(frozen=True)
class ReadAddressed(GroupMethod):
    """Shared options of the methods that write along read keys.

    keys: "gradient" or "receptance" (see `editing.keys`); k: keys per head; lam: the write's
    ridge; protect: how many other people's read keys to hold fixed; layers: the layers written
    (as in `Selection`).
    """

    keys: KeyKind = "gradient"
    k: int = 4
    lam: float = 0.0
    protect: int = 0
    layers: str | tuple[int, ...] | tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.keys not in KEY_KINDS:
            raise ValueError(f"keys must be one of {KEY_KINDS}, got {self.keys!r}")
        for field in ("k", "protect"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < (field == "k"):
                raise ValueError(f"{field} must be an int >= {int(field == 'k')}, got {value!r}")
        lam = float(self.lam)
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"lam must be finite and >= 0, got {self.lam!r}")
        object.__setattr__(self, "lam", lam)
        object.__setattr__(self, "layers", self.select.layers)

    @property
    def select(self) -> Selection:
        return Selection(layers=self.layers, components="wkv")

    def addresses(self, states: State, model: ModelLike, cases: Sequence[CaseEdit], reader: Reader | None = None
                  ) -> tuple[Float[Array, "K L H N k"], Float[Array, "K L H N protect*k"] | None]:
        """Read keys of each case's own question, addressed at its old value, and the preserved
        keys of `protect` other people's (None without protection)."""
        reader = reader_of(model, reader)
        R = read_keys_with(reader, model.tokenizer, [question(e.entity, e.property) for e in cases],
                           [e.value_old for e in cases], states, kind=self.keys, k=self.k)
        if not self.protect:
            return R, None
        others = [question(name, e.property) for e in cases for name in other_people(e.entity, e.people, self.protect)]
        repeated = take(states, np.repeat(np.arange(len(cases)), self.protect))
        kept = read_keys_with(reader, model.tokenizer, others, [None] * len(others), repeated,
                              kind=self.keys, k=self.k)
        # [K * n, L, H, N, k] -> [K, L, H, N, n * k]
        kept = kept.reshape(len(cases), self.protect, *kept.shape[1:])
        return R, jnp.moveaxis(kept, 1, -2).reshape(*R.shape[:-1], -1)

    def write(self, states: State, wkv: Float[Array, "K L H N N"]) -> State:
        """`states` with `wkv` added on the selected layers."""
        zeros = jax.tree.map(jnp.zeros_like, states)
        return algebra.apply(states, zeros.replace(wkv=wkv), select=self.select)


@functools.partial(jax.jit, static_argnames=("lam",))
def _addressed(wkv, delta, keys, preserved, lam):
    # wkv, delta [K, L, H, N, N], keys [K, L, H, N, k], preserved [..., N, p] or None -> dS
    return writes.write(wkv, keys, (wkv + delta) @ keys, lam=lam, preserved=preserved)


@functools.partial(jax.jit, static_argnames=("lam",))
def _erase(wkv, keys, preserved, lam):
    return writes.erase(wkv, keys, lam=lam, preserved=preserved)


@register
@dataclasses.dataclass(frozen=True)
class AddressedEdit(ReadAddressed):
    """The read-addressed least-squares write of the calibrated delta (survey §5.3 E1).

    Per selected layer and head, `dS = argmin ||dS||_F` with `(S + dS) R ~= (S + delta) R`: a
    rank-k key -> value write instead of the whole delta. `template` and `start` are the
    calibration's (as for `delta`), `alpha` scales the write.
    """

    name: ClassVar[str] = "addressed"
    template: Template = "chat"
    start: str = "zeros"
    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        object.__setattr__(self, "alpha", float(self.alpha))

    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        _check_many(states, cases)
        delta = calibrate_with(reader_of(model, reader), model.tokenizer,
                               [(c.p_old, c.p_new) for c in cases], template=self.template,
                               init_state=states if self.start == "live" else None)
        keys, preserved = self.addresses(states, model, cases, reader)
        dS = _addressed(states.wkv, delta.wkv, keys, preserved, self.lam)
        return self.write(states, self.alpha * dS)


@register
@dataclasses.dataclass(frozen=True)
class EraseEdit(ReadAddressed):
    """Larimar's selective forgetting along the read keys: `dS = -S R (R^T R + lam I)^-1 R^T`, so
    the own question about the person reads nothing where it read the old value."""

    name: ClassVar[str] = "erase"
    erases: ClassVar[bool] = True

    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        _check_many(states, cases)
        keys, preserved = self.addresses(states, model, cases, reader)
        return self.write(states, _erase(states.wkv, keys, preserved, self.lam))
