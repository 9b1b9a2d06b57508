"""Stop strings as token-level automata, so a jitted decode loop can stop on text.

A stop string can span several tokens ("\\n" then "\\n") or sit inside one ("\\n\\n" = token 261).
For each stop string we run the byte-level KMP automaton over every token's bytes once, giving a
table `next[q, token]` of automaton states; state `len(stop)` means "matched" and is absorbing.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Int

from rwkv_jax.tokenizer import Tokenizer


def _kmp_dfa(pattern: bytes) -> np.ndarray:
    """`[m, 256]` transitions of the automaton accepting any text that ends with `pattern`."""
    m = len(pattern)
    dfa = np.zeros((m, 256), np.int32)
    dfa[0, pattern[0]] = 1
    restart = 0
    for q in range(1, m):
        dfa[q] = dfa[restart]
        dfa[q, pattern[q]] = q + 1
        restart = dfa[restart, pattern[q]]
    return dfa


def stop_table(tokenizer: Tokenizer, stop: str, vocab_size: int) -> Int[np.ndarray, "Q V"]:
    """The automaton state after reading a token from state q, for the Q = m + 1 states of a stop
    string of m bytes."""
    pattern = stop.encode("utf-8")
    if not pattern:
        raise ValueError("a stop string must not be empty")
    m = len(pattern)
    dfa = np.concatenate([_kmp_dfa(pattern), np.full((1, 256), m, np.int32)])  # m absorbs
    ids = np.array(sorted(i for i in tokenizer.id_to_bytes if i < vocab_size), np.int64)
    width = max(len(tokenizer.id_to_bytes[i]) for i in ids)
    lengths = np.array([len(tokenizer.id_to_bytes[i]) for i in ids])
    data = np.zeros((len(ids), width), np.int64)
    for row, i in enumerate(ids):
        token = tokenizer.id_to_bytes[i]
        data[row, : len(token)] = np.frombuffer(token, np.uint8)
    table = np.tile(np.arange(m + 1, dtype=np.int32)[:, None], (1, vocab_size))
    for q in range(m + 1):
        state = np.full(len(ids), q, np.int32)
        for pos in range(width):
            state = np.where(pos < lengths, dfa[state, data[:, pos]], state)
        table[q, ids] = state
    return table


def stop_tables(tokenizer: Tokenizer, stops: tuple[str, ...], vocab_size: int
                ) -> tuple[Int[np.ndarray, "S Q V"], Int[np.ndarray, " S"]]:
    """Stacked tables (shorter patterns padded to the longest's Q) and match states."""
    if not stops:
        return np.zeros((0, 1, vocab_size), np.int32), np.zeros((0,), np.int32)
    tables = [stop_table(tokenizer, s, vocab_size) for s in stops]
    depth = max(t.shape[0] for t in tables)
    padded = np.stack([np.concatenate([t, np.repeat(t[-1:], depth - t.shape[0], 0)]) for t in tables])
    return padded, np.array([t.shape[0] - 1 for t in tables], np.int32)


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one occurred."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
