"""The answer kernel of an evaluation, and how a batch is laid out over devices.

Texts are read by `rwkv_jax.batch` (a `Reader` placed by the evaluation's `Layout`); `answer`
reads question prompts with the same `batch.read` and decodes from there, a pure function of
arrays with a leading row axis `[B]`. `Layout` pads a batch to `batch_size` rows (a smaller read
to the next power of two), and every prompt to a length bucket, so a whole run compiles each kernel
a few times at most. It lays a run over a ("data", "model") mesh (`rwkv_jax.mesh`): rows on data,
the params and the wkv state's heads on model; by default every device is on data and the params
are replicated. Rows never interact, so a sharded run gives the rows of a single-device one.

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

from rwkv_jax import batch
from rwkv_jax.config import Config
from rwkv_jax.generate import decode_tokens
from rwkv_jax.mesh import DATA, make_mesh, place, shard_params, state_shardings
from rwkv_jax.params import Params
from rwkv_jax.state import State

PROMPT_BUCKET = 8  # question prompts are 10-30 tokens: a fine bucket wastes little
TEXT_BUCKET = 64  # recipients and filler turns: reads are a small share of the time, compiles are not


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
    logits, after = batch.read(params, cfg, tokens, lengths, state)
    probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), targets, axis=1)
    out, count, stopped, _ = decode_tokens(
        params, cfg, logits, after, jax.random.key(0), stop_table, stop_match, count_weight,
        max_new_tokens=max_new_tokens)
    return out, count, stopped, probs


class Layout:
    """Fixed-size batches on a ("data", "model") mesh (a `batch.Placement`): rows sharded on data,
    params and wkv heads on model. `mesh` defaults to every device of `devices` (default
    `jax.devices()`) on data."""

    def __init__(self, batch_size: int, devices: Sequence[jax.Device] | None = None, *,
                 mesh: Mesh | None = None):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if mesh is not None and devices is not None:
            raise ValueError("give devices or a mesh, not both")
        self.mesh = make_mesh(devices=devices) if mesh is None else mesh
        self.rows = NamedSharding(self.mesh, PartitionSpec(DATA))
        self.states = state_shardings(self.mesh)
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        # a batch splits evenly over the data axis
        self.data = self.mesh.shape[DATA]
        self.batch_size = -(-batch_size // self.data) * self.data

    def replicate(self, tree):
        return place(tree, jax.tree.map(lambda _: self.replicated, tree))

    def place_params(self, params: Params, cfg: Config) -> Params:
        return shard_params(params, cfg, self.mesh)

    def padded_size(self, n: int) -> int:
        """The rows a batch of `n` is padded to: a power of two per device, at most `batch_size`."""
        return min(self.batch_size, self.data * batch.power_of_two(-(-n // self.data)))

    def pad(self, tree, n: int, *, full: bool = False):
        """Fills a host batch of `n` rows up to `padded_size(n)` (`batch_size` if `full`) with copies
        of row 0."""
        return batch.pad_rows(tree, self.batch_size if full else self.padded_size(n))

    def put(self, tree):
        """Host arrays `[B, ...]` (B a multiple of the data axis) as global arrays: rows on data,
        a `State`'s wkv heads also on model."""
        def one(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
            if x.shape[0] % self.data:
                raise ValueError(f"a batch of {x.shape[0]} rows does not split over {self.data} devices")
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

        is_state = lambda x: isinstance(x, State)
        shardings = jax.tree.map(lambda x: self.states if is_state(x) else self.rows, tree, is_leaf=is_state)
        return jax.tree.map(one, tree, shardings)

    @staticmethod
    def fetch(tree):
        """Results back on the host, from every host's devices."""
        def one(x: jax.Array) -> np.ndarray:
            if x.is_fully_addressable:
                return np.asarray(x)
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))

        return jax.tree.map(one, tree)
