"""The RWKV G1 chat template (`User: ...\\n\\nAssistant:`), think-span stripping, and which tokens of a
dialogue are assistant replies (the loss weights of training on it)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

from rwkv_jax.tokenizer import Tokenizer

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
STOP = "\n\n"
ASSISTANT = f"{ROLES['assistant']}:"  # what opens a reply
Think = Literal["think", "no_think"] | None

_THINK_SUFFIX = {None: "", "think": " <think", "no_think": " <think>\n</think"}
_THINK_SPAN = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def clean(text: str) -> str:
    """"\\n\\n" separates turns, so a message may not contain it."""
    return re.sub(r"\n{2,}", "\n", text.replace("\r\n", "\n")).strip()


def turn(role: str, text: str) -> str:
    """One finished turn, ending in the separator: `User: hi\\n\\n`."""
    if role not in ROLES:
        raise ValueError(f"unknown chat role {role!r}; expected one of {sorted(ROLES)}")
    return f"{ROLES[role]}: {clean(text)}{STOP}"


def chat_prompt(
    messages: Sequence[tuple[str, str]] | Sequence[dict[str, str]],
    *,
    system: str | None = None,
    think: Think = None,
    add_generation_prompt: bool = True,
) -> str:
    """Formats a conversation; ends with `Assistant:` (no space) when a reply is wanted.

    `messages` are `(role, text)` pairs or `{"role", "content"}` dicts; roles are `system`, `user`,
    `assistant`. `think="think"` opens a reasoning span (`Assistant: <think`), `"no_think"` writes
    an empty one so the model answers directly.
    """
    pairs = [(m["role"], m["content"]) if isinstance(m, dict) else tuple(m) for m in messages]
    head = turn("system", system) if system is not None else ""
    body = "".join(turn(role, text) for role, text in pairs)
    if not add_generation_prompt:
        return head + body
    if think not in _THINK_SUFFIX:
        raise ValueError(f"think must be one of {list(_THINK_SUFFIX)}, got {think!r}")
    return head + body + ASSISTANT + _THINK_SUFFIX[think]


def strip_think(text: str) -> str:
    """Removes `<think>...</think>` spans, and an unclosed `<think>` to the end of the text."""
    return _THINK_SPAN.sub("", text).strip()


def reply_weights(tokenizer: Tokenizer, text: str, context_weight: float) -> tuple[list[int], list[float]]:
    """Token ids of `text` and a loss weight per token: 1 inside assistant replies."""
    ids = tokenizer.encode(text)
    data = text.encode("utf-8")
    inside = np.zeros(len(data) + 1, bool)
    start = data.find(ASSISTANT.encode())
    while start >= 0:
        begin = start + len(ASSISTANT)
        end = data.find(STOP.encode(), begin)
        end = len(data) if end < 0 else end + len(STOP)
        inside[begin:end] = True
        start = data.find(ASSISTANT.encode(), end)
    offsets = np.cumsum([0] + [len(tokenizer.id_to_bytes[i]) for i in ids[:-1]])
    weights = np.where(inside[offsets], 1.0, context_weight) if ids else np.zeros(0)
    return ids, weights.tolist()
