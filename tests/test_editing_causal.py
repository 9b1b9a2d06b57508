"""The transplant experiment's mechanics on a tiny random model, and its table's layout."""

import jax
import numpy as np
import pytest
from conftest import byte_tokenizer

from editing import Selection, transplant
from editing.calibration import read
from editing.causal import ROWS, FactPair, Table, row_label, transplant_table
from rwkv_jax.bundle import Model
from rwkv_jax.chat import chat_prompt, turn
from rwkv_jax.config import Config


@pytest.fixture(scope="module")
def model(tiny):
    cfg, params = tiny
    return Model(params, cfg, byte_tokenizer())


def parts(model):
    return model.params, model.cfg, model.tokenizer


def test_transplanting_every_layer_reproduces_prompt_b_next_token_distribution(model):
    contexts = [turn("user", "Alice wears a red hat."), turn("user", "Alice wears a green hat.")]
    _, states = read(*parts(model), contexts)
    a, b = (jax.tree.map(lambda x, i=i: x[i], states) for i in (0, 1))
    moved = transplant(a, b)
    query = chat_prompt([("user", "What color is Alice's hat?")]) + " Alice's hat is"
    stack = lambda *states: jax.tree.map(lambda *x: np.stack(x), *states)
    p_a, p_b = np.asarray(jax.nn.softmax(read(*parts(model), [query] * 2, stack(a, b))[0]))
    p_moved, _ = np.asarray(jax.nn.softmax(read(*parts(model), [query] * 2, stack(moved, a))[0]))
    np.testing.assert_array_equal(p_moved, p_b)
    # the states differ enough to matter, so the equality above is not vacuous
    assert np.abs(p_a - p_b).max() > 100 * np.finfo(np.float32).eps


def test_table_has_baseline_ground_truth_and_the_paper_rows(model):
    # The byte tokenizer scores every answer on its leading space, so P(old) = P(new) here;
    # the real-token scoring runs in scripts/transplant_table.py --random-tiny.
    # (Short texts keep every read within one 32-token bucket: fewer compilations.)
    facts = [FactPair("Hat", "Al has a {} hat.", "Al's hat?", "It", "red", "tan")]
    table = transplant_table(*parts(model), facts)
    assert table.rows == ("Baseline", "Ground truth", "ALL", "L0–0", "L1–1", "L1–1",
                          "L1–1 wkv only")
    assert table.facts == ("Hat",)
    assert table.p_old.shape == table.p_new.shape == (7, 1)
    assert ((0 <= table.p_old) & (table.p_old <= 1)).all()
    np.testing.assert_array_equal(table.p_old[2], table.p_old[1])  # ALL == Ground truth
    np.testing.assert_array_equal(table.p_new[2], table.p_new[1])


def test_row_labels_name_the_layers_components_and_heads():
    cfg = Config.default(32, 256, 100)
    labels = [row_label(s, cfg) for s in ROWS]
    assert labels == ["ALL", "L0–15", "L16–31", "L24–31", "L16–31 wkv only"]
    assert row_label(Selection(layers=[3], components="wkv", heads=[1]), cfg) == (
        "L3–3 wkv only heads [1]")


def test_markdown_marks_flipped_cells_in_bold():
    table = Table(rows=("Baseline", "ALL"), facts=("City", "Number"),
                  p_old=np.array([[0.99, 0.5], [0.01, 0.3]]),
                  p_new=np.array([[0.001, 0.4], [0.95, 0.6]]))
    assert table.to_markdown().splitlines() == [
        "| Layer range | City | Number |",
        "|---|---:|---:|",
        "| Baseline | 0.990 | 0.500 |",
        "| ALL | **0.010** | 0.300 |",
    ]
