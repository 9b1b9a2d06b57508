"""rwkv_jax: a pure-functional RWKV-7 (x070) whose recurrent state is a plain, editable pytree."""

from rwkv_jax.config import Config
from rwkv_jax.params import abstract_params, cast_params, check_params, init_params
from rwkv_jax.state import State
from rwkv_jax.tokenizer import Tokenizer, load_tokenizer, world_tokenizer

__all__ = [
    "Config",
    "State",
    "Tokenizer",
    "abstract_params",
    "cast_params",
    "check_params",
    "init_params",
    "load_tokenizer",
    "world_tokenizer",
]
