"""The official `rwkv` package as a test oracle: run an official `.pth` on CPU, get numpy back.

Import this module only from test files that already did `pytest.importorskip("torch")`.
The official state list `[att_x, wkv [H, N, N], ffn_x] * L` maps onto our `State` fields
`att_shift [L, D]`, `wkv [L, H, N, N]` (same [value, key] order) and `ffn_shift [L, D]`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ["RWKV_V7_ON"] = "1"  # must precede `import rwkv.model`: it selects the x070 class
import torch  # noqa: E402

torch.set_num_threads(1)  # two shared cores: OpenMP spin-waiting makes more threads ~100x slower

from rwkv.model import RWKV  # noqa: E402

from rwkv_jax.state import State  # noqa: E402


def load_official(path: str | os.PathLike, strategy: str = "cpu fp32") -> RWKV:
    """The official model for a `.pth` file (its loader appends the extension itself)."""
    path = Path(path)
    if path.suffix != ".pth":
        raise ValueError(f"{path}: the official loader needs a .pth file")
    return RWKV(model=str(path.with_suffix("")), strategy=strategy)


def _to_official(state: State) -> list[torch.Tensor]:
    out = []
    for i in range(np.shape(state.att_shift)[0]):
        out += [
            torch.tensor(np.asarray(state.att_shift[i], np.float32)),
            torch.tensor(np.asarray(state.wkv[i], np.float32)),
            torch.tensor(np.asarray(state.ffn_shift[i], np.float32)),
        ]
    return out


def _from_official(state: list[torch.Tensor]) -> State:
    def stack(j: int) -> np.ndarray:
        return np.stack([t.float().numpy() for t in state[j::3]])

    return State(wkv=stack(1), att_shift=stack(0), ffn_shift=stack(2))


def official_forward(
    model: RWKV, tokens: list[int] | np.ndarray, state: State | None = None
) -> tuple[np.ndarray, State]:
    """(float32 logits [T, V], the state after the tokens with numpy leaves).

    The official model runs in its strategy's dtype; a `state` is cast to it on the way in.
    """
    tokens = [int(t) for t in tokens]
    official_state = None if state is None else _to_official(state)
    if official_state is not None and model.z["emb.weight"].dtype != torch.float32:
        dtype = model.z["emb.weight"].dtype
        official_state = [t if j % 3 == 1 else t.to(dtype) for j, t in enumerate(official_state)]
    with torch.no_grad():
        logits, official_state = model.forward(tokens, official_state, full_output=True)
    logits = logits.float().numpy().reshape(len(tokens), -1)
    return logits, _from_official(official_state)
