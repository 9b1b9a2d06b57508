"""RIME's turns in the model's G1 chat template (`rwkv_jax.chat`): the text the harness feeds the
model and the training corpus in the shape `rwkv_jax.train` reads. `rime.data` builds the turns and
stays free of JAX; rendering them needs the template, which `rwkv_jax` owns."""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Sequence

from rime.data.corpus import MIXES, Mix, admissible_dialogue, bundled_held_out, dialogue_turns
from rime.data.turns import Message
from rwkv_jax.chat import chat_prompt


def chat_text(messages: Sequence[Message]) -> str:
    """Finished chat turns in the G1 format (`User: ...\\n\\nAssistant: ...\\n\\n`)."""
    return chat_prompt(messages, add_generation_prompt=False)


def dialogues(seed: int, exclude: Collection[str] | None = None) -> Iterator[str]:
    """Endless dialogues as G1 chat text (`User: ...\\n\\nAssistant: ...\\n\\n`)."""
    return map(chat_text, dialogue_turns(seed, exclude))


class TrainingCorpus:
    """The corpus in the shape `rwkv_jax.train` draws from: the caller's RNG drives every draw, so
    a training batch is a pure function of its (seed, step)."""

    def __init__(self, exclude: Collection[str] | None = None, mix: Mix = MIXES["default"]):
        self.exclude = bundled_held_out() if exclude is None else exclude
        self.mix = mix

    def dialogue(self, rng: random.Random) -> str:
        return chat_text(admissible_dialogue(rng, self.mix, self.exclude))

    def questions(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """(prompt ending in `Assistant:`, expected reply): a dialogue cut before its last answer."""
        pairs = []
        for _ in range(n):
            *context, (_, answer) = admissible_dialogue(rng, self.mix, self.exclude)
            pairs.append((chat_prompt(context), answer))
        return pairs
