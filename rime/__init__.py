"""RIME: the Runtime Internal Memory Editing benchmark.

Three parts: `rime.data`, the dataset and the training corpus's turns (no JAX; its names are
re-exported here, so `import rime` stays light); `rime.chat`, those turns in the model's chat
template; `rime.eval`, the JAX harness that runs edit methods on the cases and reports them.

    cases = rime.load("test")                      # the bundled test split
    spec = rime.eval.Spec.build(["delta", "null", "in_context"], fillers=(0, 1))
    rime.eval.run("runs/x", rwkv_jax.load("rime-tiny"), "rime-tiny", cases, "test", spec)  # resumable
    rime.eval.write_report("runs/x")               # report.md and the four figures
"""

from rime.data import *  # noqa: F403
from rime.data import __all__  # noqa: F401
