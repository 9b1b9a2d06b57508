"""Official tensors <-> the params pytree, shared by the `.pth` and safetensors containers.

Import streams: the naming is detected from the tensor names (whatever the container), the
checkpoint's keys and shapes are checked against `keymap` before any data is read, the output
leaves are allocated once (layers stacked on the leading axis), then each tensor is copied into
its slot block by block, each block checked for NaN/Inf and its mapped file pages released. Peak
memory is the output plus one block (16 MB).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np

from convert import pages
from convert.errors import (
    DtypeError,
    KeyMismatchError,
    NonFiniteError,
    NotX070Error,
    ShapeMismatchError,
)
from convert.keymap import (
    LAYER_ROWS,
    NAMING_TITLES,
    NAMINGS,
    TOKEN_SHIFT,
    TOP_ROWS,
    VEC3,
    Layout,
    Naming,
    Row,
    T,
    detect_foreign,
    expected_names,
    is_optional,
    layer_indices,
    layer_name,
)
from rwkv_jax.config import Config, lora_rank
from rwkv_jax.params import DTYPES, Params, check_params, param_shapes

Shape = tuple[int, ...]
OnTensor = Callable[[str, int, int], None]  # (name, index, count) after each tensor

_FLOATS = frozenset({*DTYPES.values(), np.dtype(np.float64)})
_BLOCK_BYTES = 16 * 2**20  # rows of a tensor copied (and file pages released) at a time
_T_BLOCK_ROWS = 256  # transposed copies run ~2x faster in narrow, cache-friendly blocks


class TensorSource(Protocol):
    """A checkpoint opened for reading: names and shapes without touching data, then views."""

    label: str  # the file, for messages

    def keys(self) -> list[str]: ...

    def shape(self, key: str) -> Shape: ...

    def dtype(self, key: str) -> np.dtype: ...

    def array(self, key: str) -> np.ndarray: ...  # a view into a read-only file mapping


class FusedTokenShift:
    """A source whose legacy fused flash-linear-attention token-shift tensors `attn.x_x [6, C]`
    (early 2025) are split into the six names the table knows; other tensors pass through."""

    _FUSED = ".attn.x_x"

    def __init__(self, source: TensorSource):
        self.label = source.label
        self._source = source
        # name -> (stored name, row of a fused tensor or None)
        self._where: dict[str, tuple[str, int | None]] = {}
        for key in source.keys():
            if not key.endswith(self._FUSED):
                self._where[key] = (key, None)
        for key in [k for k in source.keys() if k.endswith(self._FUSED)]:
            shape = source.shape(key)
            if len(shape) != 2 or shape[0] != len(TOKEN_SHIFT):
                raise ShapeMismatchError(f"{self.label}: {key} has shape {shape}, expected [6, C]")
            prefix = key[: -len("x_x")]
            if clash := [prefix + x for x in TOKEN_SHIFT if prefix + x in self._where]:
                raise KeyMismatchError(self.label, unexpected=[key, *clash])
            for row, x in enumerate(TOKEN_SHIFT):
                self._where[prefix + x] = (key, row)

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, key: str) -> Shape:
        stored, row = self._where[key]
        shape = self._source.shape(stored)
        return shape if row is None else shape[1:]

    def dtype(self, key: str) -> np.dtype:
        return self._source.dtype(self._where[key][0])

    def array(self, key: str) -> np.ndarray:
        stored, row = self._where[key]
        array = self._source.array(stored)
        return array if row is None else array[row]


@dataclass(frozen=True)
class SourceMeta:
    """What the file held beyond the params: enough to write it back bit for bit."""

    container: str  # "pth" or "safetensors"
    naming: Naming
    path: str
    dtype: str  # the stored dtype ("bfloat16", ...), or "mixed"
    layer0_v: bool  # whether layer 0's unused v0/v1/v2 were in the file


def as_dtype(dtype: str | np.dtype | type | None) -> np.dtype | None:
    """`"fp32" | "bf16" | "fp16"` or a floating numpy/jax dtype; None passes through."""
    if dtype is None:
        return None
    resolved = DTYPES.get(dtype) if isinstance(dtype, str) else None
    resolved = resolved if resolved is not None else np.dtype(dtype)
    if resolved not in _FLOATS:
        raise DtypeError(f"unsupported dtype {dtype!r}; use one of {sorted(DTYPES)}")
    return resolved


def _stored_shape(params_shape: Shape, layout: Layout) -> Shape:
    """How a params leaf of this shape is laid out in the file."""
    if layout == T:
        return params_shape[::-1]
    if layout == VEC3:
        return (1, 1, *params_shape)
    return params_shape


def _layer_shapes(cfg: Config) -> dict[str, Shape]:
    """Params shape of every row: top-level leaves as they are, layer leaves without `L`."""
    shapes = param_shapes(cfg)
    out = {}
    for row in TOP_ROWS:
        out[row.path] = _leaf(shapes, row.path)
    for row in LAYER_ROWS:
        out[row.path] = _leaf(shapes["blocks"], row.path)[1:]
    return out


def _leaf(tree: Any, path: str) -> Any:
    for part in path.split("."):
        tree = tree[part]
    return tree


Expected = dict[str, tuple[Row, int | None]]  # name -> (table row, layer or None)


def _mismatch(naming: Naming, keys: list[str], n_layer: int) -> tuple[Expected, set[str], set[str]]:
    """(the names an `n_layer` model holds, which of them `keys` lacks, which keys it does not know)."""
    expected = expected_names(naming, n_layer)
    present = set(keys)
    missing = {
        n for n, (row, i) in expected.items() if n not in present and not is_optional(row, i)
    }
    optional = [n for n, (row, i) in expected.items() if is_optional(row, i)]
    if any(n in present for n in optional):  # all of layer 0's v LoRA or none of it
        missing |= {n for n in optional if n not in present}
    return expected, missing, present - expected.keys()


Fit = tuple[int, Expected, set[str], set[str]]  # (layers, expected, missing, unexpected)


def _best_fit(naming: Naming, keys: list[str]) -> Fit:
    """The layer count the keys fit best in this naming (fewest missing plus unexpected keys; ties
    go to the deeper model), so one stray `blocks.7.*` key in a 2-layer file is reported as one
    unexpected key, not as six missing layers."""
    # A model of L layers has more than L keys, so deeper candidates cannot fit better.
    candidates = {1} | {i + 1 for i in layer_indices(naming, keys) if i < len(keys)}
    fits = {n: _mismatch(naming, keys, n) for n in candidates}
    n_layer = min(fits, key=lambda n: (len(fits[n][1]) + len(fits[n][2]), -n))
    return (n_layer, *fits[n_layer])


def _first_unmatched(fit: Fit, limit: int = 4) -> str:
    _, _, missing, unexpected = fit
    parts = []
    if unexpected:
        parts.append("not in it: " + ", ".join(sorted(unexpected)[:limit]))
    if missing:
        parts.append("missing: " + ", ".join(sorted(missing)[:limit]))
    return f"{len(missing) + len(unexpected)} unmatched ({'; '.join(parts)})"


def detect_naming(source: TensorSource) -> tuple[Naming, Expected, int]:
    """The naming the tensor names follow, with every key's table row and the layer count.

    Refused when the names fit no naming exactly: the error is about the closest one, and lists
    the first names each table leaves unmatched.
    """
    keys = source.keys()
    if foreign := detect_foreign(keys):
        family, examples = foreign
        raise NotX070Error(
            f"{source.label}: detected {family} (keys such as {', '.join(examples)}); "
            "only RWKV-7 x070 checkpoints can be converted"
        )
    fits = {naming: _best_fit(naming, keys) for naming in NAMINGS}
    for naming, (n_layer, expected, missing, unexpected) in fits.items():
        if not missing and not unexpected:
            return naming, expected, n_layer
    closest = min(NAMINGS, key=lambda n: len(fits[n][2]) + len(fits[n][3]))
    n_layer, _, missing, unexpected = fits[closest]
    label = f"{source.label} (closest to the {NAMING_TITLES[closest]} names of a {n_layer}-layer model)"
    against = "; ".join(f"{NAMING_TITLES[n]} names: {_first_unmatched(fits[n])}" for n in NAMINGS)
    raise KeyMismatchError(label, missing=missing, unexpected=unexpected, naming=closest,
                           detail=f"no naming fits exactly; {against}")


def _infer_config(source: TensorSource, naming: Naming, n_layer: int) -> Config:
    """H, N from `r_k`; V, D from `emb`; F from `ffn.key`; ranks from the LoRA first matrices."""
    rows = {r.path: r for r in (*TOP_ROWS, *LAYER_ROWS)}
    present = set(source.keys())

    def params_shape(path: str, layer: int | None, ndim: int) -> Shape:
        row = rows[path]
        key = row.name(naming) if layer is None else layer_name(naming, row, layer)
        shape = source.shape(key)
        if len(shape) != ndim:
            raise ShapeMismatchError(
                f"{source.label}: {key} has shape {shape}, expected {ndim} dimensions"
            )
        return shape[::-1] if row.layout(naming) == T else shape

    n_head, head_size = params_shape("att.r_k", 0, 2)
    vocab_size, n_embd = params_shape("emb", None, 2)
    # Layer 0's v LoRA is unused and may be absent: read the rank from layer 1 when there is one.
    v_layer = 1 if n_layer > 1 else 0
    if layer_name(naming, rows["att.v1"], v_layer) in present:
        d_mv = params_shape("att.v1", v_layer, 2)[1]
    else:  # a one-layer model without layer-0 v: the rank is arbitrary, the weights are zeros
        d_mv = lora_rank(n_embd, 1.7)
    try:
        return Config(
            n_layer=n_layer,
            n_embd=n_embd,
            head_size=head_size,
            vocab_size=vocab_size,
            dim_ffn=params_shape("ffn.key", 0, 2)[1],
            d_decay=params_shape("att.w1", 0, 2)[1],
            d_aaa=params_shape("att.a1", 0, 2)[1],
            d_mv=d_mv,
            d_gate=params_shape("att.g1", 0, 2)[1],
        )
    except ValueError as e:
        raise ShapeMismatchError(f"{source.label}: inconsistent shapes: {e}") from e


def _check_shapes(source: TensorSource, naming: Naming, expected: Expected, cfg: Config) -> None:
    shapes = _layer_shapes(cfg)
    problems = []
    for key in source.keys():
        row, _ = expected[key]
        want = _stored_shape(shapes[row.path], row.layout(naming))
        got = source.shape(key)
        # A vector may come as [C] or [1, 1, C]: compare by element count and non-unit dims.
        is_vector = len(shapes[row.path]) == 1
        squeezed = tuple(d for d in got if d != 1) or (1,)
        if got != want and not (is_vector and squeezed == shapes[row.path]):
            problems.append(f"{key} has shape {got}, expected {want}")
    if problems:
        raise ShapeMismatchError(
            f"{source.label}: shapes inconsistent with {cfg}:\n  " + "\n  ".join(problems)
        )


def _source_dtype(source: TensorSource) -> np.dtype | None:
    """The one stored dtype, or None when the file mixes several; non-floats are refused."""
    dtypes = set()
    for key in source.keys():
        dtype = source.dtype(key)
        if dtype not in _FLOATS:
            raise DtypeError(f"{source.label}: {key} has dtype {dtype}, expected a float type")
        dtypes.add(dtype)
    return dtypes.pop() if len(dtypes) == 1 else None


def _copy_in(slot: np.ndarray, array: np.ndarray, layout: Layout, label: str, key: str) -> None:
    """`slot` (params layout) <- `array` (stored layout), in blocks of the array's leading axis.

    Each block's file pages are released once copied, and each copied block is checked for
    NaN/Inf (after any cast, so an overflow to Inf is caught too).
    """
    # A view of `slot` with the stored shape; `copy=False` guarantees writes land in `slot`.
    target = slot.T if layout == T else np.reshape(slot, array.shape, copy=False)
    rows = max(1, _BLOCK_BYTES // max(1, array[:1].nbytes))
    rows = min(rows, _T_BLOCK_ROWS) if layout == T else rows
    for start in range(0, array.shape[0], rows):
        block = array[start : start + rows]
        target[start : start + rows] = block
        pages.release(block)
        if not np.isfinite(target[start : start + rows]).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                raise NonFiniteError(f"{label}: {key} holds {bad} NaN/Inf values")
            over = int(np.count_nonzero(~np.isfinite(np.asarray(array, slot.dtype))))
            raise NonFiniteError(f"{label}: {key} holds {over} values beyond the range of {slot.dtype} "
                                 f"(they would become Inf); convert it to a wider dtype")


def read_params(
    source: TensorSource,
    container: str,
    *,
    dtype: str | np.dtype | None = None,
    on_tensor: OnTensor | None = None,
) -> tuple[Params, Config, SourceMeta]:
    """Detects the naming, checks names, shapes and dtypes, then copies tensor by tensor into
    fresh leaves.

    The leaves are jax arrays on the CPU, in the file's dtype unless `dtype` is given (mixed
    files default to float32).
    """
    source = FusedTokenShift(source)
    naming, expected, n_layer = detect_naming(source)
    cfg = _infer_config(source, naming, n_layer)
    _check_shapes(source, naming, expected, cfg)
    stored = _source_dtype(source)
    out_dtype = as_dtype(dtype) or stored or np.dtype(np.float32)

    # Leaves are allocated lazily by the OS: pages become resident as tensors are copied in.
    params = _allocate(cfg, out_dtype)
    present = set(source.keys())
    for row, i in expected.values():
        if is_optional(row, i) and layer_name(naming, row, 0) not in present:
            _leaf(params["blocks"], row.path)[0] = 0
    keys = source.keys()
    for index, key in enumerate(keys):
        row, i = expected[key]
        leaf = _leaf(params, row.path) if i is None else _leaf(params["blocks"], row.path)
        slot = leaf if i is None else leaf[i]
        _copy_in(slot, source.array(key), row.layout(naming), source.label, key)
        if on_tensor is not None:
            on_tensor(key, index, len(keys))
    optional0 = [layer_name(naming, r, 0) for r in LAYER_ROWS if is_optional(r, 0)]
    meta = SourceMeta(
        container=container,
        naming=naming,
        path=source.label,
        dtype=stored.name if stored is not None else "mixed",
        layer0_v=all(n in present for n in optional0),
    )
    return _adopt(params), cfg, meta


def _allocate(cfg: Config, dtype: np.dtype) -> Params:
    """Uninitialised leaves, page-aligned so that jax can adopt them without a copy."""

    def empty(shape: Shape) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        raw = np.empty(nbytes + mmap.PAGESIZE, np.uint8)
        start = -raw.ctypes.data % mmap.PAGESIZE
        return raw[start : start + nbytes].view(dtype).reshape(shape)

    return jax.tree.map(empty, param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))


def _adopt(params: Params) -> Params:
    """The filled leaves as jax arrays on the CPU, sharing their memory (aligned: no copy)."""
    cpu = jax.devices("cpu")[0]
    return jax.tree.map(lambda x: jax.device_put(x, cpu), params)


@dataclass(frozen=True)
class Planned:
    """One tensor of an export: name and stored shape up front, bytes on demand."""

    name: str
    shape: Shape
    dtype: np.dtype
    make: Callable[[], np.ndarray]  # a fresh C-contiguous array of `shape` and `dtype`


def _params_dtype(params: Params) -> np.dtype:
    """The params' one dtype, or float32 when the leaves disagree."""
    dtypes = {np.dtype(x.dtype) for x in jax.tree.leaves(params)}
    return dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)


def plan_tensors(
    params: Params,
    naming: Naming,
    *,
    dtype: str | np.dtype | None = None,
    layer0_v: bool = True,
    on_tensor: OnTensor | None = None,
) -> list[Planned]:
    """The official tensors for `params` in `naming`, in the official order (embedding, blocks,
    head). Layer 0's unused v LoRA is written for BlinkDL names when `layer0_v`, never for
    flash-linear-attention names, always for transformers names (its class registers it).

    `on_tensor` is called as each tensor's bytes are made.
    """
    cfg = Config.from_params(params)
    check_params(params, cfg)
    out_dtype = as_dtype(dtype) or _params_dtype(params)
    host = jax.tree.map(np.asarray, params)  # one transfer (none for CPU arrays), then views
    shapes = _layer_shapes(cfg)

    def plan(row: Row, layer: int | None, index: int, count: int) -> Planned:
        name = row.name(naming) if layer is None else layer_name(naming, row, layer)
        layout = row.layout(naming)
        shape = _stored_shape(shapes[row.path], layout)

        def make() -> np.ndarray:
            leaf = _leaf(host, row.path) if layer is None else _leaf(host["blocks"], row.path)
            value = leaf if layer is None else leaf[layer]
            value = value.T if layout == T else value.reshape(shape)
            array = np.array(value, dtype=out_dtype, order="C", copy=True)
            if on_tensor is not None:
                on_tensor(name, index, count)
            return array

        return Planned(name, shape, out_dtype, make)

    keep_layer0_v = {"blink": layer0_v, "fla": False, "transformers": True}[naming]

    def skip(row: Row, layer: int) -> bool:
        return is_optional(row, layer) and not keep_layer0_v

    top = {r.path: r for r in TOP_ROWS}
    head_rows = [top["ln_out.weight"], top["ln_out.bias"], top["head"]]
    order: list[tuple[Row, int | None]] = [(r, None) for r in TOP_ROWS if r not in head_rows]
    order += [(row, i) for i in range(cfg.n_layer) for row in LAYER_ROWS if not skip(row, i)]
    order += [(r, None) for r in head_rows]
    return [plan(row, layer, k, len(order)) for k, (row, layer) in enumerate(order)]
