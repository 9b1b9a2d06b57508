"""The answer kernel of an evaluation, and how a batch is laid out over devices.

Texts are read by `rwkv_jax.batch` (a `Reader` placed by the evaluation's `Layout`); `answer`
reads question prompts with the same `batch.read` and decodes from there, a pure function of
arrays with a leading row axis `[B]`. `Layout` pads a batch to `batch_size` rows (a smaller read
to the next power of two), and every prompt to a length bucket, so a whole run compiles each kernel
a few times at most; it shards the row axis over a 1-D mesh of `jax.devices()` (data parallel; the
params are replicated). Rows never interact, so a sharded run gives the rows of a single-device one.

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
    """Fixed-size batches sharded over a 1-D device mesh on the row axis (a `batch.Placement`)."""

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
        return min(self.batch_size, devices * batch.power_of_two(-(-n // devices)))

    def pad(self, tree, n: int, *, full: bool = False):
        """Fills a host batch of `n` rows up to `padded_size(n)` (`batch_size` if `full`) with copies
        of row 0."""
        return batch.pad_rows(tree, self.batch_size if full else self.padded_size(n))

    def put(self, tree):
        """Host arrays `[B, ...]` (B a multiple of the device count) as row-sharded global arrays."""
        def one(x: np.ndarray) -> jax.Array:
            if x.shape[0] % self.mesh.size:
                raise ValueError(f"a batch of {x.shape[0]} rows does not split over {self.mesh.size} devices")
            x = np.asarray(x)
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
