"""What the network is: loading, forward, pooling, and the encoder."""

from unite.models.encoder import EncodeResult, UniteEncoder
from unite.models.modeling import UniteQwen2VL

__all__ = ["EncodeResult", "UniteEncoder", "UniteQwen2VL"]
