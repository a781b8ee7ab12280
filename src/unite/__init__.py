"""unite-embed: UNITE universal multimodal embeddings for text, images, videos and their mixtures."""

from unite.errors import CheckpointError, ConfigError, InputError, MediaError, UniteError
from unite.models.encoder import EncodeResult, UniteEncoder
from unite.models.modeling import UniteQwen2VL
from unite.settings import EncodingSettings, PositionScheme, Truncation
from unite.types import Item, Modality, VideoClip

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EncodeResult",
    "EncodingSettings",
    "InputError",
    "Item",
    "MediaError",
    "Modality",
    "PositionScheme",
    "Truncation",
    "UniteEncoder",
    "UniteError",
    "UniteQwen2VL",
    "VideoClip",
    "__version__",
]
