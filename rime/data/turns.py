"""How a case becomes chat turns: the recipient with the assistant's acknowledgements, and filler
exchanges for the multi-turn axis. The training corpus uses the same turns, so the bundled model learns
the exact shape the benchmark feeds it."""

from __future__ import annotations

import random
from collections.abc import Iterable

from rime.data.content import Filler, content
from rime.data.errors import FieldValueError
from rime.data.schema import Case

FILLER_MODES = ("neutral", "adversarial")
MAX_FILLER_TURNS = 6
Message = tuple[str, str]  # (role, text), as `rwkv_jax.chat.chat_prompt` takes them


def acknowledgement() -> str:
    """The assistant's reply to every recipient passage in the benchmark."""
    return content().acknowledgements[0]


def passage_messages(passages: Iterable[str]) -> list[Message]:
    """Passages as chat turns: each one, then the acknowledgement."""
    return [turn for passage in passages for turn in (("user", passage), ("assistant", acknowledgement()))]


def recipient_messages(case: Case) -> list[Message]:
    """The recipient as chat turns."""
    return passage_messages(case.recipient.passages)


def filler_pool(mode: str, property_key: str) -> tuple[Filler, ...]:
    """Neutral turns, or the adversarial turns written about `property_key` (adjacent to it, never
    stating anyone's value of it)."""
    c = content()
    if mode == "neutral":
        return c.neutral_fillers
    if mode != "adversarial":
        raise ValueError(f"filler mode must be one of {FILLER_MODES}, got {mode!r}")
    if property_key not in c.adversarial_fillers:
        raise ValueError(f"no adversarial fillers are written for property {property_key!r}")
    return c.adversarial_fillers[property_key]


def avoiding(fillers: Iterable[Filler], words: Iterable[str]) -> list[Filler]:
    """The fillers that mention none of `words` (case-insensitive), so a filler never restates a fact."""
    words = [w.lower() for w in words]
    return [f for f in fillers if not any(w in f"{f.user} {f.assistant}".lower() for w in words)]


def case_words(case: Case) -> list[str]:
    """Every person and every answer in a case: what a filler must not mention."""
    values = [case.value_old, case.value_new, *case.aliases, *case.old_aliases]
    values += [s.value_new for s in case.stack] + [v for m in case.multi for v in (m.value_old, m.value_new)]
    values += [p.expected for p in case.probe_queries]
    return [*case.recipient.entity_order, case.wrong_entity, *values]


def filler_turns(case: Case, mode: str, k: int) -> list[Message]:
    """k filler exchanges to insert after the edit.

    Deterministic per (case id, mode), and always the first k of one fixed sequence of
    `MAX_FILLER_TURNS`, so the decay curve compares the same turns at every k.
    """
    if not 0 <= k <= MAX_FILLER_TURNS:
        raise ValueError(f"k must be in 0..{MAX_FILLER_TURNS}, got {k}")
    if mode == "adversarial" and case.property not in content().adversarial_fillers:
        raise FieldValueError(case.id, "property", f"no adversarial fillers are written for {case.property!r} "
                              f"(only for {sorted(content().adversarial_fillers)}); run it with --modes neutral")
    usable = avoiding(filler_pool(mode, case.property), case_words(case))
    if len(usable) < MAX_FILLER_TURNS:
        raise FieldValueError(case.id, "property", f"only {len(usable)} {mode} fillers avoid the case's names "
                              f"and values; {MAX_FILLER_TURNS} are needed")
    chosen = random.Random(f"fillers:{case.id}:{mode}").sample(usable, MAX_FILLER_TURNS)
    return filler_messages(chosen[:k])


def filler_messages(fillers: Iterable[Filler]) -> list[Message]:
    """Filler exchanges as chat turns."""
    return [m for f in fillers for m in (("user", f.user), ("assistant", f.assistant))]
