"""An lm-evaluation-harness backend for rwkv_jax (`--model rwkv_jax`), registered on import."""

from rwkv_lm_eval.model import RwkvJaxLM

__all__ = ["RwkvJaxLM"]
