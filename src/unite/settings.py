"""Encoding settings: every number of the pixel pipeline and the prompt, written once.

The defaults are those of the released UNITE checkpoints (docs/reference.md sections 3 to 8). A checkpoint folder
saved by :meth:`unite.UniteEncoder.save_pretrained` records them in ``unite_config.json``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unite.errors import ConfigError

__all__ = [
    "IMAGE_FACTOR",
    "EncodingSettings",
    "PositionScheme",
    "Truncation",
]

#: One visual token covers a 28x28 pixel area: patch 14, spatial merge 2.
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
IMAGE_FACTOR = PATCH_SIZE * MERGE_SIZE
#: Videos are sampled in pairs of frames (temporal patch 2).
FRAME_FACTOR = TEMPORAL_PATCH_SIZE
#: Aspect ratios above this are refused by the backbone's resize rule.
MAX_ASPECT_RATIO = 200

#: Stage 1 (qwen-vl-utils loader) bounds for still images and frame lists.
LOADER_IMAGE_MIN_PIXELS = 4 * 28 * 28
LOADER_IMAGE_MAX_PIXELS = 16384 * 28 * 28
#: Stage 1 lower bound for frames read from a video file.
LOADER_VIDEO_MIN_PIXELS = 128 * 28 * 28

#: Stage 2 (processor) bounds: 256 to 1280 visual tokens, for images and video frames alike.
DEFAULT_IMAGE_MIN_PIXELS = 256 * 28 * 28
DEFAULT_IMAGE_MAX_PIXELS = 1280 * 28 * 28
#: CLIP normalisation of the Qwen2-VL processor.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

#: Video sampling of the quick start.
DEFAULT_VIDEO_FPS = 1.0
DEFAULT_VIDEO_MIN_FRAMES = 4
DEFAULT_VIDEO_MAX_FRAMES = 32
DEFAULT_VIDEO_MAX_PIXELS = 360 * 420

#: Context length of the Qwen2-VL backbone.
DEFAULT_MAX_LENGTH = 32768
#: Refuse images whose header announces more pixels than this before decoding them (decompression bombs).
DEFAULT_MAX_DECODED_PIXELS = 16384 * 16384 // 2

SYSTEM_PROMPT = "You are a helpful assistant."
PROMPT_TEMPLATE = (
    "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{content}\n"
    "Summary above {modalities} in one word:<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
)


class PositionScheme(str, enum.Enum):
    """How the decoder numbers its positions.

    ``sequential``: plain 1-D positions 0..L-1 for every token, vision tokens included (the released models).
    ``mrope``: the stock Qwen2-VL 3-D multimodal rotary positions.
    """

    SEQUENTIAL = "sequential"
    MROPE = "mrope"


class Truncation(str, enum.Enum):
    """What to do with an item longer than ``max_length`` tokens.

    ``refuse``: raise :class:`unite.errors.InputError`. ``left``: drop tokens from the left as training did,
    refusing instead when the cut would fall on a vision block.
    """

    REFUSE = "refuse"
    LEFT = "left"


@dataclass(frozen=True)
class EncodingSettings:
    """Everything that decides how an item becomes tokens and pixels.

    Attributes:
        image_min_pixels: lower pixel bound of the processor resize (stage 2), for images and video frames.
        image_max_pixels: upper pixel bound of the processor resize (stage 2).
        video_fps: frames per second sampled from a video file, unless ``video_frames`` is set.
        video_min_frames: lower bound on the sampled frame count at a rate.
        video_max_frames: upper bound on the sampled frame count at a rate.
        video_frames: a fixed frame count (rounded to even) instead of a rate; ``None`` samples at ``video_fps``.
        video_max_pixels: upper pixel bound of the loader resize of video frames (stage 1).
        position_scheme: decoder positions, see :class:`PositionScheme`.
        max_length: longest token sequence accepted.
        truncation: what happens above ``max_length``, see :class:`Truncation`.
        max_decoded_pixels: images or frames whose header announces more pixels are refused before decoding.
        system_prompt: the system turn of the prompt template.
        allow_remote: whether http(s) URLs may be read.
        remote_timeout: seconds before a remote read gives up.
    """

    image_min_pixels: int = DEFAULT_IMAGE_MIN_PIXELS
    image_max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS
    video_fps: float = DEFAULT_VIDEO_FPS
    video_min_frames: int = DEFAULT_VIDEO_MIN_FRAMES
    video_max_frames: int = DEFAULT_VIDEO_MAX_FRAMES
    video_frames: int | None = None
    video_max_pixels: int = DEFAULT_VIDEO_MAX_PIXELS
    position_scheme: PositionScheme = PositionScheme.SEQUENTIAL
    max_length: int = DEFAULT_MAX_LENGTH
    truncation: Truncation = Truncation.REFUSE
    max_decoded_pixels: int = DEFAULT_MAX_DECODED_PIXELS
    system_prompt: str = SYSTEM_PROMPT
    allow_remote: bool = False
    remote_timeout: float = 30.0
    pooling: str = field(default="last_token", init=False)
    normalize: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "position_scheme", parse_enum(PositionScheme, self.position_scheme, "position_scheme"))
        object.__setattr__(self, "truncation", parse_enum(Truncation, self.truncation, "truncation"))
        positive = {
            "image_min_pixels": self.image_min_pixels,
            "image_max_pixels": self.image_max_pixels,
            "video_fps": self.video_fps,
            "video_min_frames": self.video_min_frames,
            "video_max_frames": self.video_max_frames,
            "video_max_pixels": self.video_max_pixels,
            "max_length": self.max_length,
            "max_decoded_pixels": self.max_decoded_pixels,
            "remote_timeout": self.remote_timeout,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        if self.image_min_pixels > self.image_max_pixels:
            raise ConfigError(
                f"image_min_pixels ({self.image_min_pixels}) is larger than image_max_pixels ({self.image_max_pixels})"
            )
        if self.video_min_frames > self.video_max_frames:
            raise ConfigError(
                f"video_min_frames ({self.video_min_frames}) is larger than video_max_frames ({self.video_max_frames})"
            )
        if self.video_frames is not None and self.video_frames < 1:
            raise ConfigError(
                f"video_frames must be at least 1 (or unset to sample at a rate), got {self.video_frames}"
            )

    def replace(self, **changes: Any) -> EncodingSettings:
        """Return a copy with some fields changed; ``None`` values leave a field as it is."""
        changes = {key: value for key, value in changes.items() if value is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self) if f.init}
        if unknown:
            raise ConfigError(f"unknown encoding setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, with the prompt template and pooling spelt out."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["position_scheme"] = self.position_scheme.value
        data["truncation"] = self.truncation.value
        data["prompt_template"] = PROMPT_TEMPLATE
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncodingSettings:
        """Build settings from :meth:`to_dict` output; derived keys are ignored, unknown keys refused."""
        derived = {"prompt_template", "pooling", "normalize"}
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(data) - known - derived
        if unknown:
            raise ConfigError(f"unknown encoding setting(s): {', '.join(sorted(unknown))}")
        return cls(**{key: value for key, value in data.items() if key in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def parse_enum(kind: type[enum.Enum], value: Any, name: str) -> Any:
    """``kind(value)``, or a :class:`ConfigError` naming the setting and the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}") from None
