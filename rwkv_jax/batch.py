"""The one batched read: many token rows, each from its own state, in one vmapped forward pass.

Rows are right-padded to a multiple of a length bucket and read with `length`, so padding never
reaches a state and nearby lengths share one compiled kernel; the row count is padded to a power
of two with copies of row 0, so a few kernels serve every count. Generation, calibration, the
edit methods and an evaluation all read through `read`; a `Reader` holds params placed once (by
a `Placement`: one device, or an evaluation's row-sharded mesh) and reads token lists of any
count through it.

The state row helpers (`take`, `concat`, `put_rows`, `broadcast`) take host (numpy) and device
arrays alike and keep them where they are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from rwkv_jax.config import Config
from rwkv_jax.model import forward
from rwkv_jax.params import Params
from rwkv_jax.state import State
from rwkv_jax.wkv import Impl

BUCKET = 16  # token rows are padded to a multiple of this unless a caller needs another


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def encode(tokenizer: Encoder, texts: Sequence[str], vocab_size: int) -> list[list[int]]:
    """Token ids of each text; refuses empty texts and ids outside the model's vocabulary."""
    if isinstance(texts, str) or not texts:
        raise ValueError("expected a non-empty sequence of texts")
    rows = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        tokens = tokenizer.encode(text)
        if not tokens:
            raise ValueError(f"{text!r} encodes to no tokens")
        if max(tokens) >= vocab_size:
            raise ValueError(f"{text!r} encodes to token {max(tokens)}, outside the model's "
                             f"vocabulary of {vocab_size}: is this the model's tokenizer?")
        rows.append(tokens)
    return rows


def pad(rows: Sequence[Sequence[int]], bucket: int = BUCKET) -> tuple[Int[np.ndarray, "B T"], Int[np.ndarray, " B"]]:
    """Token lists right-padded with 0, T a multiple of `bucket`, and their lengths."""
    if not rows:
        raise ValueError("expected a non-empty sequence of token rows")
    lengths = np.array([len(r) for r in rows], np.int32)
    if lengths.min() < 1:
        raise ValueError(f"every row needs at least one token; row {int(lengths.argmin())} has none")
    tokens = np.zeros((len(rows), -(-int(lengths.max()) // bucket) * bucket), np.int32)
    for out, r in zip(tokens, rows, strict=True):
        out[: len(r)] = r
    return tokens, lengths


def power_of_two(n: int) -> int:
    """The smallest power of two >= n (n >= 1): the row count a batch of n is padded to."""
    return 1 << (n - 1).bit_length()


def pad_rows(tree, size: int | None = None):
    """Every leaf's leading axis (n rows) padded to `size` (default `power_of_two(n)`) with copies
    of row 0. Slice the results back to `[:n]`."""
    n = jax.tree.leaves(tree)[0].shape[0]
    fill = np.concatenate([np.arange(n), np.zeros((power_of_two(n) if size is None else size) - n, np.int64)])
    return take(tree, fill)


def _xp(*xs):
    # numpy for host arrays, jax.numpy otherwise: a helper keeps its inputs where they are
    return np if all(isinstance(x, np.ndarray) for x in xs) else jnp


def take(state, rows):
    """Rows (an index or index array) of a batched state, or of any tree of row-major arrays."""
    return jax.tree.map(lambda x: x[np.asarray(rows)], state)


def concat(states: Sequence[State]) -> State:
    """Batched states (or trees of row-major arrays) joined along the row axis."""
    return jax.tree.map(lambda *xs: _xp(*xs).concatenate(xs), *states)


def put_rows(state: State, rows, new: State) -> State:
    """`state` with `rows` replaced by the rows of `new`; `state` itself is not modified."""
    def one(x, v):
        if isinstance(x, np.ndarray):
            out = x.copy()
            out[np.asarray(rows)] = v
            return out
        return x.at[np.asarray(rows)].set(v)

    return jax.tree.map(one, state, new)


def broadcast(state: State, B: int) -> State:
    """A `[B]` batch from one state (copied to every row), or a `[B]` batch as it is."""
    if state.batch_shape == ():
        return jax.tree.map(lambda x: _xp(x).broadcast_to(x, (B, *x.shape)), state)
    if state.batch_shape != (B,):
        raise ValueError(f"state batch shape {state.batch_shape} is neither () nor ({B},) for {B} rows")
    return state


@functools.partial(jax.jit, static_argnames=("cfg", "wkv"))
def read(params: Params, cfg: Config, tokens: Int[Array, "B T"], lengths: Int[Array, " B"], states: State, *,
         wkv: Impl = "scan") -> tuple[Float[Array, "B V"], State]:
    """Next-token logits and states `[B]` after each row's text.

    tokens right-padded, lengths >= 1, states `[B]` or one state shared by every row. The default
    "scan" wkv reads short texts faster than "chunked" under vmap (measured on CPU, 1.3-7x: the
    chunked kernel's per-chunk triangular solve batches poorly).
    """
    run = lambda t, n, s: forward(params, cfg, t, s, logits="last", length=n, wkv=wkv)
    return jax.vmap(run)(tokens, lengths, broadcast(states, tokens.shape[0]))


class Placement(Protocol):
    """Where a `Reader` runs: its params placed once, each batch of at most `batch_size` rows
    (None: any) padded, put on the devices, and its results fetched back."""

    batch_size: int | None

    def replicate(self, tree): ...

    def place_params(self, params: Params, cfg: Config) -> Params: ...

    def pad(self, tree, n: int): ...

    def put(self, tree): ...

    def fetch(self, tree): ...


class DefaultDevice:
    """The default device: one call for any row count, power-of-two rows, results on device."""

    batch_size = None

    @staticmethod
    def replicate(tree):
        return tree

    @staticmethod
    def pad(tree, n: int):
        return pad_rows(tree, power_of_two(n))

    put = fetch = replicate

    @staticmethod
    def place_params(params: Params, cfg: Config) -> Params:
        return params


class Reader:
    """`read` with the params placed once: an evaluator hands its own to the edit methods, so the
    texts they read run on the same devices, in the same layout, as the rest of the run."""

    def __init__(self, params: Params, cfg: Config, placement: Placement | None = None, *,
                 wkv: Impl = "scan"):
        self.cfg, self.wkv = cfg, wkv
        self.placement = DefaultDevice() if placement is None else placement
        self.params = self.placement.place_params(params, cfg)

    def read(self, rows: Sequence[Sequence[int]], states: State, *, bucket: int = BUCKET
             ) -> tuple[Float[Array, "B V"], State]:
        """Logits and states `[B]` after each token row, read from `states` (`[B]`, or one
        state for every row), in batches of the placement's size sorted by length."""
        if not rows:
            raise ValueError("expected a non-empty sequence of token rows")
        states.check(self.cfg)
        states = broadcast(states, len(rows))
        order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths share a bucket
        kernel = functools.partial(read, wkv=self.wkv)
        parts = [self._run(kernel, (*pad([rows[i] for i in part], bucket), take(states, part)))
                 for part in self._batches(order)]
        return take(concat(parts), np.argsort(order, kind="stable"))

    def map(self, kernel: Callable[..., Any], rows: tuple) -> Any:
        """`kernel(params, cfg, *rows)` on this reader's devices, for kernels other than `read`
        (gradients, tangents): `rows` is a tuple of trees with one leading row axis `[B]`, run in
        batches of the placement's size; the result's leaves come back `[B]`, in order."""
        n = jax.tree.leaves(rows)[0].shape[0]
        return concat([self._run(kernel, take(rows, part)) for part in self._batches(np.arange(n))])

    def _batches(self, order: np.ndarray) -> list[np.ndarray]:
        size = self.placement.batch_size or len(order)
        return [order[start:start + size] for start in range(0, len(order), size)]

    def _run(self, kernel: Callable[..., Any], rows: tuple) -> Any:
        # one batch of n rows: padded and placed, run, fetched and cut back to n
        n = jax.tree.leaves(rows)[0].shape[0]
        out = kernel(self.params, self.cfg, *self.placement.put(self.placement.pad(rows, n)))
        return take(self.placement.fetch(out), np.arange(n))

    def read_texts(self, tokenizer: Encoder, texts: Sequence[str], states: State | None = None, *,
                   bucket: int = BUCKET) -> tuple[Float[Array, "B V"], State]:
        """`read` of each text's tokens, from `states` (zeros if None)."""
        states = State.zeros(self.cfg) if states is None else states
        return self.read(encode(tokenizer, texts, self.cfg.vocab_size), states, bucket=bucket)
