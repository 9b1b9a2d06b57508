"""Tokenizers: greedy longest byte match over a vocab, the RWKV World one or any other.

A vocab is named in one of four ways (a `vocab` spec, as `python -m convert --vocab` and
checkpoints' `meta.json` take it):

    rwkv_vocab_v20230424   the bundled RWKV World vocab (65,529 tokens; the default)
    bytes                  built in: token id = byte value for bytes 1..255 (rwkv.cpp's byte-level
                           test models); byte 0x00 cannot be encoded, as id 0 is end-of-text
    none                   token ids only: the model's `tokenizer` is None, and what needs text
                           says so
    PATH                   a vocab file in the official format below

The vocab file format (the one the official `rwkv_vocab_v20230424.txt` uses): UTF-8 text, one
token per line, `<id> <python literal> <byte length>`, e.g. `1 '\x00' 1`, `261 '\n\n' 2`,
`256 b'\xff' 1`. The literal is a `str` (its UTF-8 bytes are the token) or a `bytes` literal
(for tokens that are not valid UTF-8); the length is the token's length in bytes and is checked.
Ids need not be contiguous; id 0 may not appear (it is end-of-text). Blank lines are skipped and
CRLF endings are accepted. Every byte string encodes only if all 256 single bytes are tokens.
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Iterable, Sequence
from importlib import resources

WORLD_VOCAB = "rwkv_vocab_v20230424"
BYTES_VOCAB = "bytes"
NO_VOCAB = "none"
BUILT_IN_VOCABS = (WORLD_VOCAB, BYTES_VOCAB, NO_VOCAB)


def _parse_line(line: str, lineno: int, source: str) -> tuple[int, bytes]:
    """`<id> <python literal> <byte length>`; the literal is a str (UTF-8 encoded) or bytes."""
    try:
        first, last = line.index(" "), line.rindex(" ")
        idx = int(line[:first])
        value = ast.literal_eval(line[first:last].strip())
        length = int(line[last:])
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{source}:{lineno}: malformed vocab line {line!r}") from e
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{source}:{lineno}: token {value!r} does not have length {length}")
    return idx, value


class Tokenizer:
    """Greedy longest-match tokenizer. Every byte string encodes as long as all 256 bytes are tokens.

    Token 0 is not a vocab entry: it marks end of document and is never produced by `encode`.
    """

    def __init__(self, vocab: dict[int, bytes], name: str = "custom"):
        if 0 in vocab:
            raise ValueError("token id 0 is reserved for end-of-document and cannot be a vocab entry")
        self.name = name
        self.id_to_bytes = dict(vocab)
        self.bytes_to_id = {b: i for i, b in vocab.items()}
        if len(self.bytes_to_id) != len(vocab):
            raise ValueError("vocab has duplicate tokens")
        self.max_id = max(vocab)
        self._trie: dict = {}
        for token, idx in self.bytes_to_id.items():
            node = self._trie
            for byte in token:
                node = node.setdefault(byte, {})
            node[None] = idx

    @classmethod
    def from_file(cls, path: str | os.PathLike, name: str | None = None) -> Tokenizer:
        # Text mode with universal newlines: the PyPI copy of the World vocab has CRLF endings.
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        vocab = {}
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            idx, token = _parse_line(line, lineno, str(path))
            if idx in vocab:
                raise ValueError(f"{path}:{lineno}: duplicate token id {idx}")
            vocab[idx] = token
        return cls(vocab, name=name or os.path.splitext(os.path.basename(path))[0])

    @property
    def vocab_size(self) -> int:
        """Rows an embedding needs: the largest id plus one."""
        return self.max_id + 1

    def encode_bytes(self, src: bytes) -> list[int]:
        tokens = []
        pos, n = 0, len(src)
        root = self._trie
        while pos < n:
            node, best, best_end, i = root, None, pos, pos
            while i < n:
                node = node.get(src[i])
                if node is None:
                    break
                i += 1
                if None in node:
                    best, best_end = node[None], i
            if best is None:
                raise ValueError(f"byte {src[pos]:#04x} at offset {pos} is not in vocab {self.name}")
            tokens.append(best)
            pos = best_end
        return tokens

    def encode(self, text: str) -> list[int]:
        """Lone surrogates are encoded with `surrogatepass`, so no str makes this fail."""
        return self.encode_bytes(text.encode("utf-8", errors="surrogatepass"))

    def decode_bytes(self, tokens: Iterable[int]) -> bytes:
        try:
            return b"".join(self.id_to_bytes[int(t)] for t in tokens)
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is not in vocab {self.name}") from None

    def decode(self, tokens: Sequence[int]) -> str:
        """Like the official tokenizer: text that is not valid UTF-8 (or an unknown id) gives '\\ufffd'."""
        try:
            return self.decode_bytes(tokens).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return "\ufffd"

    def token_text(self, idx: int) -> str:
        return self.id_to_bytes[idx].decode("utf-8", errors="replace")


@functools.cache
def world_tokenizer() -> Tokenizer:
    """The official 65,529-token World vocab shipped with the package."""
    path = resources.files("rwkv_jax") / "vocab" / f"{WORLD_VOCAB}.txt"
    return Tokenizer.from_file(str(path), name=WORLD_VOCAB)


@functools.cache
def byte_tokenizer() -> Tokenizer:
    """Token id = byte value, for bytes 1..255 (id 0 stays end-of-text)."""
    return Tokenizer({b: bytes([b]) for b in range(1, 256)}, name=BYTES_VOCAB)


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer | None:
    """The tokenizer of a vocab spec (see the module docstring): a built-in name, or a vocab file.
    None for `none`."""
    name = str(spec)
    if name == WORLD_VOCAB:
        return world_tokenizer()
    if name == BYTES_VOCAB:
        return byte_tokenizer()
    if name == NO_VOCAB:
        return None
    if not os.path.exists(spec):
        raise FileNotFoundError(
            f"no vocab file {name} (and it is not a built-in vocab: {', '.join(BUILT_IN_VOCABS)})"
        )
    return Tokenizer.from_file(spec)


def save_vocab(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    """Writes the vocab in the official `<id> <literal> <byte length>` format (str literal when
    the token is valid UTF-8, bytes literal otherwise), readable by `Tokenizer.from_file`."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for idx in sorted(tokenizer.id_to_bytes):
            token = tokenizer.id_to_bytes[idx]
            try:
                literal = repr(token.decode("utf-8"))
            except UnicodeDecodeError:
                literal = repr(token)
            f.write(f"{idx} {literal} {len(token)}\n")


def subset_vocab(base: Tokenizer, texts: Iterable[str], name: str) -> tuple[Tokenizer, dict[int, int]]:
    """A compact vocab: the 256 single bytes plus every `base` token that tokenizing `texts` uses,
    renumbered densely (bytes keep ids 1..256). Returns it and the map new id -> base id.

    Greedy longest match over this subset tokenizes those texts exactly as `base` does (a longer
    match in the subset would also be a longer match in `base`), and any other text still encodes.
    """
    single = {b: base.bytes_to_id.get(bytes([b])) for b in range(256)}
    if None in single.values():
        raise ValueError(f"vocab {base.name} lacks some single-byte tokens")
    byte_vocab = Tokenizer({b + 1: bytes([b]) for b in range(256)}, name=name)
    return extend_vocab(byte_vocab, {b + 1: single[b] for b in range(256)}, base, texts)


def extend_vocab(tokenizer: Tokenizer, to_base: dict[int, int], base: Tokenizer, texts: Iterable[str]
                 ) -> tuple[Tokenizer, dict[int, int]]:
    """`tokenizer` (a `subset_vocab` of `base`, with its id map `to_base`) plus every `base` token that
    tokenizing `texts` uses and it lacks, appended after its ids in `base` order; existing ids keep
    their meaning, so a trained model only gains rows. Returns it and the extended id map."""
    have = set(to_base.values())
    used = set()
    for text in texts:
        used.update(base.encode(text))
    vocab, to_base = dict(tokenizer.id_to_bytes), dict(to_base)
    for new, old in enumerate(sorted(used - have), start=tokenizer.max_id + 1):
        vocab[new], to_base[new] = base.id_to_bytes[old], old
    return Tokenizer(vocab, name=tokenizer.name), to_base
