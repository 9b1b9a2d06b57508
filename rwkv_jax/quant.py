"""Weight-only half- and quarter-width params: `quantize(params, "bfloat16" | "int8")`.

A batch-1 decode step reads every weight once, so its speed is the bytes it moves. `quantize`
replaces each large matrix (the embedding, the head and every block's projections; not the
LoRAs, vectors or norms) with a `Narrow`: the matrix stored one output per row in bfloat16 (held
as its bits, see `Narrow`), or in int8 with one float32 scale per output (symmetric, round to
nearest). The model reads every matrix through `linear` and the embedding through `lookup`, so
quantized params run through `forward`, `step`, `generate` and the decode loop unchanged.
Activations, the state and every accumulation stay float32. On a CPU the products run in
`rwkv_jax.kernels`, which reads the narrow bytes as they are at any number of rows (it never
builds the widened matrix); elsewhere, or without a compiler, they are XLA's float32 dot on the
widened matrix.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from rwkv_jax import kernels

F32 = jnp.float32
NarrowDtype = Literal["bfloat16", "int8"]
DTYPES = ("bfloat16", "int8")
SMALLEST = 128  # a matrix is quantized when both its axes are at least this long
BF16_BITS = jnp.uint16  # how bfloat16 rows are held (see `Narrow`)


@flax.struct.dataclass
class Narrow:
    """A matrix `M` stored narrow, one output per row: `rows [..., F, D]` and `scale [..., F]`
    (float32; ones for bfloat16), `M`'s rows being `rows * scale[..., None]`.

    `rows` is int8, or bfloat16 held as its raw bits (`BF16_BITS`): XLA's CPU backend carries a
    bfloat16 array through a `while` loop as float32, so a layer `lax.scan` over bfloat16 rows
    widens them all on every call, and turning them into bits inside the jitted call copies them
    (5-8% of a 512-token prefill on the 0.1B shape). `dtype` names bfloat16 either way; rows
    given as bfloat16 work too (`loop_safe`). Files hold them as bfloat16 (`stored`).

    `transposed` says which matrix the params hold there: the projection `M.T` `[..., D, F]`
    (applied as `x @ M.T`) for every matrix but the embedding, which is `M` itself `[V, D]`.
    """

    rows: Array
    scale: Float[Array, "... F"]
    transposed: bool = flax.struct.field(pytree_node=False, default=True)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the matrix the params hold here (what `check_params` checks)."""
        *lead, f, d = self.rows.shape
        return (*lead, d, f) if self.transposed else (*lead, f, d)

    @property
    def dtype(self) -> np.dtype:
        """The narrow dtype the rows stand for (bfloat16 for bits)."""
        return np.dtype(jnp.bfloat16) if self.rows.dtype == BF16_BITS else np.dtype(self.rows.dtype)

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.scale.nbytes)

    def widened(self) -> Float[Array, "... F D"]:
        """`M` in float32."""
        return _float32(self.rows) * self.scale[..., None]

    def dense(self) -> Float[Array, "*shape"]:
        """The matrix the params hold here, in float32."""
        m = self.widened()
        return jnp.swapaxes(m, -1, -2) if self.transposed else m


def _narrow(m: np.ndarray, dtype: NarrowDtype, transposed: bool) -> Narrow:
    """`m` (the params' matrix) as a Narrow of `dtype`."""
    rows = np.swapaxes(m, -1, -2) if transposed else m
    rows = np.asarray(rows, np.float32)
    if dtype == "bfloat16":
        bits = np.asarray(rows, jnp.bfloat16).view(np.uint16)
        return Narrow(jnp.asarray(bits), jnp.ones(rows.shape[:-1], F32), transposed)
    peak = np.abs(rows).max(axis=-1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(rows / scale[..., None]), -127, 127).astype(np.int8)
    return Narrow(jnp.asarray(q), jnp.asarray(scale), transposed)


def _is_projection(path: tuple) -> bool:
    """Every matrix but the embedding is applied as `x @ M`, so its Narrow holds `M.T`."""
    return jax.tree_util.keystr(path) != "['emb']"


def quantizable(leaf: Any) -> bool:
    """Whether `quantize` narrows this leaf: a float matrix at least `SMALLEST` along both axes."""
    shape = getattr(leaf, "shape", ())
    return not is_narrow(leaf) and len(shape) >= 2 and min(shape[-2:]) >= SMALLEST


def quantize(params: Any, dtype: NarrowDtype = "int8") -> Any:
    """The params with every large matrix stored as a `Narrow` of `dtype` (see the module doc).

    Runs once, on the host, before a decode loop; quantizing quantized params is an error.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if is_quantized(params):
        raise ValueError("params are quantized already; quantize the float params")

    def one(path, leaf):
        if not quantizable(leaf):
            return leaf
        return _narrow(np.asarray(leaf, np.float32), dtype, transposed=_is_projection(path))

    return jax.tree_util.tree_map_with_path(one, params)


def abstract_quantized(abstract: Any, dtype: NarrowDtype) -> Any:
    """What `quantize(params, dtype)` makes of params shaped like `abstract` (ShapeDtypeStructs),
    with bfloat16 rows as bfloat16: the target a quantized checkpoint restores into (`stored`)."""
    def one(path, leaf):
        if not quantizable(leaf):
            return leaf
        transposed = _is_projection(path)
        *lead, a, b = leaf.shape
        f, d = (b, a) if transposed else (a, b)
        rows = jax.ShapeDtypeStruct((*lead, f, d), jnp.dtype(dtype))
        return Narrow(rows, jax.ShapeDtypeStruct((*lead, f), F32), transposed)

    return jax.tree_util.tree_map_with_path(one, abstract)


def narrow_dtype(params: Any) -> str | None:
    """The dtype the params' Narrows are stored in; None for float params."""
    found = {x.dtype.name for x in jax.tree.leaves(params, is_leaf=is_narrow) if is_narrow(x)}
    if len(found) > 1:
        raise ValueError(f"params mix narrow dtypes {sorted(found)}")
    return found.pop() if found else None


def is_narrow(x: Any) -> bool:
    return isinstance(x, Narrow)


def is_quantized(params: Any) -> bool:
    return any(is_narrow(x) for x in jax.tree.leaves(params, is_leaf=is_narrow))


def logical(params: Any) -> Any:
    """The params with each Narrow as the shape and dtype of the matrix it stands for."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, F32) if is_narrow(x) else x, params,
                        is_leaf=is_narrow)


def dequantize(params: Any) -> Any:
    """Float32 params from quantized ones (the matrices as the Narrows hold them)."""
    return jax.tree.map(lambda x: x.dense() if is_narrow(x) else x, params, is_leaf=is_narrow)


def native_product(x: Float[Array, "... D"], rows: Array, scale: Float[Array, " F"]) -> Float[Array, "... F"]:
    """`x @ (rows * scale[:, None]).T` in `rwkv_jax.kernels` (which must be available), float32:
    what `linear` runs on a CPU. `rows` is bfloat16 (or its bits, `BF16_BITS`), int8 or float32."""
    out = jax.ShapeDtypeStruct(x.shape[:-1] + rows.shape[-2:-1], F32)
    name = kernels.target_name("bfloat16" if rows.dtype == BF16_BITS else jnp.dtype(rows.dtype).name)
    return jax.ffi.ffi_call(name, out, vmap_method="sequential")(x.astype(F32), rows, scale)


def _float32(rows: Array) -> Float[Array, "... F D"]:
    """Narrow rows in float32, bfloat16 ones whether as they are or as their bits."""
    if rows.dtype == BF16_BITS:
        rows = jax.lax.bitcast_convert_type(rows, jnp.bfloat16)
    return rows.astype(F32)


def loop_safe(params: Any) -> Any:
    """The params with every Narrow's bfloat16 rows as their bits (`BF16_BITS`), as `quantize`
    holds them; for a loop over layers (see `Narrow`) and for rows read from a file."""
    return _rows_as(params, jnp.bfloat16, BF16_BITS)


def stored(params: Any) -> Any:
    """The params with every Narrow's bfloat16 bits as bfloat16: the form files hold."""
    return _rows_as(params, BF16_BITS, jnp.bfloat16)


def _rows_as(params: Any, source: Any, target: Any) -> Any:
    def one(x):
        hit = is_narrow(x) and x.rows.dtype == source
        return x.replace(rows=jax.lax.bitcast_convert_type(x.rows, target)) if hit else x

    return jax.tree.map(one, params, is_leaf=is_narrow)


def _native() -> bool:
    """Whether products run in `rwkv_jax.kernels` (on a CPU, with the kernels built)."""
    return kernels.available() and jax.default_backend() == "cpu"


@jax.custom_batching.custom_vmap
def _product(x: Float[Array, "... D"], rows: Array, scale: Float[Array, " F"]) -> Float[Array, "... F"]:
    if _native():
        return native_product(x, rows, scale)
    return jnp.einsum("...d,fd->...f", x.astype(F32), _float32(rows) * scale[:, None])


@_product.def_vmap
def _product_batched(axis_size: int, in_batched: list[bool], x, rows, scale):
    """A batch of activations against one matrix is a product with more rows, routed again."""
    x_batched, rows_batched, scale_batched = in_batched
    if rows_batched or scale_batched:
        x = x if x_batched else jnp.broadcast_to(x, (axis_size, *x.shape))
        rows = rows if rows_batched else jnp.broadcast_to(rows, (axis_size, *rows.shape))
        scale = scale if scale_batched else jnp.broadcast_to(scale, (axis_size, *scale.shape))
        return jnp.einsum("b...d,bfd->b...f", x.astype(F32), _float32(rows) * scale[..., None]), True
    if not x_batched:
        return _product(x, rows, scale), False
    return _product(x, rows, scale), True


def linear(x: Float[Array, "... D"], w: Float[Array, "D F"] | Narrow) -> Float[Array, "... F"]:
    """`x @ w` for a params matrix, float or Narrow (float32 out for a Narrow)."""
    if not is_narrow(w):
        return x @ w
    if not w.transposed:
        raise ValueError("an embedding-layout Narrow is read with lookup or rows_product, not linear")
    return _product(x, w.rows, w.scale)


def rows_product(x: Float[Array, "... D"], m: Float[Array, "F D"] | Narrow) -> Float[Array, "... F"]:
    """`x @ m.T` for a matrix held one output per row (the decode loop's head, the embedding).

    A float32 matrix goes through the native product too: for the 0.1B head ([65536, 768]) it is
    faster than XLA's dot at 1 and at 32 rows (BENCHMARKS.md)."""
    if is_narrow(m):
        return _product(x, m.rows, m.scale)
    if m.dtype == F32 and _native():
        return _product(x, m, jnp.ones(m.shape[:-1], F32))
    return jax.lax.dot_general(x, m, (((x.ndim - 1,), (1,)), ((), ())))


def lookup(emb: Float[Array, "V D"] | Narrow, tokens: Int[Array, " T"]) -> Float[Array, "T D"]:
    """The embedding rows of `tokens`."""
    if not is_narrow(emb):
        return emb[tokens]
    if emb.transposed:
        raise ValueError("the embedding Narrow must hold its rows as they are (transposed=False)")
    return _float32(emb.rows[tokens]) * emb.scale[tokens][..., None]
