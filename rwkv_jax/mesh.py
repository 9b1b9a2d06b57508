"""A model laid over a 2-D device mesh: the rows of a batch on "data", the model on "model".

The matrices split in the column/row pattern: the projections that make per-channel values
(receptance, key, value, the LoRA up-projections w2 a2 v2 g2) and the FFN key by output columns,
the output projection and the FFN value by input rows, the embedding and the head by vocabulary.
A device then holds whole heads (D splits into H heads of N channels, in order): the wkv
recurrence, the per-head GroupNorm and the bonus run on local channels, and each row-split product
ends in one all-reduce. Vectors and the LoRA down-projections (a few percent of the bytes) are
replicated. The wkv state splits by heads, like the channels that write it; the token-shift states
(LayerNorm outputs, which every device holds whole) by rows only.

`NamedSharding` on the inputs is all there is: XLA's sharding propagation carries the layout
through the scanned layers and the wkv scan, and places the communication. No shard_map is needed:
on a 2x4 CPU mesh the compiled `rwkv_jax.batch.read` has one all-reduce per row-split product (two
per layer) and one after the vocabulary-split embedding lookup, and RIME's answer kernel adds only
small reductions over the vocabulary-split logits (softmax sums, the greedy argmax's per-shard
candidates); no weight is ever gathered.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rwkv_jax.config import Config
from rwkv_jax.params import Params, param_shapes
from rwkv_jax.quant import is_quantized
from rwkv_jax.state import State

DATA, MODEL = "data", "model"
AXES = (DATA, MODEL)

# Every leaf not named here is replicated. Leading None: the stacked layer axis.
_SPLIT = {
    ("emb",): P(MODEL, None),  # [V, D] by vocabulary
    ("head",): P(None, MODEL),  # [D, V] by vocabulary
    **{("blocks", "att", name): P(None, None, MODEL)  # [L, in, D] by output columns
       for name in ("receptance", "key", "value", "w2", "a2", "v2", "g2")},
    ("blocks", "att", "output"): P(None, MODEL, None),  # [L, D, D] by input rows
    ("blocks", "ffn", "key"): P(None, None, MODEL),  # [L, D, F] by output columns
    ("blocks", "ffn", "value"): P(None, MODEL, None),  # [L, F, D] by input rows
}


def parse_mesh(text: str) -> dict[str, int]:
    """`"data=2,model=4"` -> `{"data": 2, "model": 4}`; either axis may be left out."""
    sizes = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in AXES or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"mesh {text!r}: expected AXIS=SIZE,... with AXIS one of {', '.join(AXES)} "
                             f"and SIZE a positive integer, got {part!r}")
        if name in sizes:
            raise ValueError(f"mesh {text!r}: axis {name!r} is given twice")
        sizes[name] = int(value)
    return sizes


def make_mesh(data: int | None = None, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default every device of every process); `data`
    defaults to the devices left after `model`. The model axis runs over neighbouring devices
    (on one host where it fits), where its all-reduces are cheapest."""
    devices = list(jax.devices() if devices is None else devices)
    if model < 1 or len(devices) % model:
        raise ValueError(f"a model axis of {model} does not divide the {len(devices)} devices")
    data = len(devices) // model if data is None else data
    if data < 1 or data * model != len(devices):
        raise ValueError(f"a data={data}, model={model} mesh needs {data * model} devices; there are {len(devices)}")
    return Mesh(mesh_utils.create_device_mesh((data, model), devices), AXES)


def check_mesh(cfg: Config, mesh: Mesh) -> None:
    """Refuses a model axis that does not divide the dimensions it splits, naming them."""
    size = mesh.shape[MODEL]
    for what, n in (("heads (n_head)", cfg.n_head), ("vocabulary (vocab_size)", cfg.vocab_size),
                    ("FFN width (dim_ffn)", cfg.dim_ffn)):
        if n % size:
            raise ValueError(f"the mesh's {MODEL!r} axis of size {size} does not divide the {what} = {n}; "
                             f"choose a {MODEL} size that divides {n}")


def param_specs(cfg: Config) -> Params:
    """A params-shaped tree of `PartitionSpec`s (see the module docstring)."""
    def spec(path, _shape):
        return _SPLIT.get(tuple(k.key for k in path), P())

    return jax.tree_util.tree_map_with_path(spec, param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))


def param_shardings(cfg: Config, mesh: Mesh) -> Params:
    """`param_specs` as `NamedSharding`s on `mesh` (checked by `check_mesh`): a restore target's
    shardings (`rwkv_jax.load(..., sharding=)`) or a `jax.device_put` destination."""
    check_mesh(cfg, mesh)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(cfg))


def state_specs() -> State:
    """`PartitionSpec`s of a batch of states `[B, L, ...]`: rows on data, wkv heads on model."""
    return State(wkv=P(DATA, None, MODEL), att_shift=P(DATA), ffn_shift=P(DATA))


def state_shardings(mesh: Mesh) -> State:
    return jax.tree.map(lambda s: NamedSharding(mesh, s), state_specs())


def place(tree, shardings):
    """Host or device arrays as global arrays with `shardings` (a tree of the same structure).
    Every process passes the same values and each fills only its own devices' shards, so this also
    works where the mesh spans several processes."""
    def one(x, sharding: NamedSharding) -> jax.Array:
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if sharding.is_fully_addressable:
            return jax.device_put(x, sharding)
        return jax.make_array_from_callback(np.shape(x), sharding, lambda index: np.asarray(x[index]))

    return jax.tree.map(one, tree, shardings)


def shard_params(params: Params, cfg: Config, mesh: Mesh) -> Params:
    """The params laid over `mesh` by `param_specs`; quantized params (`rwkv_jax.quant`) are
    replicated, on a mesh without a model axis to split them over."""
    if not is_quantized(params):
        return place(params, param_shardings(cfg, mesh))
    if mesh.shape.get(MODEL, 1) > 1:
        raise ValueError(f"quantized params are not split over a model axis (mesh {dict(mesh.shape)}); "
                         "use a data-only mesh, or float params")
    return place(params, jax.tree.map(lambda _: NamedSharding(mesh, P()), params))


def to_host(x) -> np.ndarray:
    """An array's values on the host, gathered from every process where its shards span several.
    A split array is assembled shard by shard into a fresh buffer: `np.asarray` would keep the
    copy cached on the array, and over a whole model that is a second copy of it."""
    if not isinstance(x, jax.Array) or len(x.sharding.device_set) == 1:
        return np.asarray(x)
    if not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    out = np.empty(x.shape, x.dtype)
    for shard in x.addressable_shards:
        out[shard.index] = np.asarray(shard.data)
    return out
