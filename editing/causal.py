"""The causal transplant experiment (paper §3, Table 1): is a fact in the state, and where?

Two chat contexts A and B state one fact with different values. Both are read, selected layers
of B's state are transplanted into A's, and the model answers a question about the fact from
the result. P(old) falling towards B's value says the transplanted slices carry the fact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from editing.algebra import transplant
from editing.calibration import read
from editing.select import Selection
from rwkv_jax.batch import Encoder
from rwkv_jax.chat import chat_prompt, turn
from rwkv_jax.config import Config
from rwkv_jax.params import Params
from rwkv_jax.state import COMPONENTS

FLIPPED = 0.8
"""A cell counts as flipped (bold) when P(new) exceeds this, as in the paper."""


@dataclasses.dataclass(frozen=True)
class FactPair:
    """Two contexts that differ in one fact, and a question whose answer tells them apart.

    `context` holds one `{}` for the value; the answer is scored on the first token of
    `" " + value` after `Assistant: {answer_prefix}` (after `Assistant:` when the prefix is empty).
    """

    name: str
    context: str
    question: str
    answer_prefix: str
    old: str
    new: str


FACTS = (
    FactPair("Hat color", "Alice wears a {} hat and Bob wears a grey scarf.",
             "What color is Alice's hat?", "Alice's hat is", "red", "green"),
    FactPair("City", "Carol moved to {} last year, and her brother stayed in Oslo.",
             "Which city does Carol live in?", "Carol lives in", "Paris", "London"),
    FactPair("Animal", "Dan keeps a {} at home; his neighbour keeps goldfish.",
             "What animal does Dan keep?", "Dan keeps a", "cat", "dog"),
    FactPair("Number", "Erin has {} apples in her basket.",
             "How many apples does Erin have?", "Erin has", "7", "3"),
)

# The same experiment in the phrasing of the RIME corpus, which the bundled model was trained on:
# it answers with the bare value, so there is no answer prefix.
RIME_FACTS = (
    FactPair("City", "Olek resides in {}.", "Where does Olek live?", "", "London", "Berlin"),
    FactPair("Vehicle", "Adela uses a {} to get around.", "What does Adela use to get around?", "",
             "pickup truck", "station wagon"),
    FactPair("Number", "Armin likes the number {} best.", "What number does Armin like most?", "",
             "eighty-eight", "forty-one"),
    FactPair("Pet", "Alba has a {} as a pet.", "What kind of pet does Alba keep?", "", "corn snake", "rabbit"),
)
FACT_SETS = {"generic": FACTS, "rime": RIME_FACTS}
ACKNOWLEDGEMENT = "Noted."

ROWS = (
    Selection(),
    Selection(layers="lower_half"),
    Selection(layers="upper_half"),
    Selection(layers="top_quarter"),
    Selection(layers="upper_half", components="wkv"),
)
"""The transplanted slices: all layers, lower half, upper half, top quarter, upper half wkv only."""


def row_label(select: Selection, cfg: Config) -> str:
    """`ALL`, or the layer range (`L16–31`) plus the components (and heads) when not all move."""
    masks = select.masks(cfg.n_layer, cfg.n_head)
    layers = np.flatnonzero(select.layer_mask(cfg.n_layer))
    if masks.wkv.all() and masks.att_shift.all() and masks.ffn_shift.all():
        return "ALL"
    label = f"L{layers[0]}–{layers[-1]}" if len(layers) else "no layers"
    if select.components != COMPONENTS:
        label += " " + "+".join(select.components) + " only"
    if select.heads is not None:
        label += f" heads {np.flatnonzero(masks.wkv.any(axis=(0, 2, 3))).tolist()}"
    return label


@dataclasses.dataclass(frozen=True)
class Table:
    """P(old) and P(new) per row and fact."""

    rows: tuple[str, ...]
    facts: tuple[str, ...]
    p_old: Float[np.ndarray, "R F"]
    p_new: Float[np.ndarray, "R F"]

    def to_markdown(self) -> str:
        """P(old) per cell; bold where the fact flipped (P(new) > `FLIPPED`)."""
        lines = ["| Layer range | " + " | ".join(self.facts) + " |",
                 "|---|" + "---:|" * len(self.facts)]
        for i, row in enumerate(self.rows):
            cells = [f"**{p:.3f}**" if q > FLIPPED else f"{p:.3f}"
                     for p, q in zip(self.p_old[i], self.p_new[i], strict=True)]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def transplant_table(params: Params, cfg: Config, tokenizer: Encoder,
                     facts: Sequence[FactPair] = FACTS,
                     rows: Sequence[Selection] = ROWS) -> Table:
    """Runs the experiment: all contexts in one pass, then every (fact, row) query in another.

    Rows are Baseline (A's state), Ground truth (B's state) and one per transplant in `rows`.
    """
    F = len(facts)
    said = lambda f, value: turn("user", f.context.format(value)) + turn("assistant", ACKNOWLEDGEMENT)
    contexts = [said(f, f.old) for f in facts] + [said(f, f.new) for f in facts]
    _, states = read(params, cfg, tokenizer, contexts)
    a = jax.tree.map(lambda x: x[:F], states)
    b = jax.tree.map(lambda x: x[F:], states)
    variants = [a, b] + [transplant(a, b, select=s) for s in rows]
    R = len(variants)
    # [R, F, ...] -> [F * R, ...], fact-major to match the query list
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1).reshape((F * R,) + xs[0].shape[1:]),
                           *variants)
    queries = [chat_prompt([("user", f.question)]) + (" " + f.answer_prefix if f.answer_prefix else "")
               for f in facts for _ in range(R)]
    logits, _ = read(params, cfg, tokenizer, queries, stacked)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1)).reshape(F, R, -1)

    def p(values: list[str]) -> np.ndarray:  # [R, F]: P(first token of " " + value)
        return np.stack([probs[i, :, tokenizer.encode(" " + v)[0]] for i, v in enumerate(values)],
                        axis=1)

    return Table(
        rows=("Baseline", "Ground truth") + tuple(row_label(s, cfg) for s in rows),
        facts=tuple(f.name for f in facts),
        p_old=p([f.old for f in facts]),
        p_new=p([f.new for f in facts]),
    )
