"""The G1 chat template and think stripping."""

import pytest

from rwkv_jax.chat import chat_prompt, clean, strip_think, turn


def test_single_turn_has_no_trailing_space():
    assert chat_prompt([("user", "hi")]) == "User: hi\n\nAssistant:"


def test_multi_turn_with_system_and_cleaning():
    text = chat_prompt(
        [{"role": "user", "content": "a\n\n\nb\r\n"}, ("assistant", " ok "), ("user", "next")],
        system="Be brief.\n\nReally.",
    )
    assert text == "System: Be brief.\nReally.\n\nUser: a\nb\n\nAssistant: ok\n\nUser: next\n\nAssistant:"
    assert "\n\n" not in clean("x\n\n\n\ny")


def test_think_variants():
    assert chat_prompt([("user", "q")], think="think").endswith("Assistant: <think")
    assert chat_prompt([("user", "q")], think="no_think").endswith("Assistant: <think>\n</think")
    assert chat_prompt([("user", "q")], add_generation_prompt=False) == "User: q\n\n"
    with pytest.raises(ValueError, match="think"):
        chat_prompt([("user", "q")], think="maybe")
    with pytest.raises(ValueError, match="role"):
        turn("robot", "x")


def test_strip_think_removes_closed_and_unclosed_spans():
    assert strip_think("<think>plan</think> Paris") == "Paris"
    assert strip_think("A <think>x</think>B<think>y</think> C") == "A B C"
    assert strip_think("Answer: red <think>still thinking") == "Answer: red"
    assert strip_think("no spans") == "no spans"
