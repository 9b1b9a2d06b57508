"""Read keys: the directions of each wkv head that a question about (entity, property) reads.

A method that writes along read keys builds its own question from the entity and the property
(`question`), never the benchmark's queries, and reads it from the live state. Two kinds of key:

- "gradient": the top right singular vectors (key side) of `d log p(answer token) / d S` per head.
  The gradient flows through the question's own tokens, so these keys already carry the decay and
  erasure the question applies before it reads the answer (survey §5.3 E4).
- "receptance": the top left singular vectors of the receptances `r` at the question's tokens,
  as the model computes them from the live state; cheaper, with no transport.

Both come out as orthonormal bases `[..., L, H, N, k]`, one key per column.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from rwkv_jax.batch import Encoder, Reader, encode, pad
from rwkv_jax.chat import chat_prompt
from rwkv_jax.config import Config
from rwkv_jax.model import forward, forward_trace, layer_norm
from rwkv_jax.params import Params
from rwkv_jax.quant import linear
from rwkv_jax.state import State

KeyKind = Literal["gradient", "receptance"]
KEY_KINDS = ("gradient", "receptance")
ARGMAX = -1  # answer token: whatever the live state answers now


def question(entity: str, prop: str) -> str:
    """A method's own question about (entity, property), as a chat prompt awaiting the answer."""
    return chat_prompt([("user", f"What is {entity}'s {prop}?")])


def other_people(entity: str, people: Sequence[str], n: int) -> list[str]:
    """`n` names from `people`, none of them `entity`, chosen by a hash of `entity` (reproducible,
    and different people for different entities)."""
    return _others(entity, people, n, "people")


def other_properties(prop: str, properties: Sequence[str], n: int) -> list[str]:
    """`n` property labels from `properties`, none of them `prop`, chosen by a hash of `prop`."""
    return _others(prop, properties, n, "properties")


def _others(item: str, pool: Sequence[str], n: int, field: str) -> list[str]:
    rest = [m for m in pool if m != item]
    if not 0 <= n <= len(rest):
        raise ValueError(f"can draw 0..{len(rest)} other {field} (CaseEdit.{field}), asked for {n}")
    start = zlib.crc32(item.encode()) % len(rest)
    return [rest[(start + i) % len(rest)] for i in range(n)]


def _top(vectors: jax.Array, k: int) -> jax.Array:
    # [..., N, c] columns -> [..., N, k]: an orthonormal basis of their top-k span
    u, _, _ = jnp.linalg.svd(vectors, full_matrices=False)
    return u[..., :k]


def _gradient(params: Params, cfg: Config, tokens: jax.Array, length: jax.Array,
              target: jax.Array, state: State, k: int) -> jax.Array:
    # tokens [T], length [], target [] (ARGMAX: the live answer) -> keys [L, H, N, k]
    def log_p(wkv):
        logits, _ = forward(params, cfg, tokens, state.replace(wkv=wkv), logits="last", length=length,
                            wkv="scan")
        lp = jax.nn.log_softmax(logits)
        return lp[jnp.where(target == ARGMAX, jnp.argmax(jax.lax.stop_gradient(lp)), target)]

    grad = jax.grad(log_p)(state.wkv)  # [L, H, N(value), N(key)]
    return _top(jnp.swapaxes(grad, -1, -2), k)


def _receptance(params: Params, cfg: Config, tokens: jax.Array, length: jax.Array,
                target: jax.Array, state: State, k: int) -> jax.Array:
    # tokens [T], length [] -> keys [L, H, N, k]; target is unused (receptances do not depend on it)
    del target
    _, _, trace = forward_trace(params, cfg, tokens, state)
    att = params["blocks"]["att"]

    def layer(x, ln1, shift, mix, w_r):
        # x [T, D]: the block input; the receptance as time_mix computes it
        h = layer_norm(x, ln1)
        prev = jnp.concatenate([shift[None].astype(h.dtype), h[:-1]])
        return linear(h + (prev - h) * mix[None], w_r)

    r = jax.vmap(layer)(trace.hidden[:-1], params["blocks"]["ln1"], state.att_shift, att["x_r"],
                        att["receptance"])  # [L, T, D]
    r = jnp.where((jnp.arange(tokens.shape[0]) < length)[:, None], r.astype(jnp.float32), 0.0)
    heads = r.reshape(cfg.n_layer, -1, cfg.n_head, cfg.head_size)  # [L, T, H, N]
    return _top(jnp.moveaxis(heads, 1, -1), k)


_KEYS = {"gradient": _gradient, "receptance": _receptance}


@functools.partial(jax.jit, static_argnames=("cfg", "kind", "k"))
def _keys(params: Params, cfg: Config, tokens: jax.Array, lengths: jax.Array, targets: jax.Array,
          states: State, kind: KeyKind, k: int) -> jax.Array:
    # tokens [B, T], lengths [B], targets [B], states [B] -> [B, L, H, N, k]
    one = functools.partial(_KEYS[kind], params, cfg, k=k)
    return jax.vmap(one)(tokens, lengths, targets, states)


def read_keys(params: Params, cfg: Config, tokenizer: Encoder, questions: Sequence[str],
              answers: Sequence[str | None], states: State, *, kind: KeyKind = "gradient",
              k: int = 4) -> Float[Array, "B L H N k"]:
    """Orthonormal read keys `[B, L, H, N, k]`, one set per question read from its state `[B]`.

    answers: per question, the answer whose first token (of `" " + answer`) the gradient keys
    address, or None for the token the state answers now; receptance keys ignore them.
    """
    return read_keys_with(Reader(params, cfg), tokenizer, questions, answers, states, kind=kind, k=k)


def read_keys_with(reader: Reader, tokenizer: Encoder, questions: Sequence[str], answers: Sequence[str | None],
                   states: State, *, kind: KeyKind = "gradient", k: int = 4) -> Float[Array, "B L H N k"]:
    """`read_keys` on `reader`'s devices (an evaluator's reader, or one on a model's params)."""
    cfg = reader.cfg
    if kind not in KEY_KINDS:
        raise ValueError(f"key kind must be one of {KEY_KINDS}, got {kind!r}")
    if not 1 <= k <= cfg.head_size:
        raise ValueError(f"k must be in 1..{cfg.head_size} (the head size), got {k}")
    B = len(questions)
    if len(answers) != B or states.batch_shape != (B,):
        raise ValueError(f"{B} questions need {B} answers and states [{B}], got {len(answers)} "
                         f"and {states.batch_shape}")
    tokens, lengths = pad(encode(tokenizer, questions, cfg.vocab_size))
    targets = np.array([ARGMAX if a is None else tokenizer.encode(" " + a)[0] for a in answers], np.int32)
    return reader.map(functools.partial(_keys, kind=kind, k=k), (tokens, lengths, targets, states))
