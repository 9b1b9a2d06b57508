"""Import and export official RWKV-7 (x070) checkpoints: `.pth` or safetensors (one file, sharded,
a HF directory), with BlinkDL, flash-linear-attention or transformers tensor names.

    convert("rwkv7-g1.pth", "ckpt/")            # -> rwkv_jax.load("ckpt/")
    convert("ckpt/", "copy.pth")                 # and back (or to a HF directory, a .safetensors)
    convert("ckpt/", "m.safetensors", naming="blink")   # any naming in any container
    model = load("rwkv7-g1.pth")                 # any checkpoint as a Model, converted in memory
    params, cfg, meta = read_checkpoint("model.safetensors")  # naming detected from the names
    write_pth(params, "copy.pth")                # loadable by the official `rwkv` package
    save_state(state, "s.pth")                   # a state file for the rwkv package (or RWKV-PEFT's)

Also `python -m convert IN OUT`. torch is imported only when a `.pth` is read or written; the
HF format needs neither torch nor the `safetensors` package (see `convert.safetensors`).

Modules: `keymap` (the name table), `assemble` (tensors <-> params, streaming), `pth`, `hf`,
`safetensors` (file format), `pages` (releasing mapped pages), `pipeline` (`convert`),
`state_files` (states in the ecosystem's files), `errors`.
"""

from convert.assemble import SourceMeta
from convert.errors import (
    ConvertError,
    CorruptCheckpointError,
    DtypeError,
    KeyMismatchError,
    NonFiniteError,
    NotX070Error,
    ShapeMismatchError,
    StateFileError,
    UnsafeCheckpointError,
    UnsupportedFormatError,
    VocabMismatchError,
)
from convert.hf import read_hf, write_hf, write_safetensors
from convert.keymap import NAMINGS, Naming
from convert.pipeline import convert, detect_format, load, read_checkpoint
from convert.pth import read_pth, write_pth
from convert.state_files import load_state, save_state

__all__ = [
    "ConvertError",
    "CorruptCheckpointError",
    "DtypeError",
    "KeyMismatchError",
    "NAMINGS",
    "Naming",
    "NonFiniteError",
    "NotX070Error",
    "ShapeMismatchError",
    "SourceMeta",
    "StateFileError",
    "UnsafeCheckpointError",
    "UnsupportedFormatError",
    "VocabMismatchError",
    "convert",
    "detect_format",
    "load",
    "load_state",
    "read_checkpoint",
    "read_hf",
    "read_pth",
    "save_state",
    "write_hf",
    "write_pth",
    "write_safetensors",
]
