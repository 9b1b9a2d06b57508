"""`Model`: params, their config and tokenizer together, as loading, generation and editing pass them."""

from __future__ import annotations

import dataclasses

from rwkv_jax.config import Config
from rwkv_jax.params import Params
from rwkv_jax.tokenizer import NO_VOCAB, Tokenizer


@dataclasses.dataclass(frozen=True)
class Model:
    """What a checkpoint holds: params, their config and the tokenizer they were trained with
    (None for a model converted with vocab `none`: token ids only)."""

    params: Params
    cfg: Config
    tokenizer: Tokenizer | None

    def text_tokenizer(self, use: str) -> Tokenizer:
        """The tokenizer, for `use` (what needs text); a model without one is refused, saying so."""
        if self.tokenizer is None:
            raise ValueError(f"{use} needs text, but this model has no tokenizer (vocab {NO_VOCAB!r}: "
                             "token ids only); pass token ids, or convert it with a vocab")
        return self.tokenizer
