"""The World tokenizer against the official TRIE tokenizer, and vocab-file handling."""

import os

import pytest

from rwkv_jax.tokenizer import Tokenizer, byte_tokenizer, load_tokenizer, save_vocab, world_tokenizer

CORPUS = [
    "Hello world",
    "User: hi\n\nAssistant: <think>\n</think> Sure.",
    "日本語のテキストと中文混合，한국어도 있어요。",
    "emoji 😀🎉👩‍👩‍👧 flags 🇫🇷 and symbols ∑∫√",
    "def f(x):\n\treturn x ** 2  # comment\n\n\n",
    "    \t\t  trailing   whitespace runs          \n",
    "a" * 300 + " " * 129,
    "Ünïcödé àccents — “quotes” ‘single’ …",
    "\x00\x01\x7f control bytes",
    "",
]


@pytest.fixture(scope="module")
def official():
    os.environ["RWKV_V7_ON"] = "1"
    tok_mod = pytest.importorskip("rwkv.rwkv_tokenizer")
    path = os.path.join(os.path.dirname(tok_mod.__file__), "rwkv_vocab_v20230424.txt")
    return tok_mod.TRIE_TOKENIZER(path)


@pytest.mark.parametrize("text", CORPUS)
def test_ids_match_official_tokenizer(official, text):
    tok = world_tokenizer()
    assert tok.encode(text) == official.encode(text)
    assert tok.decode(tok.encode(text)) == text


def test_ids_match_official_on_random_bytes(official):
    import random

    rng = random.Random(0)
    tok = world_tokenizer()
    for _ in range(50):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        assert tok.encode_bytes(raw) == official.encodeBytes(raw)
        assert tok.decode_bytes(tok.encode_bytes(raw)) == raw


def test_known_ids():
    tok = world_tokenizer()
    assert tok.encode("\n\n") == [261]
    assert tok.encode("User: hi\n\nAssistant:") == [24281, 59, 4571, 261, 5585, 41693, 59]
    assert tok.encode("Hello world") == [33155, 40213]
    assert tok.vocab_size == 65530


def test_lone_surrogates_encode_without_error():
    tok = world_tokenizer()
    ids = tok.encode("a\ud800b")
    assert tok.decode_bytes(ids) == "a\ud800b".encode("utf-8", "surrogatepass")


def test_invalid_utf8_decodes_like_official(official):
    tok = world_tokenizer()
    cut = tok.encode_bytes("é".encode()[:1])
    assert tok.decode(cut) == official.decode(cut) == "\ufffd"
    assert tok.decode([0]) == "\ufffd"


def test_crlf_vocab_and_custom_vocab(tmp_path):
    lines = [f"{b + 1} {bytes([b])!r} 1" for b in range(256)]
    lines += ["257 'ab' 2", "258 '\\n\\n' 2", "300 'über' 5"]
    path = tmp_path / "v.txt"
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    tok = Tokenizer.from_file(path)
    assert tok.encode("abab\n\nüber") == [257, 257, 258, 300]
    assert tok.vocab_size == 301
    save_vocab(tok, tmp_path / "w.txt")
    again = load_tokenizer(tmp_path / "w.txt")
    assert again.id_to_bytes == tok.id_to_bytes


def test_bad_vocab_files_are_refused(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 'abc' 2\n")
    with pytest.raises(ValueError, match="length 2"):
        Tokenizer.from_file(bad)
    bad.write_text("1 not_a_literal 1\n")
    with pytest.raises(ValueError, match="malformed"):
        Tokenizer.from_file(bad)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.txt")
    partial = Tokenizer({2: b"a"})
    with pytest.raises(ValueError, match="not in vocab"):
        partial.encode("b")


def test_bytes_vocab_is_token_id_equals_byte_value_with_id_0_kept_for_end_of_text():
    tok = load_tokenizer("bytes")
    assert tok is byte_tokenizer() and tok.max_id == 255 and 0 not in tok.id_to_bytes
    assert tok.encode("hi\n") == [104, 105, 10]
    assert tok.encode("é") == list("é".encode())
    assert tok.decode([104, 105]) == "hi"
    with pytest.raises(ValueError, match="byte 0x00 at offset 1 is not in vocab bytes"):
        tok.encode("a\x00")


def test_vocab_none_means_no_tokenizer():
    assert load_tokenizer("none") is None


def test_byte_tokenizer_covers_every_string_without_nul():
    tok = byte_tokenizer()
    text = "Zoë's café — 7°"
    assert tok.decode(tok.encode(text)) == text
    assert max(tok.encode(text)) < tok.vocab_size == 256
