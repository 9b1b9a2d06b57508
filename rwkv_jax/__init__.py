"""rwkv_jax: a pure-functional RWKV-7 (x070) whose recurrent state is a plain, editable pytree.

    model = rwkv_jax.load("rime-tiny")                     # params, cfg, tokenizer
    logits, state = rwkv_jax.forward(model.params, model.cfg, tokens, state)
"""

from rwkv_jax.bundle import Model
from rwkv_jax.chat import chat_prompt, strip_think
from rwkv_jax.checkpoint import CheckpointError, save
from rwkv_jax.checkpoint import load_model as load
from rwkv_jax.config import Config
from rwkv_jax.generate import Generation, generate
from rwkv_jax.mesh import make_mesh, param_specs, parse_mesh, shard_params, state_specs
from rwkv_jax.model import Trace, forward, forward_trace, step
from rwkv_jax.params import abstract_params, cast_params, check_params, init_params
from rwkv_jax.random_models import random_model
from rwkv_jax.sampling import GREEDY, Sampling
from rwkv_jax.state import State
from rwkv_jax.tokenizer import Tokenizer, load_tokenizer, world_tokenizer

__all__ = [
    "GREEDY",
    "CheckpointError",
    "Config",
    "Generation",
    "Model",
    "Sampling",
    "State",
    "Tokenizer",
    "Trace",
    "abstract_params",
    "cast_params",
    "chat_prompt",
    "check_params",
    "forward",
    "forward_trace",
    "generate",
    "init_params",
    "load",
    "load_tokenizer",
    "make_mesh",
    "param_specs",
    "parse_mesh",
    "random_model",
    "save",
    "shard_params",
    "state_specs",
    "step",
    "strip_think",
    "world_tokenizer",
]
