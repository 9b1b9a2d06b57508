"""Which parts of a state an operation touches: one `Selection`, turned into per-leaf masks.

Every operation in `editing` takes a `Selection` and applies it the same way: the selection is
resolved against the model's shape (outside jit) into a `State`-shaped tree of boolean masks
that broadcast against the leaves, and the jitted kernel picks new values where the mask is set.
Masks are data, not static arguments, so changing the selection never recompiles a kernel.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import numpy as np
from jaxtyping import Bool

from rwkv_jax.state import COMPONENTS, State

# A named layer span as fractions (start, stop) of the depth, resolved with floor for any L:
# L=32 gives lower_half 0-15, upper_half 16-31, top_quarter 24-31 (the paper's Table 1 rows).
SPANS: dict[str, tuple[float, float]] = {
    "all": (0.0, 1.0),
    "lower_half": (0.0, 0.5),
    "upper_half": (0.5, 1.0),
    "top_quarter": (0.75, 1.0),
}

class Mask(tuple):
    """One bool per layer or head. Unlike a plain tuple it never equals (or hashes like) an index
    list: `(True, False) == (1, 0)` in Python, and a mask cached under one would serve the other."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((Mask, tuple(self)))


Index = tuple[int, ...] | Mask


def _index(value: int | Iterable[int] | Iterable[bool] | None, what: str) -> Index | None:
    """A hashable index list: ints (negative counts from the end; a lone int is one index), or a
    `Mask` of one bool per layer/head."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be ints or one bool per {what[:-1]}, got {value!r}")
    # numpy scalars to Python ones, but never through one array: numpy casts [True, 1] to [1, 1]
    items = tuple(i.item() if isinstance(i, np.generic) else i for i in list(value))
    if items and all(isinstance(i, bool) for i in items):
        return Mask(items)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise TypeError(f"{what} must be ints or one bool per {what[:-1]}, got {value!r}")
    return items


def _resolve(index: Index | None, size: int, what: str) -> np.ndarray:
    """Boolean mask `[size]` for an index list; raises if it does not fit `size`."""
    if index is None:
        return np.ones(size, bool)
    if isinstance(index, Mask):
        if len(index) != size:
            raise ValueError(f"{what} mask has {len(index)} entries but the model has {size}")
        return np.asarray(index, bool)
    bad = [i for i in index if not -size <= i < size]
    if bad:
        raise ValueError(f"{what} {bad} out of range for a model with {size} {what}")
    mask = np.zeros(size, bool)
    mask[list(index)] = True
    return mask


def span(name: str, n_layer: int) -> range:
    """The layers of a named span (`SPANS`) in a model of depth `n_layer`."""
    if name not in SPANS:
        raise ValueError(f"unknown layer span {name!r}; expected one of {sorted(SPANS)}")
    start, stop = SPANS[name]
    return range(int(start * n_layer), int(stop * n_layer))


@dataclasses.dataclass(frozen=True)
class Selection:
    """A subset of a state's layers, components and (for `wkv`) heads. Hashable and immutable.

    Attributes:
      layers: None (all), a `SPANS` name, layer indices (e.g. `range(16, 32)` or a lone `3`,
        negative counts from the end) or one bool per layer (kept as a `Mask`).
      components: a component name or several, out of `("wkv", "att_shift", "ffn_shift")`, or
        "all".
      heads: None (all) or head indices / one bool per head. Applies to `wkv` only: the
        token-shift buffers are `[D]` vectors that heads do not partition in the state.
    """

    layers: str | Index | None = None
    components: str | tuple[str, ...] = COMPONENTS
    heads: Index | None = None

    def __post_init__(self) -> None:
        layers = self.layers
        if isinstance(layers, str):
            span(layers, 1)  # validates the name
        else:
            layers = _index(layers, "layers")
        components = self.components
        if isinstance(components, str):
            components = COMPONENTS if components == "all" else (components,)
        unknown = sorted(set(components) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown state components {unknown}; expected some of {COMPONENTS}")
        heads = _index(self.heads, "heads")
        if heads is not None and "wkv" not in components:
            raise ValueError("a head selection applies to wkv only, but wkv is not selected")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "components", tuple(c for c in COMPONENTS if c in components))
        object.__setattr__(self, "heads", heads)

    def layer_mask(self, n_layer: int) -> Bool[np.ndarray, " L"]:
        """The selected layers."""
        if isinstance(self.layers, str):
            return _resolve(tuple(span(self.layers, n_layer)), n_layer, "layers")
        return _resolve(self.layers, n_layer, "layers")

    def masks(self, n_layer: int, n_head: int) -> State:
        """Per-leaf boolean masks: wkv `[L, H, 1, 1]`, att_shift and ffn_shift `[L, 1]`."""
        return _masks(self, n_layer, n_head)


@functools.lru_cache(maxsize=256)
def _masks(sel: Selection, n_layer: int, n_head: int) -> State:
    layers = sel.layer_mask(n_layer)
    heads = _resolve(sel.heads, n_head, "heads")
    masks = {}
    for c in COMPONENTS:
        units = layers[:, None] & heads[None, :] if State.has_heads(c) else layers  # [L, H] or [L]
        masks[c] = State.per_unit(c, units & (c in sel.components))
        masks[c].setflags(write=False)  # shared by the cache
    return State(**masks)


ALL = Selection()
