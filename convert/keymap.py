"""The one table mapping the official tensor names onto the params pytree, in every naming.

Three namings of the same tensors are in use, and any of them may come in either container
(a `.pth` pickle or safetensors):

    blink         BlinkDL's training code (`blocks.{i}.att.w1`, `emb.weight`): the official `.pth`,
                  and the safetensors files the ai00 / web-rwkv converters write.
    fla           flash-linear-attention (`model.layers.{i}.attn.w_lora.lora.0.weight`): the
                  `fla-hub` Hugging Face repos.
    transformers  the native `transformers` Rwkv7ForCausalLM (`rwkv7.blocks.{i}.att.w1`,
                  `rwkv7.emb.weight`, `head.weight`): BlinkDL's names and layouts under the
                  `rwkv7.` base-model prefix (huggingface/transformers `models/rwkv7`, whose
                  converter from `.pth` is that prefix rename).

A row says where a tensor lives in `rwkv_jax.params` (a dotted path; per-layer rows live under
`blocks` with the layer on the leading axis), its BlinkDL name and layout and its
flash-linear-attention name and layout. Layouts relative to the params leaf:

    SAME  stored as in params
    VEC3  a params vector [C] stored as [1, 1, C]
    T     a 2-D params matrix [in, out] stored transposed, [out, in] (nn.Linear)

Vectors are matched by element count on import ([C] and [1, 1, C] both accepted), because
writers disagree about squeezing them; exports always use the layout in the table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Layout = Literal["same", "vec3", "t"]
SAME: Layout = "same"
VEC3: Layout = "vec3"
T: Layout = "t"

Naming = Literal["blink", "fla", "transformers"]
NAMINGS: tuple[Naming, ...] = ("blink", "fla", "transformers")
NAMING_TITLES: dict[Naming, str] = {
    "blink": "BlinkDL",
    "fla": "flash-linear-attention",
    "transformers": "transformers",
}
_TRANSFORMERS_PREFIX = "rwkv7."  # Rwkv7ForCausalLM.rwkv7; its `head` sits outside it


@dataclass(frozen=True)
class Row:
    path: str  # params path, e.g. "att.w1" (under `blocks` for layer rows)
    blink: str  # BlinkDL name; layer rows are relative to `blocks.{i}.`
    blink_layout: Layout
    fla: str  # flash-linear-attention name; layer rows are relative to `model.layers.{i}.`
    fla_layout: Layout

    def name(self, naming: Naming) -> str:
        """The full name of a top-level row, the name below the layer prefix of a layer row."""
        if naming == "fla":
            return self.fla
        if naming == "transformers" and self in TOP_ROWS and self.path != "head":
            return _TRANSFORMERS_PREFIX + self.blink
        return self.blink

    def layout(self, naming: Naming) -> Layout:
        return self.fla_layout if naming == "fla" else self.blink_layout


def _lora(x: str, bias: bool) -> tuple[Row, ...]:
    """The `x` LoRA: `att.x1 [C, r]`, `att.x2 [r, C]`, bias `att.x0 [1, 1, C]` (official), versus
    `attn.x_lora.lora.{0,2}` nn.Linear weights and `lora.2.bias` (HF)."""
    rows = (
        Row(f"att.{x}1", f"att.{x}1", SAME, f"attn.{x}_lora.lora.0.weight", T),
        Row(f"att.{x}2", f"att.{x}2", SAME, f"attn.{x}_lora.lora.2.weight", T),
    )
    if bias:
        rows += (Row(f"att.{x}0", f"att.{x}0", VEC3, f"attn.{x}_lora.lora.2.bias", SAME),)
    return rows


TOP_ROWS: tuple[Row, ...] = (
    Row("emb", "emb.weight", SAME, "model.embeddings.weight", SAME),
    Row("ln0.weight", "blocks.0.ln0.weight", SAME, "model.layers.0.pre_norm.weight", SAME),
    Row("ln0.bias", "blocks.0.ln0.bias", SAME, "model.layers.0.pre_norm.bias", SAME),
    Row("ln_out.weight", "ln_out.weight", SAME, "model.norm.weight", SAME),
    Row("ln_out.bias", "ln_out.bias", SAME, "model.norm.bias", SAME),
    Row("head", "head.weight", T, "lm_head.weight", T),
)

# Token-shift coefficients, in the row order of the legacy fused HF `attn.x_x [6, C]`.
TOKEN_SHIFT = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")

LAYER_ROWS: tuple[Row, ...] = (
    Row("ln1.weight", "ln1.weight", SAME, "attn_norm.weight", SAME),
    Row("ln1.bias", "ln1.bias", SAME, "attn_norm.bias", SAME),
    Row("ln2.weight", "ln2.weight", SAME, "ffn_norm.weight", SAME),
    Row("ln2.bias", "ln2.bias", SAME, "ffn_norm.bias", SAME),
    *(Row(f"att.{x}", f"att.{x}", VEC3, f"attn.{x}", VEC3) for x in TOKEN_SHIFT),
    *_lora("w", bias=True),
    *_lora("a", bias=True),
    *_lora("v", bias=True),
    *_lora("g", bias=False),
    Row("att.k_k", "att.k_k", VEC3, "attn.k_k", SAME),
    Row("att.k_a", "att.k_a", VEC3, "attn.k_a", SAME),
    Row("att.r_k", "att.r_k", SAME, "attn.r_k", SAME),
    Row("att.receptance", "att.receptance.weight", T, "attn.r_proj.weight", T),
    Row("att.key", "att.key.weight", T, "attn.k_proj.weight", T),
    Row("att.value", "att.value.weight", T, "attn.v_proj.weight", T),
    Row("att.output", "att.output.weight", T, "attn.o_proj.weight", T),
    Row("att.ln_x.weight", "att.ln_x.weight", SAME, "attn.g_norm.weight", SAME),
    Row("att.ln_x.bias", "att.ln_x.bias", SAME, "attn.g_norm.bias", SAME),
    Row("ffn.x_k", "ffn.x_k", VEC3, "ffn.x_k", SAME),
    Row("ffn.key", "ffn.key.weight", T, "ffn.key.weight", T),
    Row("ffn.value", "ffn.value.weight", T, "ffn.value.weight", T),
)

# Layer 0 takes v from its own value projection, so its value-residual LoRA is never used:
# BlinkDL files may or may not carry it, flash-linear-attention files never do, and the
# transformers class registers it on every layer.
LAYER0_UNUSED = frozenset({"att.v0", "att.v1", "att.v2"})

LAYER_PREFIX: dict[Naming, str] = {
    "blink": "blocks.{i}.",
    "fla": "model.layers.{i}.",
    "transformers": _TRANSFORMERS_PREFIX + "blocks.{i}.",
}
_LAYER_INDEX: dict[Naming, re.Pattern[str]] = {
    naming: re.compile("^" + re.escape(prefix).replace(re.escape("{i}"), r"(\d+)"))
    for naming, prefix in LAYER_PREFIX.items()
}


def layer_name(naming: Naming, row: Row, i: int) -> str:
    return LAYER_PREFIX[naming].format(i=i) + row.name(naming)


def layer_indices(naming: Naming, keys: Iterable[str]) -> set[int]:
    """Every block index the keys name."""
    return {int(m.group(1)) for k in keys if (m := _LAYER_INDEX[naming].match(k))}


def expected_names(naming: Naming, n_layer: int) -> dict[str, tuple[Row, int | None]]:
    """Every name a complete checkpoint with `n_layer` blocks holds -> (row, layer or None)."""
    names: dict[str, tuple[Row, int | None]] = {r.name(naming): (r, None) for r in TOP_ROWS}
    for i in range(n_layer):
        for row in LAYER_ROWS:
            names[layer_name(naming, row, i)] = (row, i)
    return names


def is_optional(row: Row, layer: int | None) -> bool:
    return layer == 0 and row.path in LAYER0_UNUSED


# Key fragments that identify other RWKV generations or x070 variants, checked in this order.
FOREIGN_PATTERNS: tuple[tuple[str, str], ...] = (
    ("time_maa", "RWKV-6 (x060)"),
    ("time_faaaa", "RWKV-5 (x050/x052)"),
    ("time_first", "RWKV-4"),
    ("s_emb", "RWKV-7 DeepEmbed (x070 with extra s_emb/s0..s2 keys)"),
)


def detect_foreign(keys: Iterable[str]) -> tuple[str, list[str]] | None:
    """(what was detected, example keys) when the keys belong to a non-x070 model, else None."""
    keys = list(keys)
    for fragment, family in FOREIGN_PATTERNS:
        hits = sorted(k for k in keys if fragment in k)
        if hits:
            return family, hits[:3]
    return None
