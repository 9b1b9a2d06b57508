"""The jitted batch kernels of an evaluation, and how a batch is laid out over devices.

Both kernels are pure functions of arrays with a leading row axis `[B]`, vmapped over one-sequence
`rwkv_jax` calls: prompts are right-padded and read with `length`, so padding never reaches a state.
`Layout` pads a batch to `batch_size` rows (a smaller read to the next power of two), and every
prompt to a length bucket, so a whole run compiles each kernel a few times at most; it shards the
row axis over a 1-D mesh of `jax.devices()` (data parallel; the params are replicated). Rows never
interact, so a sharded run gives the rows of a single-device one.

Several hosts: call `jax.distributed.initialize()` first; `jax.devices()` then spans every host,
each process feeds the slices of its own devices (`make_array_from_callback`) and gathers results
back with `process_allgather`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rwkv_jax.config import Config
from rwkv_jax.generate import decode_tokens
from rwkv_jax.model import forward
from rwkv_jax.params import Params
from rwkv_jax.state import State

# Measured on CPU: vmapped over rows, the per-token scan reads these short texts 1.3-7x faster
# than the chunked kernel (whose per-chunk triangular solve batches poorly).
WKV = "scan"
PROMPT_BUCKET = 8  # question prompts are 10-30 tokens: a fine bucket wastes little
TEXT_BUCKET = 64  # recipients and filler turns: reads are a small share of the time, compiles are not


def _read_rows(params: Params, cfg: Config, tokens: jax.Array, lengths: jax.Array,
               state: State) -> tuple[jax.Array, State]:
    """Next-token logits `[B, V]` and states `[B]` after each row's text."""
    run = lambda t, n, s: forward(params, cfg, t, s, logits="last", length=n, wkv=WKV)
    return jax.vmap(run)(tokens, lengths, state)


@functools.partial(jax.jit, static_argnames=("cfg",))
def read(params: Params, cfg: Config, tokens: jax.Array, lengths: jax.Array, state: State) -> State:
    """The states after reading each row's text: tokens `[B, T]` right-padded, lengths `[B]`,
    state `[B]` -> State `[B]`."""
    return _read_rows(params, cfg, tokens, lengths, state)[1]


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens"))
def answer(params: Params, cfg: Config, tokens: jax.Array, lengths: jax.Array, state: State,
           targets: jax.Array, stop_table: jax.Array, stop_match: jax.Array, count_weight: jax.Array,
           *, max_new_tokens: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Greedy answers to question prompts, and the first-token probabilities of given tokens.

    tokens `[B, T]` right-padded (lengths `[B]` >= 1), state `[B]`, targets `[B, K]` token ids.
    Returns generated ids `[B, max_new_tokens]` (0 past the end), counts `[B]`, stopped `[B]` and
    the probability of each target as the first answer token `[B, K]`.

    The prompts are read with the scan kernel and decoding starts from the logits they leave.
    """
    logits, after = _read_rows(params, cfg, tokens, lengths, state)
    probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), targets, axis=1)
    out, count, stopped, _ = decode_tokens(
        params, cfg, logits, after, jax.random.key(0), stop_table, stop_match, count_weight,
        max_new_tokens=max_new_tokens)
    return out, count, stopped, probs


def stack_states(states: Sequence[State]) -> State:
    """Unbatched states as one `[S]` batch of host (numpy) arrays."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)


def concat(states: Sequence[State]) -> State:
    """Batched host states joined along the row axis."""
    return jax.tree.map(lambda *xs: np.concatenate(xs), *states)


def take(state: State, rows: np.ndarray | Sequence[int]) -> State:
    """Rows of a batched host state."""
    return jax.tree.map(lambda x: x[np.asarray(rows)], state)


def put_rows(state: State, rows: np.ndarray | Sequence[int], values: State) -> State:
    """A batched host state with `rows` replaced by `values`; `state` is not modified."""
    def one(x: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[np.asarray(rows)] = v
        return out

    return jax.tree.map(one, state, values)


class Layout:
    """Fixed-size batches sharded over a 1-D device mesh on the row axis."""

    def __init__(self, batch_size: int, devices: Sequence[jax.Device] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        devices = list(jax.devices() if devices is None else devices)
        self.mesh = Mesh(np.array(devices), ("rows",))
        self.rows = NamedSharding(self.mesh, PartitionSpec("rows"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        # a batch splits evenly over the devices
        self.batch_size = -(-batch_size // len(devices)) * len(devices)

    def replicate(self, tree):
        return jax.device_put(tree, self.replicated)

    def padded_size(self, n: int) -> int:
        """The rows a batch of `n` is padded to: a power of two per device, at most `batch_size`."""
        devices = self.mesh.size
        return min(self.batch_size, devices * (1 << (-(-n // devices) - 1).bit_length()))

    def pad(self, tree, n: int, *, full: bool = False):
        """Fills a host batch of `n` rows up to `padded_size(n)` (`batch_size` if `full`) with copies
        of row 0."""
        fill = np.zeros((self.batch_size if full else self.padded_size(n)) - n, np.int64)
        return jax.tree.map(lambda x: np.concatenate([x, x[fill]]), tree)

    def put(self, tree):
        """Host arrays `[B, ...]` (B a multiple of the device count) as row-sharded global arrays."""
        def one(x: np.ndarray) -> jax.Array:
            if x.shape[0] % self.mesh.size:
                raise ValueError(f"a batch of {x.shape[0]} rows does not split over {self.mesh.size} devices")
            return jax.make_array_from_callback(x.shape, self.rows, lambda index: x[index])

        return jax.tree.map(one, tree)

    @staticmethod
    def fetch(tree):
        """Results back on the host, from every host's devices."""
        def one(x: jax.Array) -> np.ndarray:
            if x.is_fully_addressable:
                return np.asarray(x)
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))

        return jax.tree.map(one, tree)
