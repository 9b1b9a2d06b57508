"""`python -m rwkv_lm_eval ...`: lm-eval's own command line with the `rwkv_jax` model registered."""

from lm_eval.__main__ import cli_evaluate

import rwkv_lm_eval  # noqa: F401  (registers the model)

if __name__ == "__main__":
    cli_evaluate()
