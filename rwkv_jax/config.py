"""Model hyper-parameters: a frozen, hashable dataclass usable as a static jit argument."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any


def lora_rank(n_embd: int, factor: float) -> int:
    """The official initial LoRA rank suggestion: a multiple of 32, at least 32."""
    return max(32, int(round(factor * n_embd**0.5 / 32) * 32))


@dataclasses.dataclass(frozen=True)
class Config:
    """Shape of an RWKV-7 (x070) model.

    Attributes:
      n_layer: number of blocks L.
      n_embd: residual width D (= H * N).
      head_size: N, the width of one wkv head (64 in every released model).
      vocab_size: V, rows of `emb` and columns of `head`.
      dim_ffn: F, hidden width of the channel mix (read it from the checkpoint: 4D for G1, 3.5D now).
      d_decay, d_aaa, d_mv, d_gate: ranks of the decay (w), in-context learning rate (a),
        value-residual (v) and output-gate (g) LoRAs.
    """

    n_layer: int
    n_embd: int
    head_size: int
    vocab_size: int
    dim_ffn: int
    d_decay: int
    d_aaa: int
    d_mv: int
    d_gate: int

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Config.{f.name} must be a positive int, got {value!r}")
        if self.n_embd % self.head_size:
            raise ValueError(
                f"n_embd={self.n_embd} is not a multiple of head_size={self.head_size}: "
                "the wkv state splits D into H heads of N channels"
            )

    @functools.cached_property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @classmethod
    def default(
        cls,
        n_layer: int,
        n_embd: int,
        vocab_size: int,
        *,
        head_size: int = 64,
        dim_ffn: int | None = None,
    ) -> Config:
        """A config with the official default ranks and F = 4D."""
        return cls(
            n_layer=n_layer,
            n_embd=n_embd,
            head_size=head_size,
            vocab_size=vocab_size,
            dim_ffn=dim_ffn if dim_ffn is not None else 4 * n_embd,
            d_decay=lora_rank(n_embd, 2.5),
            d_aaa=lora_rank(n_embd, 2.5),
            d_mv=lora_rank(n_embd, 1.7),
            d_gate=lora_rank(n_embd, 5.0),
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Config:
        """Infers the config from the shapes of a params pytree (see `rwkv_jax.params`)."""
        try:
            att = params["blocks"]["att"]
            n_layer, n_head, head_size = att["r_k"].shape
            vocab_size, n_embd = params["emb"].shape
            return cls(
                n_layer=n_layer,
                n_embd=n_embd,
                head_size=head_size,
                vocab_size=vocab_size,
                dim_ffn=params["blocks"]["ffn"]["key"].shape[-1],
                d_decay=att["w1"].shape[-1],
                d_aaa=att["a1"].shape[-1],
                d_mv=att["v1"].shape[-1],
                d_gate=att["g1"].shape[-1],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"cannot infer a Config from these params: {e!r}") from e

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        fields = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        if set(fields) != names:
            raise ValueError(
                f"config fields {sorted(fields)} do not match Config fields {sorted(names)}"
            )
        return cls(**fields)
