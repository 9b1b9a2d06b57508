"""Scoped edits (GRACE's codebook, MEMOIR's routing, Larimar's scope detector, in the state): the
unedited state is kept next to the edited one, each edit leaves a routing key, and a question is
answered from the edited state only when it is about an edited fact.

The key of an edit is what the model's residual stream holds at the last token of the method's own
question about (entity, property) (`editing.keys.question`), read from the unedited state after
block `layer` (by default the last), centred on the mean over the same question about other
people (`CaseEdit.people`) and about the entity's other properties (`CaseEdit.properties`), so that
what the question shares with questions about someone else's same fact, or about the same
person's other facts, drops out and the (person, property) pair remains. A question routes to the
edited state when its own centred stream points along some edit's key (cosine above `threshold`).
Measured on the bundled model's session dev split, the final stream keys the pair whatever the
wording of the question: a key centred on other people alone keys the person, and sends every
question about an edited person's other facts to the edited state too (`docs/many-edits.md`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from editing.keys import other_people, other_properties, question
from editing.methods import CaseEdit, ModelLike, reader_of
from rwkv_jax.batch import Encoder, Reader, broadcast, encode, pad, take
from rwkv_jax.config import Config
from rwkv_jax.model import forward_trace
from rwkv_jax.params import Params
from rwkv_jax.state import State

THRESHOLD = 0.7  # the cosine tuned on the session dev split (`docs/many-edits.md`)


@flax.struct.dataclass
class Scope:
    """The routing keys of E edits.

    Attributes:
      keys: `[E, D]` unit vectors, each edit's centred stream.
      centres: `[E, D]` the mean each edit's stream was centred on.
      layer: the block whose input the streams are read at (`n_layer`: after the last block).
    """

    keys: Float[Array, "E D"]
    centres: Float[Array, "E D"]
    layer: int = flax.struct.field(pytree_node=False)


@functools.partial(jax.jit, static_argnames=("cfg", "layer"))
def _streams(params: Params, cfg: Config, tokens: Int[Array, "B T"], lengths: Int[Array, " B"], states: State,
             *, layer: int) -> Float[Array, "B D"]:
    def one(t, n, s):
        # the residual stream entering block `layer` at the last real token (right padding after it
        # cannot reach back)
        return forward_trace(params, cfg, t, s)[2].hidden[layer, n - 1]

    return jax.vmap(one)(tokens, lengths, states)


def streams(reader: Reader, tokenizer: Encoder, texts: Sequence[str], states: State, layer: int
            ) -> Float[Array, "B D"]:
    """The residual stream entering block `layer` (`cfg.n_layer` for the final one) after each text,
    read from its state (`[B]`, or one for all)."""
    _check_layer(layer, reader.cfg)
    tokens, lengths = pad(encode(tokenizer, texts, reader.cfg.vocab_size))
    rows = (tokens, lengths, broadcast(states, len(texts)))
    return reader.map(functools.partial(_streams, layer=layer), rows)


def _check_layer(layer: int, cfg: Config) -> None:
    if not 0 <= layer <= cfg.n_layer:
        raise ValueError(f"layer must be in 0..{cfg.n_layer}, got {layer}")


def _unit(x: Float[Array, "*B D"]) -> Float[Array, "*B D"]:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def scope(states: State, model: ModelLike, cases: Sequence[CaseEdit], *, layer: int | None = None,
          others: int = 8, reader: Reader | None = None) -> Scope:
    """The routing keys of the edits `cases`, one per unedited state `states` `[E]` (the state each
    edit was made on). `others` people from each case's `people` and `others` of its `properties`
    centre its key."""
    cfg = model.cfg
    layer = cfg.n_layer if layer is None else layer
    _check_layer(layer, cfg)
    reader = reader_of(model, reader)
    texts, rows = [], []
    for i, case in enumerate(cases):
        if not case.properties:
            raise ValueError(f"scoped keys centre on the entity's other properties: the edit of {case.entity}'s "
                             f"{case.property} has no CaseEdit.properties")
        texts += [question(case.entity, case.property)]
        texts += [question(name, case.property) for name in other_people(case.entity, case.people, others)]
        texts += [question(case.entity, p) for p in other_properties(case.property, case.properties, others)]
        rows += [i] * (1 + 2 * others)
    h = streams(reader, model.tokenizer, texts, take(states, np.array(rows)), layer)
    h = h.reshape(len(cases), 1 + 2 * others, -1)
    centres = h[:, 1:].mean(axis=1)
    return Scope(keys=_unit(h[:, 0] - centres), centres=centres, layer=layer)


def key_bytes(cfg: Config) -> int:
    """What scoping keeps per edit besides the unedited state: its key and centre, float32 `[D]` each."""
    return 2 * cfg.n_embd * np.dtype(np.float32).itemsize


@jax.jit
def similarity(scope: Scope, h: Float[Array, "B D"]) -> Float[Array, "B E"]:
    """The cosine of each question's stream, centred as each edit's was, with that edit's key."""
    return jnp.einsum("bed,ed->be", _unit(h[:, None, :] - scope.centres[None]), scope.keys)


def route(scope: Scope, model: ModelLike, questions: Sequence[str], states: State, *, threshold: float = THRESHOLD,
          reader: Reader | None = None, owners: tuple[Int[Array, " E"], Int[Array, " B"]] | None = None
          ) -> tuple[Bool[Array, " B"], Float[Array, "B E"]]:
    """Which questions (chat prompts, each read from its unedited state in `states`) go to the
    edited state, and every question's similarity to every edit's key. `owners` (the conversation
    of each edit, and of each question) lets one scope serve several conversations: a question
    is compared with its own conversation's edits only (the others' similarity is -inf)."""
    h = streams(reader_of(model, reader), model.tokenizer, questions, states, scope.layer)
    sim = similarity(scope, h)
    if owners is not None:
        edits, asked = (jnp.asarray(o) for o in owners)
        sim = jnp.where(edits[None, :] == asked[:, None], sim, -jnp.inf)
    return sim.max(axis=-1, initial=-jnp.inf) > threshold, sim


def answering_states(routed: Bool[Array, " B"], edited: State, unedited: State) -> State:
    """Per question, the edited state where it routes there and the unedited one elsewhere."""
    return jax.tree.map(lambda e, u: jnp.where(routed.reshape(-1, *(1,) * (e.ndim - 1)), e, u), edited, unedited)
