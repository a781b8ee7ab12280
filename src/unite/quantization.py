"""Quantised embeddings, defined as sentence-transformers defines them (``quantize_embeddings``).

Precisions, for ``(N, D)`` float embeddings:

- ``float32``: a cast. ``float16``: a plain cast (sentence-transformers has no float16 precision).
- ``int8`` / ``uint8``: per dimension, the range ``[min, max]`` (from calibration embeddings, by default the
  embeddings themselves) is cut into 255 steps; ``bucket = clip(floor((x - min) / step), 0, 255)`` with
  ``step = (max - min) / 255`` computed in float32 (a step of 0 counts as 1); ``uint8`` is the bucket, ``int8`` the
  bucket minus 128. Shape ``(N, D)``. Values outside the range land in the end buckets.
- ``ubinary``: one bit per dimension, set where ``x > 0``, packed big-endian with ``np.packbits`` along each row:
  ``(N, ceil(D / 8))`` uint8 (a row of D not divisible by 8 is padded with zero bits). ``binary`` is ``ubinary - 128``
  as int8, the same bits.

This matches sentence-transformers 6 (its ``util.quantization.quantize_embeddings``, with the clipping and flooring
of its pull request #3847); releases before it truncated toward zero after subtracting 128 and did not clip.

The per-dimension ranges are a :class:`Calibration`, saved beside encoded files (``OUT.calibration.npz``) and in
index manifests so that later vectors (queries, new documents) fall into the same buckets.
"""

from __future__ import annotations

import enum
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unite.errors import ConfigError, InputError
from unite.outputs import write_atomically

__all__ = [
    "CALIBRATION_SUFFIX",
    "Calibration",
    "Precision",
    "calibration_path",
    "quantize_embeddings",
    "quantize_rows",
]

#: ``OUT.npy`` -> ``OUT.calibration.npz``.
CALIBRATION_SUFFIX = ".calibration.npz"
#: Buckets of the int8 / uint8 precisions: 256 values, 255 steps between min and max.
STEPS = 255
#: int8 = uint8 bucket - 128; binary = ubinary byte - 128.
SIGNED_OFFSET = 128


class Precision(str, enum.Enum):
    """What one embedding is stored as."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"
    UINT8 = "uint8"
    BINARY = "binary"
    UBINARY = "ubinary"

    @classmethod
    def parse(cls, value: str | Precision) -> Precision:
        """``"int8"`` or a :class:`Precision`; anything else raises :class:`ConfigError` listing the choices."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(member.value for member in cls)
            raise ConfigError(f"unknown precision {value!r}; expected one of {choices}") from None

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the quantised array."""
        return np.dtype(_DTYPES[self.value])

    @property
    def uses_ranges(self) -> bool:
        """Whether this precision needs per-dimension ranges (int8, uint8)."""
        return self in (Precision.INT8, Precision.UINT8)

    @property
    def is_binary(self) -> bool:
        return self in (Precision.BINARY, Precision.UBINARY)

    def width(self, dim: int) -> int:
        """Columns of the quantised array for ``dim``-dimensional embeddings: D, or ceil(D / 8) packed bytes."""
        return (dim + 7) // 8 if self.is_binary else dim


_DTYPES = {"float32": "float32", "float16": "float16", "int8": "int8", "uint8": "uint8", "binary": "int8",
           "ubinary": "uint8"}


@dataclass(frozen=True, eq=False)  # numpy fields: compare .ranges instead
class Calibration:
    """Per-dimension ranges for int8 / uint8: ``minimum`` and ``maximum``, each (D,) float32.

    Attributes:
        precision: what the ranges were written for (informative; int8 and uint8 use the same ranges).
    """

    minimum: np.ndarray
    maximum: np.ndarray
    precision: str | None = None

    def __post_init__(self) -> None:
        minimum = np.asarray(self.minimum, dtype=np.float32).reshape(-1)
        maximum = np.asarray(self.maximum, dtype=np.float32).reshape(-1)
        if minimum.shape != maximum.shape or minimum.size == 0:
            raise ConfigError(f"calibration: min and max need one value per dimension, got {minimum.size} and "
                              f"{maximum.size}")
        if not (np.isfinite(minimum).all() and np.isfinite(maximum).all()):
            raise ConfigError("calibration: min and max must be finite numbers")
        if (minimum > maximum).any():
            dim = int(np.argmax(minimum > maximum))
            raise ConfigError(f"calibration: min > max in dimension {dim} ({minimum[dim]} > {maximum[dim]})")
        object.__setattr__(self, "minimum", minimum)
        object.__setattr__(self, "maximum", maximum)

    @property
    def dim(self) -> int:
        return int(self.minimum.shape[0])

    @property
    def ranges(self) -> np.ndarray:
        """(2, D) float32: row 0 the minimum, row 1 the maximum (sentence-transformers' ``ranges``)."""
        return np.vstack((self.minimum, self.maximum))

    @classmethod
    def from_embeddings(cls, embeddings: Any, precision: str | None = None) -> Calibration:
        """Min and max per dimension of (M, D) float embeddings, M >= 2.

        Raises:
            InputError: fewer than two rows, or not a float matrix.
        """
        embeddings = _float_matrix(embeddings, "calibration embeddings")
        if embeddings.shape[0] < 2:
            raise InputError(
                f"calibration embeddings: int8/uint8 ranges need at least 2 embeddings, got {embeddings.shape[0]}; "
                "give ranges or calibration embeddings from a representative set"
            )
        return cls(embeddings.min(axis=0), embeddings.max(axis=0), precision)

    @classmethod
    def unit(cls, dim: int) -> Calibration:
        """The fixed range [-1, 1] in every dimension: any component of a unit vector fits."""
        return cls(np.full(dim, -1.0, np.float32), np.full(dim, 1.0, np.float32))

    def to_dict(self) -> dict[str, Any]:
        """``{"precision", "min": [...], "max": [...]}`` (float32 values, exact through JSON)."""
        return {"precision": self.precision, "min": self.minimum.tolist(), "max": self.maximum.tolist()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> Calibration:
        """The inverse of :meth:`to_dict`; ``where`` names the source in errors."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object with min and max, got {type(data).__name__}")
        for key in ("min", "max"):
            values = data.get(key)
            if not isinstance(values, list) or not all(_is_number(value) for value in values):
                raise ConfigError(f"{where}: field '{key}' must be a list of numbers")
        precision = data.get("precision")
        if precision is not None and not isinstance(precision, str):
            raise ConfigError(f"{where}: field 'precision' must be a string, got {precision!r}")
        try:
            return cls(np.asarray(data["min"]), np.asarray(data["max"]), precision)
        except ConfigError as error:
            raise ConfigError(f"{where}: {str(error).removeprefix('calibration: ')}") from None

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (arrays ``min``, ``max``, ``precision``) or ``.json`` (:meth:`to_dict`) atomically."""
        path = Path(path)
        if path.suffix == ".json":
            text = json.dumps(self.to_dict()).encode()
            return write_atomically(path, lambda handle: handle.write(text))
        if path.suffix != ".npz":
            raise ConfigError(f"{path}: a calibration file ends with .npz or .json")
        arrays = {"min": self.minimum, "max": self.maximum, "precision": np.array(self.precision or "")}
        return write_atomically(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Ranges from a file: ``.npz`` / ``.json`` written by :meth:`save`, or a ``.npy`` of (M, D) calibration
        embeddings (M >= 2) whose min and max per dimension are taken.

        Raises:
            ConfigError: the file is missing, unreadable or malformed, naming it and the field.
        """
        path = Path(path)
        try:
            if path.suffix == ".npy":
                return cls.from_embeddings(np.load(path, allow_pickle=False))
            if path.suffix == ".json":
                return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
            if path.suffix == ".npz":
                return _load_npz(path)
        except FileNotFoundError:
            raise ConfigError(f"{path}: calibration file not found") from None
        except ConfigError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile) as error:  # InputError is a ValueError too
            message = str(error).removeprefix("calibration embeddings: ")
            raise ConfigError(f"{path}: not a usable calibration file ({message})") from None
        raise ConfigError(f"{path}: a calibration file ends with .npz or .json (ranges) or .npy (embeddings)")


def _load_npz(path: Path) -> Calibration:
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in ("min", "max") if key not in data.files]
        if missing:
            raise ConfigError(f"{path}: no array named {' or '.join(missing)} (expected min and max)")
        precision = str(data["precision"]) if "precision" in data.files else ""
        minimum, maximum = data["min"], data["max"]
    for key, values in (("min", minimum), ("max", maximum)):
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.floating):
            raise ConfigError(f"{path}: '{key}' must be a 1-D float array, got {values.dtype} {values.shape}")
    try:
        return Calibration(minimum, maximum, precision or None)
    except ConfigError as error:
        raise ConfigError(f"{path}: {str(error).removeprefix('calibration: ')}") from None


def calibration_path(output: str | Path) -> Path:
    """Where the ranges of ``OUT.npy`` / ``OUT.parquet`` go: ``OUT.calibration.npz``."""
    output = Path(output)
    return output.with_name(output.stem + CALIBRATION_SUFFIX)


def quantize_embeddings(
    embeddings: Any,
    precision: str | Precision,
    ranges: Any = None,
    calibration_embeddings: Any = None,
) -> np.ndarray:
    """Quantise (N, D) float embeddings to ``precision`` (see the module docstring for the definitions).

    Args:
        embeddings: (N, D) float array (numpy, or anything ``np.asarray`` takes).
        precision: float32, float16, int8, uint8, binary or ubinary.
        ranges: int8 / uint8 only: (2, D) minimum and maximum per dimension (e.g. ``Calibration.ranges``).
        calibration_embeddings: int8 / uint8 only, without ``ranges``: (M, D) embeddings to take the ranges from
            (default: ``embeddings`` themselves, which needs N >= 2).

    Returns:
        float32 / float16 (N, D); int8 / uint8 (N, D); binary int8 / ubinary uint8 (N, ceil(D / 8)).

    Raises:
        InputError: not a float matrix, ranges of the wrong shape, or ranges to compute from one embedding.
        ConfigError: an unknown precision.
    """
    precision = Precision.parse(precision)
    embeddings = _float_matrix(embeddings, "embeddings")
    count, dim = embeddings.shape
    if count == 0:
        return np.zeros((0, precision.width(dim)), dtype=precision.dtype)
    if precision in (Precision.FLOAT32, Precision.FLOAT16):
        return embeddings.astype(precision.dtype)
    if precision.is_binary:
        bits = np.packbits(embeddings > 0, axis=-1)
        return bits if precision is Precision.UBINARY else (bits.astype(np.int16) - SIGNED_OFFSET).astype(np.int8)
    if ranges is None:
        source = embeddings if calibration_embeddings is None else calibration_embeddings
        ranges = Calibration.from_embeddings(source).ranges
    buckets = _buckets(embeddings, _check_ranges(ranges, dim))
    return buckets.astype(np.uint8) if precision is Precision.UINT8 else (buckets - SIGNED_OFFSET).astype(np.int8)


def _buckets(embeddings: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Bucket index 0..255 of every value, as floats: floor((x - min) / step), clipped."""
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / STEPS
    steps = np.where(steps == 0, 1, steps)
    return np.clip(np.floor((embeddings - starts) / steps), 0, STEPS)


def quantize_rows(
    embeddings: np.ndarray, ok: np.ndarray, precision: str | Precision, calibration: Calibration | None = None
) -> tuple[np.ndarray, Calibration | None]:
    """Quantise the rows marked ``ok``; the other rows stay all zero (binary / ubinary: all bits zero).

    Args:
        embeddings: (N, D) float32; rows not ``ok`` are ignored (not used for the ranges either).
        ok: (N,) bool.
        precision: the target precision.
        calibration: int8 / uint8 ranges; default: from the ``ok`` rows (at least 2 of them).

    Returns:
        The quantised (N, width) array, and the calibration used (``None`` for the other precisions, or when no row
        was ``ok``).
    """
    precision = Precision.parse(precision)
    embeddings = _float_matrix(embeddings, "embeddings")
    ok = np.asarray(ok, dtype=bool)
    out = np.zeros((embeddings.shape[0], precision.width(embeddings.shape[1])), dtype=precision.dtype)
    if precision is Precision.BINARY:
        out[:] = -SIGNED_OFFSET  # the byte 0b00000000 as binary
    kept = embeddings[ok]
    if not precision.uses_ranges:
        calibration = None
    elif calibration is not None and calibration.dim != embeddings.shape[1]:
        raise ConfigError(f"calibration has {calibration.dim} dimensions, the embeddings {embeddings.shape[1]}")
    elif calibration is None and len(kept):
        calibration = Calibration.from_embeddings(kept, precision.value)
    if calibration is not None:
        calibration = Calibration(calibration.minimum, calibration.maximum, precision.value)
    if len(kept):
        out[ok] = quantize_embeddings(kept, precision, ranges=calibration.ranges if calibration else None)
    return out, calibration


def _float_matrix(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array (N, D), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{name}: expected float values, got {array.dtype} (already quantised?)")
    return array


def _check_ranges(ranges: Any, dim: int) -> np.ndarray:
    ranges = np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, dim):
        raise InputError(f"ranges: expected shape (2, {dim}) (min and max per dimension), got {ranges.shape}")
    return ranges


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


