"""Conversion errors: one ValueError subclass per way a checkpoint can be wrong.

Each names the file or keys at fault, so a user can tell a truncated download from an
RWKV-6 file from a hand-edited state dict without reading a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


def _listing(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class ConvertError(ValueError):
    """Base class: the checkpoint cannot be converted as it is."""


class UnsupportedFormatError(ConvertError):
    """The path is neither an official `.pth` nor Hugging Face safetensors (by name or content)."""


class CorruptCheckpointError(ConvertError):
    """The file is truncated, empty or not a readable checkpoint container."""


class UnsafeCheckpointError(ConvertError):
    """The pickle inside a `.pth` asks for objects other than tensors; it was not unpickled."""


class NotX070Error(ConvertError):
    """The checkpoint is a different RWKV generation or variant than x070."""


class KeyMismatchError(ConvertError):
    """Keys the x070 table does not know, or keys it needs that the checkpoint lacks.

    `missing` and `unexpected` are against `naming`, the table the keys came closest to (None
    when no naming was in question); `detail` says how the other tables fared.
    """

    def __init__(self, source: str, *, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
                 naming: str | None = None, detail: str = ""):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.naming = naming
        parts = []
        if self.missing:
            parts.append(f"missing keys: {_listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys: {_listing(self.unexpected)}")
        super().__init__(f"{source}: " + "; ".join(parts) + (f" ({detail})" if detail else ""))


class ShapeMismatchError(ConvertError):
    """A tensor's shape disagrees with the config the other tensors imply."""


class DtypeError(ConvertError):
    """A tensor is not floating point, or a requested dtype is not supported."""


class VocabMismatchError(ConvertError):
    """The tokenizer has token ids the model's embedding has no rows for."""


class NonFiniteError(ConvertError):
    """A tensor holds NaN or Inf values."""


class StateFileError(ConvertError):
    """A state file that is not a state of the form this reader knows, or not of this model."""
