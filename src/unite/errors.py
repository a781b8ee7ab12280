"""Typed errors raised by unite.

Every error message says what was expected and what arrived, and names the item, file, line or field involved,
so the command line can print it as one line without a traceback.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "InputError", "MediaError", "UniteError"]


class UniteError(Exception):
    """Base class of every error unite raises on purpose."""


class InputError(UniteError, ValueError):
    """An item is malformed: bad JSON, unknown keys, placeholder mismatch, empty item, too long, ..."""


class MediaError(UniteError):
    """An image or video cannot be used: missing, unreadable, corrupt, unsupported, too large, bad aspect ratio."""


class CheckpointError(UniteError):
    """A checkpoint cannot be loaded faithfully: missing or unexpected tensors, unknown layout, bad config."""


class ConfigError(UniteError, ValueError):
    """Settings are invalid or conflict with each other."""
