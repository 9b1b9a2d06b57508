"""Training: the loss falls, a resumed run equals an uninterrupted one, batches are reproducible,
and a converted official checkpoint fine-tunes from its own weights."""

import dataclasses
import random

import jax
import numpy as np
import pytest

import convert
import rwkv_jax
from rwkv_jax import Config, Tokenizer
from rwkv_jax.chat import reply_weights
from rwkv_jax.params import perturbed_params, with_new_tokens
from rwkv_jax.tokenizer import extend_vocab, save_vocab, subset_vocab, world_tokenizer
from rwkv_jax.train import TrainConfig, final_params, loss_fn, make_batch, train

COLORS = ["red", "blue", "green", "gold", "grey", "pink"]
NAMES = ["Ana", "Bo", "Cyd", "Dee", "Eli", "Fay"]


class ToyCorpus:
    """Who wears which colour: the answer must be copied from the passage."""

    def _prompt(self, rng: random.Random) -> tuple[str, str]:
        name, color = rng.choice(NAMES), rng.choice(COLORS)
        return f"User: {name} wears {color}.\n\nAssistant: Noted.\n\nUser: What does {name} wear?\n\nAssistant:", color

    def dialogue(self, rng: random.Random) -> str:
        prompt, color = self._prompt(rng)
        return f"{prompt} {color}\n\n"

    def questions(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        return [self._prompt(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def toy_tok() -> Tokenizer:
    rng = random.Random(0)
    return subset_vocab(world_tokenizer(), [ToyCorpus().dialogue(rng) for _ in range(200)], "toy")[0]


def tc(**kw) -> TrainConfig:
    base = TrainConfig(batch_size=4, seq_len=64, steps=30, peak_lr=3e-3, warmup=5, eval_every=0,
                       checkpoint_every=10, seed=3)
    return dataclasses.replace(base, **kw)


def test_subset_vocab_tokenizes_like_world(toy_tok):
    text = ToyCorpus().dialogue(random.Random(5))
    world = world_tokenizer()
    assert [toy_tok.id_to_bytes[i] for i in toy_tok.encode(text)] == [world.id_to_bytes[i] for i in world.encode(text)]
    assert toy_tok.decode(toy_tok.encode("ünseen text ✓")) == "ünseen text ✓"
    assert toy_tok.vocab_size < 400


def test_a_grown_vocab_keeps_every_id_and_tokenizes_new_text_like_world():
    world, rng = world_tokenizer(), random.Random(0)
    toy_tok, to_world = subset_vocab(world, [ToyCorpus().dialogue(rng) for _ in range(200)], "toy")
    new_text = "User: Ana says she wears her old red hat.\n\n"
    grown, grown_map = extend_vocab(toy_tok, to_world, world, [new_text])
    assert all(grown.id_to_bytes[i] == b for i, b in toy_tok.id_to_bytes.items())
    added = sorted(set(grown.id_to_bytes) - set(toy_tok.id_to_bytes))
    assert added == list(range(toy_tok.max_id + 1, grown.max_id + 1)) and len(added) >= 3
    assert [grown_map[i] for i in added] == sorted(grown_map[i] for i in added)
    assert all(world.id_to_bytes[grown_map[i]] == grown.id_to_bytes[i] for i in grown.id_to_bytes)
    as_world = [world.id_to_bytes[i] for i in world.encode(new_text)]
    assert [grown.id_to_bytes[i] for i in grown.encode(new_text)] == as_world
    assert [toy_tok.id_to_bytes[i] for i in toy_tok.encode(new_text)] != as_world
    old_text = ToyCorpus().dialogue(random.Random(9))
    assert grown.encode(old_text) == toy_tok.encode(old_text)


def test_new_token_rows_start_as_the_mean_of_their_old_spelling():
    cfg = Config.default(1, 64, 40)
    params = perturbed_params(cfg, seed=2)
    grown, grown_cfg = with_new_tokens(params, cfg, [[3, 5], [7]])
    emb, head = np.asarray(params["emb"]), np.asarray(params["head"])
    assert grown_cfg.vocab_size == 42 and grown["emb"].shape == (42, 64) and grown["head"].shape == (64, 42)
    np.testing.assert_array_equal(np.asarray(grown["emb"][:40]), emb)
    np.testing.assert_allclose(np.asarray(grown["emb"][40]), (emb[3] + emb[5]) / 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grown["head"][:, 41]), head[:, 7], rtol=1e-6)
    with pytest.raises(ValueError, match="spelled"):
        with_new_tokens(params, cfg, [[3], []])


def test_reply_weights_mark_assistant_tokens(toy_tok):
    text = "User: Bo wears red.\n\nAssistant: red\n\n"
    ids, w = reply_weights(toy_tok, text, 0.25)
    pieces = [toy_tok.id_to_bytes[i].decode() for i in ids]
    weighted = "".join(p for p, x in zip(pieces, w) if x == 1.0)
    assert weighted == " red\n\n"
    assert all(x == 0.25 for p, x in zip(pieces, w) if "wears" in p)


def test_batches_are_a_function_of_seed_and_step(toy_tok):
    a = make_batch(ToyCorpus(), toy_tok, tc(), 7)
    b = make_batch(ToyCorpus(), toy_tok, tc(), 7)
    c = make_batch(ToyCorpus(), toy_tok, tc(), 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (4, 65) and a[1].shape == (4, 64)


def test_micro_training_lowers_the_loss(toy_tok, tmp_path):
    cfg = Config.default(1, 64, toy_tok.vocab_size)
    losses = [m["loss"] for m in train(ToyCorpus(), toy_tok, cfg, tc(), tmp_path / "run")]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])


def test_held_out_accuracy_is_measured_every_eval_steps(toy_tok, tmp_path):
    cfg = Config.default(1, 64, toy_tok.vocab_size)
    steps = list(train(ToyCorpus(), toy_tok, cfg, tc(steps=12, eval_every=5, eval_questions=4), tmp_path / "e"))
    measured = {m["step"]: m["answer_accuracy"] for m in steps if "answer_accuracy" in m}
    assert sorted(measured) == [5, 10] and all(a in (0.0, 0.25, 0.5, 0.75, 1.0) for a in measured.values())


def test_resumed_run_equals_uninterrupted_run(toy_tok, tmp_path):
    cfg = Config.default(1, 64, toy_tok.vocab_size)
    settings = tc(steps=20)
    whole = list(train(ToyCorpus(), toy_tok, cfg, settings, tmp_path / "a"))[-1]["params"]
    first = list(train(ToyCorpus(), toy_tok, cfg, settings, tmp_path / "b", stop_at=13))
    assert first[-1]["step"] == 13  # interrupted after a checkpoint at 10; steps 11-13 are lost
    resumed = list(train(ToyCorpus(), toy_tok, cfg, settings, tmp_path / "b"))
    assert resumed[0]["step"] == 11
    for x, y in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed[-1]["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_final_params_reads_a_kept_step_and_names_the_kept_ones(toy_tok, tmp_path):
    cfg = Config.default(1, 64, toy_tok.vocab_size)
    settings = tc(steps=20, checkpoint_every=5)
    by_step = {m["step"]: m["params"] for m in train(ToyCorpus(), toy_tok, cfg, settings, tmp_path / "r")}
    for step, params in ((15, final_params(tmp_path / "r", cfg, settings, 15)),
                         (20, final_params(tmp_path / "r", cfg, settings))):
        for x, y in zip(jax.tree.leaves(by_step[step]), jax.tree.leaves(params)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 10; it keeps \[15, 20\]"):
        final_params(tmp_path / "r", cfg, settings, 10)


def test_fine_tuning_a_converted_checkpoint_starts_from_its_weights(toy_tok, tmp_path):
    pytest.importorskip("torch")  # writing the official .pth
    cfg = Config.default(1, 64, toy_tok.vocab_size)
    convert.write_pth(perturbed_params(cfg, seed=5), tmp_path / "official.pth")
    save_vocab(toy_tok, tmp_path / "vocab.txt")
    model = rwkv_jax.load(convert.convert(tmp_path / "official.pth", tmp_path / "ckpt", vocab=tmp_path / "vocab.txt"))
    settings = tc(steps=10)
    steps = list(train(ToyCorpus(), model.tokenizer, model.cfg, settings, tmp_path / "run", params=model.params))
    tokens, weights = make_batch(ToyCorpus(), model.tokenizer, settings, 0)
    np.testing.assert_allclose(steps[0]["loss"], float(loss_fn(model.params, model.cfg, tokens, weights)), rtol=1e-5)
    assert np.mean([m["loss"] for m in steps[-3:]]) < steps[0]["loss"]


def test_resuming_with_other_settings_is_refused(toy_tok, tmp_path):
    cfg = Config.default(1, 64, toy_tok.vocab_size)
    list(train(ToyCorpus(), toy_tok, cfg, tc(steps=2, warmup=1), tmp_path / "r"))
    with pytest.raises(ValueError, match="other settings"):
        list(train(ToyCorpus(), toy_tok, cfg, tc(steps=2, warmup=1, peak_lr=1e-2), tmp_path / "r"))
    with pytest.raises(ValueError, match="warmup"):
        tc(steps=5, warmup=5)
