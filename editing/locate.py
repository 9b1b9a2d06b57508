"""`locate`: rewrite the write that stored the fact, found in the transcript that built the state.

The method reads the conversation that built the live state (`CaseEdit.transcript`), finds the
last place it states the old value for the entity (the old value's tokens, when the nearest name
mentioned before them is the entity's), and replaces what those tokens wrote:

    D  = S0 + new - (S0 + old)           S0 the state before the span; the value's tokens read from it
    dS = D Phi                           decayed to the present

A stack's later steps name as old value one the transcript never states (an earlier edit's new
value); their span is the transcript's last statement for the entity of any bundled value of the
property, and since every step reads its old and new value from the same S0 their writes add up
to the last value's.

where `Phi` is the product of the later tokens' transitions `diag(w) - kk (a kk)^T` at each layer.
`D Phi` is computed as the tangent of the rest of the transcript's forward pass with only that
layer's state perturbed: a layer's own transitions depend on the layers below it, never on its
own state, so this is exact per layer (first order across layers, survey §5.3 E4).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from editing import algebra
from editing.methods import CaseEdit, GroupMethod, ModelLike, _check_many, reader_of, register
from editing.select import Selection
from rwkv_jax.batch import Encoder, Reader, pad, power_of_two
from rwkv_jax.config import Config
from rwkv_jax.model import forward
from rwkv_jax.params import Params
from rwkv_jax.state import State

MISSING = ("keep", "raise")


class EntityNotInTranscriptError(ValueError):
    """The transcript never mentions the entity, or never states its old value."""


def span(tokenizer: Encoder, transcript: str, entity: str, value: str, people: Sequence[str],
         alternatives: Sequence[str] = ()) -> tuple[list[int], int, int]:
    """The transcript's tokens and the token span `[start, end)` of the last statement of `value`
    for `entity`: the value's tokens where the nearest name mentioned before them is `entity`
    (names: `people` and the entity). If it never states `value` for the entity, the last
    statement of any of `alternatives`."""
    if not re.search(rf"\b{re.escape(entity)}\b", transcript):
        raise EntityNotInTranscriptError(f"the transcript never mentions {entity!r}")
    people = "|".join(re.escape(n) for n in sorted({*people, entity}, key=len, reverse=True))
    mentions = [(m.start(), m.group()) for m in re.finditer(rf"\b({people})\b", transcript)]

    def last(values: Sequence[str]) -> re.Match | None:
        found = None
        pattern = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
        for m in re.finditer(rf"\b({pattern})\b", transcript, re.IGNORECASE) if values else ():
            before = [name for at, name in mentions if at < m.start()]
            if before and before[-1] == entity:
                found = m
        return found

    found = last([value]) or last(alternatives)
    if found is None:
        raise EntityNotInTranscriptError(f"the transcript never states {value!r} for {entity!r}")
    tokens = tokenizer.encode(transcript)
    # byte offset where each token ends; the span is every token overlapping the value
    ends = np.cumsum([len(tokenizer.decode([t]).encode()) for t in tokens])
    # the value with its leading space, as the new value " " + value_new is read
    begin = found.start() - transcript[: found.start()].endswith(" ")
    lo, hi = len(transcript[:begin].encode()), len(transcript[: found.end()].encode())
    start = int(np.searchsorted(ends, lo, side="right"))
    end = int(np.searchsorted(ends, hi, side="left")) + 1
    return tokens, start, end


@functools.partial(jax.jit, static_argnames=("cfg",))
def _rewrite(params: Params, cfg: Config, tokens: jax.Array, start: jax.Array, end: jax.Array,
             length: jax.Array, values: jax.Array, n_values: jax.Array) -> jax.Array:
    # tokens [B, T] transcripts, span [start, end) and length [B]; values [B, 2, Tv] the new and
    # the old value's tokens, n_values [B, 2] -> dS [B, L, H, N, N]
    def one(t, s, e, n, v, nv):
        before = forward(params, cfg, t, length=s, logits="last")[1]
        old = forward(params, cfg, t, length=e, logits="last")[1]
        read = lambda v, nv: forward(params, cfg, v, before, length=nv, logits="last")[1].wkv
        D = read(v[0], nv[0]) - read(v[1], nv[1])  # [L, H, N, N]
        rest = jnp.roll(t, -e)  # the tokens after the span, from position 0

        def carried(wkv):
            return forward(params, cfg, rest, old.replace(wkv=wkv), length=n - e, logits="last")[1].wkv

        def through(layer):
            tangent = jnp.where(jnp.arange(cfg.n_layer)[:, None, None, None] == layer, D, 0.0)
            return jax.jvp(carried, (old.wkv,), (tangent,))[1][layer]

        return jax.vmap(through)(jnp.arange(cfg.n_layer))

    return jax.vmap(one)(tokens, start, end, length, values, n_values)


def _padded(rows: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    # T a power of two (at least 16): transcripts vary in length, and each T compiles the rewrite
    # kernel anew
    return pad(rows, max(16, power_of_two(max(map(len, rows)))))


@register
@dataclasses.dataclass(frozen=True)
class LocateEdit(GroupMethod):
    """Replaces the transcript's write of the old value with the new value's, decayed to now.

    missing: what a case whose transcript never mentions the entity (or never states its old
    value) gets: "keep" leaves its state unchanged (locating by a wrong name finds nothing to
    rewrite), "raise" raises `EntityNotInTranscriptError`. layers: the layers rewritten.
    """

    name: ClassVar[str] = "locate"
    reads: ClassVar[str] = "transcript"
    missing: str = "keep"
    layers: str | tuple[int, ...] | tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.missing not in MISSING:
            raise ValueError(f"missing must be one of {MISSING}, got {self.missing!r}")
        object.__setattr__(self, "layers", Selection(layers=self.layers).layers)

    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        _check_many(states, cases)
        found, rows = [], []
        for i, case in enumerate(cases):
            if not case.transcript:
                raise ValueError("locate reads the transcript that built the state; this case has none")
            if not case.people:
                raise ValueError("locate tells the entity's statements from other people's by name; "
                                 "this case has no CaseEdit.people")
            try:
                found_span = span(model.tokenizer, case.transcript, case.entity, case.value_old, case.people,
                                  case.values)
                rows.append((*found_span, [model.tokenizer.encode(" " + v) for v in (case.value_new, case.value_old)]))
                found.append(i)
            except EntityNotInTranscriptError:
                if self.missing == "raise":
                    raise
        dS = jnp.zeros_like(states.wkv)
        if found:
            tokens, lengths = _padded([r[0] for r in rows])
            values, n_values = _padded([v for r in rows for v in r[3]])
            values, n_values = values.reshape(len(rows), 2, -1), n_values.reshape(len(rows), 2)
            starts = np.array([r[1] for r in rows], np.int32)
            ends = np.array([r[2] for r in rows], np.int32)
            got = reader_of(model, reader).map(_rewrite, (tokens, starts, ends, lengths, values, n_values))
            dS = dS.at[np.array(found)].set(got[:len(found)])
        zeros = jax.tree.map(jnp.zeros_like, states)
        return algebra.apply(states, zeros.replace(wkv=dS), select=Selection(self.layers, "wkv"))
