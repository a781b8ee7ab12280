"""Images and videos to pixel patches, reproducing the two-stage pipeline of the released models.

Stage 1 is what the qwen-vl-utils loader did (open, convert to RGB, smart resize, resize); stage 2 is what the
transformers 4.47.1 Qwen2-VL processor did (smart resize again with the UNITE bounds, PIL bicubic, rescale,
CLIP normalisation, 14x14 patches with a temporal patch of 2). Both stages are reproduced here on purpose
(docs/reference.md sections 6 and 7): current transformers ships a different video processor with other defaults, and a
single resize gives the same sizes but different pixels.
"""

from __future__ import annotations

import io
import math
import stat
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from unite.errors import MediaError
from unite.settings import (
    FRAME_FACTOR,
    IMAGE_FACTOR,
    IMAGE_MEAN,
    IMAGE_STD,
    LOADER_IMAGE_MAX_PIXELS,
    LOADER_IMAGE_MIN_PIXELS,
    LOADER_VIDEO_MIN_PIXELS,
    MAX_ASPECT_RATIO,
    MERGE_SIZE,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    EncodingSettings,
)
from unite.types import VideoClip

__all__ = [
    "VisualInput",
    "clip_indices",
    "load_image",
    "load_video",
    "patchify",
    "probe_image",
    "probe_video",
    "sample_indices",
    "smart_resize",
    "video_frame_count",
    "visual_token_count",
]

#: The largest remote file read when remote media are allowed.
MAX_REMOTE_BYTES = 512 * 2**20


@dataclass
class VisualInput:
    """One image or video ready for the vision tower.

    Attributes:
        pixel_values: float32 array (grid_t * grid_h * grid_w, 3 * 2 * 14 * 14) of flattened patches.
        grid_thw: (grid_t, grid_h, grid_w) in patches; visual tokens = grid_t * grid_h * grid_w / 4.
    """

    pixel_values: np.ndarray
    grid_thw: tuple[int, int, int]

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid_thw
        return t * h * w // (MERGE_SIZE * MERGE_SIZE)


# --------------------------------------------------------------------------------------------------- resizing


def smart_resize(
    height: int, width: int, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR
) -> tuple[int, int]:
    """The backbone's resize rule: sides in multiples of ``factor``, area within [min_pixels, max_pixels].

    Returns:
        (height, width) after rounding, as docs/reference.md section 6 defines it.
    """
    if height <= 0 or width <= 0:
        raise MediaError(f"image has an empty side ({height}x{width})")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise MediaError(
            f"aspect ratio {max(height, width) / min(height, width):.1f} of a {height}x{width} image is above "
            f"the backbone's limit of {MAX_ASPECT_RATIO}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def patchify(frames: Sequence[np.ndarray | Image.Image], min_pixels: int, max_pixels: int) -> VisualInput:
    """Stage 2: the 4.47.1 processor on RGB frames of one image (1 frame) or video (even count).

    Every frame (uint8 (H, W, 3) or an RGB PIL image) is resized to the size the first frame's smart resize
    gives, with PIL bicubic, then rescaled by 1/255, normalised with the CLIP mean and std and cut into patches.
    The rescale and normalisation go through a per-channel table of the 256 values (:data:`NORMALISATION_TABLE`),
    each entry computed with the processor's own arithmetic, so the result is bit-identical to it; an image's
    two identical frames and the patch order are made by one copy of the normalised frames.
    """
    height, width = _frame_size(frames[0])
    new_h, new_w = smart_resize(height, width, min_pixels, max_pixels)
    count = len(frames)
    if count > 1 and count % TEMPORAL_PATCH_SIZE:
        raise MediaError(f"a video needs an even number of frames, got {count}")
    normed = np.empty((count, new_h, new_w, 3), dtype=np.float32)
    for index, frame in enumerate(frames):
        _normalise(_resized_array(frame, new_h, new_w), out=normed[index])
    if count == 1:  # an image is a pair of identical frames: repeated by the copy below, not before it
        normed = np.broadcast_to(normed, (TEMPORAL_PATCH_SIZE, new_h, new_w, 3))
    grid_t = normed.shape[0] // TEMPORAL_PATCH_SIZE
    grid_h, grid_w = new_h // PATCH_SIZE, new_w // PATCH_SIZE
    patches = normed.reshape(
        grid_t,
        TEMPORAL_PATCH_SIZE,
        grid_h // MERGE_SIZE,
        MERGE_SIZE,
        PATCH_SIZE,
        grid_w // MERGE_SIZE,
        MERGE_SIZE,
        PATCH_SIZE,
        3,
    )
    patches = patches.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)  # (t, h/2, w/2, 2, 2, channel, 2, 14, 14)
    flat = np.ascontiguousarray(patches).reshape(grid_t * grid_h * grid_w, 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE**2)
    return VisualInput(flat, (grid_t, grid_h, grid_w))


def _normalisation_table() -> np.ndarray:
    """(3, 256) float32: channel c of value v as the processor computes it, float32(float64(v) * (1/255)) in
    float64 then cast, minus the channel's mean, over its std, in float32."""
    scaled = (np.arange(256, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(IMAGE_MEAN, dtype=np.float32)[:, None]
    std = np.asarray(IMAGE_STD, dtype=np.float32)[:, None]
    table = (scaled[None, :] - mean) / std
    table.setflags(write=False)
    return table


#: Rescaled and normalised value of each uint8 value, per channel: (3, 256) float32.
NORMALISATION_TABLE = _normalisation_table()


def _normalise(frame: np.ndarray, out: np.ndarray) -> None:
    """Write the normalised values of uint8 ``frame`` (H, W, 3) into float32 ``out`` (H, W, 3)."""
    for channel in range(3):
        np.take(NORMALISATION_TABLE[channel], frame[..., channel], out=out[..., channel], mode="clip")


def _frame_size(frame: np.ndarray | Image.Image) -> tuple[int, int]:
    if isinstance(frame, Image.Image):
        return frame.height, frame.width
    return int(frame.shape[0]), int(frame.shape[1])


def _resized_array(frame: np.ndarray | Image.Image, height: int, width: int) -> np.ndarray:
    """uint8 (height, width, 3) of ``frame``, resized with PIL bicubic when its size differs (no copy when it
    is an array of that size already)."""
    if isinstance(frame, np.ndarray):
        if frame.shape[:2] == (height, width):
            return frame
        frame = Image.fromarray(frame)
    if frame.size != (width, height):
        frame = frame.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(frame)


# ----------------------------------------------------------------------------------------------------- images


def probe_image(source: Any, settings: EncodingSettings) -> tuple[int, int]:
    """(height, width) of an image source, reading only its header."""
    if isinstance(source, Image.Image):
        return source.height, source.width
    if isinstance(source, np.ndarray):
        _check_array(source, ndim=(2, 3))
        return int(source.shape[0]), int(source.shape[1])
    with _open_pil(source, settings) as image:
        return image.height, image.width


def load_image(source: Any, settings: EncodingSettings) -> VisualInput:
    """Stage 1 then stage 2 for a still image."""
    image = _stage1_image(source, settings, LOADER_IMAGE_MIN_PIXELS, LOADER_IMAGE_MAX_PIXELS)
    return patchify([image], settings.image_min_pixels, settings.image_max_pixels)


def _stage1_image(source: Any, settings: EncodingSettings, min_pixels: int, max_pixels: int) -> Image.Image:
    """Open, convert to RGB, smart resize within [min_pixels, max_pixels] with PIL bicubic; an RGB image, handed
    to stage 2 as it is."""
    image = _to_rgb_pil(source, settings)
    try:
        height, width = smart_resize(image.height, image.width, min_pixels, max_pixels)
    except MediaError as error:
        raise _named(source, error) from None
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


def _to_rgb_pil(source: Any, settings: EncodingSettings) -> Image.Image:
    """The source as an RGB image; one already RGB is not copied (nothing downstream writes to it)."""
    if isinstance(source, Image.Image):
        _check_pixels(source.width * source.height, settings, "image")
        return source if source.mode == "RGB" else source.convert("RGB")
    if isinstance(source, np.ndarray):
        _check_array(source, ndim=(2, 3))
        if source.ndim == 3 and source.shape[2] not in (1, 3, 4):
            raise MediaError(f"an image array needs 1, 3 or 4 channels last, got shape {source.shape}")
        array = source[:, :, 0] if source.ndim == 3 and source.shape[2] == 1 else source
        image = Image.fromarray(array)
        return image if image.mode == "RGB" else image.convert("RGB")
    with _open_pil(source, settings) as image:  # leaving the block closes the file, not the decoded image
        try:
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:
            raise MediaError(f"{_name(source)}: corrupt or truncated image ({error})") from None


def _open_pil(source: Any, settings: EncodingSettings) -> Image.Image:
    data = _read_source(source, settings)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(data)
    except FileNotFoundError:
        raise MediaError(f"{_name(source)}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise MediaError(f"{_name(source)}: refused as a decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise MediaError(f"{_name(source)}: unsupported or corrupt image (not a format Pillow can read)") from None
    except (IsADirectoryError, PermissionError) as error:
        raise MediaError(f"{_name(source)}: cannot read ({error.strerror})") from None
    except OSError as error:
        raise MediaError(f"{_name(source)}: cannot read image ({error})") from None
    _check_pixels(image.width * image.height, settings, _name(source), image)
    return image


def _check_pixels(pixels: int, settings: EncodingSettings, name: str, image: Image.Image | None = None) -> None:
    if pixels > settings.max_decoded_pixels:
        if image is not None:
            image.close()
        raise MediaError(
            f"{name}: {pixels} pixels is more than max_decoded_pixels={settings.max_decoded_pixels}; "
            "refused before decoding (decompression bomb guard)"
        )


def _check_array(array: np.ndarray, ndim: tuple[int, ...]) -> None:
    if array.dtype != np.uint8:
        raise MediaError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim not in ndim:
        raise MediaError(f"expected an array with {' or '.join(map(str, ndim))} dimensions, got shape {array.shape}")


def _name(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else type(source).__name__


def _named(source: Any, error: MediaError) -> MediaError:
    """``error`` with the file it is about in front, when ``source`` is a path."""
    return MediaError(f"{source}: {error}") if isinstance(source, (str, Path)) else error


def _read_source(source: Any, settings: EncodingSettings) -> Any:
    """A local path as a string, or the bytes of a remote file when remote reads are allowed."""
    if not isinstance(source, (str, Path)):
        raise MediaError(f"cannot read media from a {type(source).__name__}")
    text = str(source)
    if text.startswith(("http://", "https://")):
        if not settings.allow_remote:
            raise MediaError(f"{text}: remote URLs are refused; allow them with allow_remote=True (--allow-remote)")
        return io.BytesIO(_fetch(text, settings.remote_timeout))
    if "://" in text:
        raise MediaError(f"{text}: unsupported URL scheme")
    _check_regular_file(text)
    return text


def _check_regular_file(path: str) -> None:
    """Refuse a path that is not a regular file (a folder, a pipe, a device) before opening it: opening a pipe
    waits for a writer for ever, and a device may never end."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise MediaError(f"{path}: file not found") from None
    except OSError as error:
        raise MediaError(f"{path}: cannot read ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a device or socket"
        raise MediaError(f"{path}: is {kind}, not a media file")


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            data = response.read(MAX_REMOTE_BYTES + 1)
    except OSError as error:
        raise MediaError(f"{url}: cannot fetch ({error})") from None
    if len(data) > MAX_REMOTE_BYTES:
        raise MediaError(f"{url}: larger than {MAX_REMOTE_BYTES} bytes")
    return data


# ----------------------------------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frame count, average frame rate, frame size."""

    frames: int
    fps: float
    height: int
    width: int


def video_frame_count(info: VideoInfo, settings: EncodingSettings) -> int:
    """How many frames to sample from a video file: n of docs/reference.md section 7, even and at least 2.

    With a fixed count, n is that count rounded to even; with a rate, n = T / video_fps * fps clamped to
    [min_frames rounded up to even, max_frames rounded down to even], then rounded to even. n may exceed the
    file's T frames: :func:`sample_indices` then repeats the last frame.
    """
    if settings.video_frames is not None:
        count = round(settings.video_frames / FRAME_FACTOR) * FRAME_FACTOR
    else:
        min_frames = math.ceil(settings.video_min_frames / FRAME_FACTOR) * FRAME_FACTOR
        max_frames = math.floor(settings.video_max_frames / FRAME_FACTOR) * FRAME_FACTOR
        count = info.frames / info.fps * settings.video_fps
        count = min(max(count, min_frames), max_frames)
        count = round(count / FRAME_FACTOR) * FRAME_FACTOR
    return max(count, FRAME_FACTOR)


def sample_indices(total: int, count: int) -> list[int]:
    """The ``count`` frame indices taken from a video (or clip) of ``total`` frames.

    When ``count <= total``, ``round(linspace(0, total - 1, count))`` (round half to even, as torch does), as the
    reference pipeline takes them. When the video is shorter than the count (where the reference refused), every
    frame in order, the last one repeated up to ``count``: ``sample_indices(3, 4) == [0, 1, 2, 2]``.
    """
    if total < 1:
        raise MediaError(f"cannot sample frames from a video of {total} frames")
    if count > total:
        return list(range(total)) + [total - 1] * (count - total)
    return [int(i) for i in torch.linspace(0, total - 1, count).round().long().tolist()]


def clip_indices(clip: VideoClip, info: VideoInfo, settings: EncodingSettings) -> list[int]:
    """Frame indices of a clip: sampled like a whole file's (rate or fixed count), within the clip's frames.

    A clip holding fewer frames than the count takes them all and repeats its last, as a short file does.
    """
    first = min(int(round(clip.start * info.fps)), info.frames - 1)
    last = min(max(int(round(clip.end * info.fps)) - 1, first + 1), info.frames - 1)
    span = last - first + 1
    count = video_frame_count(VideoInfo(span, info.fps, info.height, info.width), settings)
    return [first + index for index in sample_indices(span, count)]


def probe_video(source: Any, settings: EncodingSettings) -> tuple[int, int, int]:
    """(frames to sample, height, width) of a video source without decoding it."""
    if isinstance(source, VideoClip):
        info = _video_info(source.path, settings)
        return len(clip_indices(source, info, settings)), info.height, info.width
    if _is_frame_list(source):
        frames = _frame_list(source)
        height, width = probe_image(frames[0], settings)
        return len(frames) + len(frames) % FRAME_FACTOR, height, width
    info = _video_info(source, settings)
    return video_frame_count(info, settings), info.height, info.width


def load_video(source: Any, settings: EncodingSettings) -> VisualInput:
    """Stage 1 then stage 2 for a video file, a :class:`VideoClip` of one, or a list of frames."""
    if _is_frame_list(source):
        frames = [
            _stage1_image(frame, settings, LOADER_IMAGE_MIN_PIXELS, settings.video_max_pixels)
            for frame in _frame_list(source)
        ]
        if len(frames) % FRAME_FACTOR:
            frames.append(frames[-1])
    else:
        path = source.path if isinstance(source, VideoClip) else source
        container = _open_container(path, settings)
        with container:
            info = _video_info(path, settings, container)
            if isinstance(source, VideoClip):
                indices = clip_indices(source, info, settings)
            else:
                indices = sample_indices(info.frames, video_frame_count(info, settings))
            decoded = _decode_from(container, path, indices)
        try:
            frames = list(_stage1_video_resize(decoded, settings.video_max_pixels))
        except MediaError as error:
            raise _named(path, error) from None
    return patchify(frames, settings.image_min_pixels, settings.image_max_pixels)


def _stage1_video_resize(frames: np.ndarray, max_pixels: int) -> np.ndarray:
    """Bicubic, antialiased resize of uint8 frames (T, H, W, 3), rounded back to uint8 (torchvision semantics)."""
    height, width = frames.shape[1:3]
    new_h, new_w = smart_resize(height, width, LOADER_VIDEO_MIN_PIXELS, max_pixels)
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    resized = F.interpolate(tensor, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    resized = resized.clamp(0, 255).round().to(torch.uint8)
    return resized.permute(0, 2, 3, 1).contiguous().numpy()


def _is_frame_list(source: Any) -> bool:
    return isinstance(source, (list, tuple)) or (isinstance(source, np.ndarray) and source.ndim == 4)


def _frame_list(source: Any) -> list[Any]:
    frames = list(source)
    if not frames:
        raise MediaError("a video given as frames needs at least one frame")
    return frames


def _open_container(source: Any, settings: EncodingSettings) -> Any:
    try:
        import av
    except ImportError:
        raise MediaError("reading video files needs PyAV: pip install 'unite-embed[video]'") from None
    data = _read_source(source, settings)
    try:
        return av.open(data)
    except FileNotFoundError:
        raise MediaError(f"{_name(source)}: file not found") from None
    except (IsADirectoryError, PermissionError) as error:
        raise MediaError(f"{_name(source)}: cannot read ({error.strerror})") from None
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise MediaError(f"{_name(source)}: unsupported or corrupt video ({error})") from None


def _video_info(source: Any, settings: EncodingSettings, container: Any = None) -> VideoInfo:
    """What the container of ``source`` says, checked against ``settings``: read from ``container`` (left where
    it is: decoding seeks first), or from one opened here. Opening is what costs: FFmpeg decodes the first
    frames to learn the stream's parameters (17 ms for a 480x360 clip of 0.6 MB, 90 ms for a 720p one of 7.8 MB,
    measured here), so :func:`load_video` reads the information and the frames through one container."""
    if container is None:
        with _open_container(source, settings) as opened:
            info = _read_video_info(opened, source)
    else:
        info = _read_video_info(container, source)
    if not info.fps or info.fps <= 0:
        raise MediaError(f"{_name(source)}: the container gives no frame rate")
    if info.frames <= 0 or info.height <= 0 or info.width <= 0:
        raise MediaError(f"{_name(source)}: empty video ({info.frames} frames of {info.width}x{info.height})")
    _check_pixels(info.height * info.width, settings, _name(source))
    return info


def _read_video_info(container: Any, source: Any) -> VideoInfo:
    """The container's frame count, average rate and frame size, unchecked (a rate may be 0)."""
    if not container.streams.video:
        raise MediaError(f"{_name(source)}: no video stream")
    if _is_still_image(container.format.name):
        raise MediaError(
            f"{_name(source)}: a still image ({container.format.name}), not a video; give it as an image, "
            "or as a list of frames"
        )
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    height, width = stream.codec_context.height, stream.codec_context.width
    frames = stream.frames or _count_packets(container, stream, source)
    return VideoInfo(int(frames), float(rate) if rate else 0.0, int(height), int(width))


def _is_still_image(format_name: str) -> bool:
    """Whether FFmpeg read the file with one of its still-image demuxers (``png_pipe``, ``image2``, ...)."""
    return format_name.endswith("_pipe") or format_name in ("image2", "image2pipe")


def _count_packets(container: Any, stream: Any, source: Any) -> int:
    import av

    try:
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as error:
        raise MediaError(f"{_name(source)}: corrupt video ({error})") from None


def _decode_frames(source: Any, settings: EncodingSettings, indices: list[int]) -> np.ndarray:
    """Decode the frames at ``indices`` (uint8, (n, H, W, 3)) of a video file: :func:`_decode_from` on a
    container opened here."""
    with _open_container(source, settings) as container:
        return _decode_from(container, source, indices)


def _decode_from(container: Any, source: Any, indices: list[int]) -> np.ndarray:
    """Decode the frames at ``indices`` (uint8, (n, H, W, 3)) from the open ``container`` of ``source``, seeking
    past stretches that hold none of them.

    A frame's index comes from its timestamp. The keyframes are found by demuxing (no decoding) from the start
    first, and the decoder seeks to the keyframe before a wanted frame only when that keyframe lies ahead of it.
    The decoder keeps PyAV's default threading: frame threading ("AUTO") measured slower here, in wall time and
    in CPU time, for a few frames sampled from a clip (each seek drains its frame queue).
    """
    import av

    wanted = sorted(set(indices))
    found: dict[int, np.ndarray] = {}
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate)
        time_base = float(stream.time_base) if stream.time_base else 0.0
        start = stream.start_time or 0
        container.seek(0)
        keyframes = _keyframe_indices(container, stream, start, time_base, rate)
        container.seek(0)
        frames = container.decode(stream)
        position = -1
        before = after = None  # the last frame decoded below the target, and one decoded past it
        for target in wanted:
            if target in found:
                continue
            if after is not None and position >= target:  # a timestamp gap spans this target too
                found[target] = after.to_ndarray(format="rgb24")
                continue
            keyframe = max((k for k in keyframes if k <= target), default=0)
            if keyframe > position + 1 and time_base:
                container.seek(int(start + keyframe / rate / time_base), stream=stream, backward=True)
                frames = container.decode(stream)
                before = after = None
            for frame in frames:
                position = _frame_index(frame.pts, start, time_base, rate, position)
                if position < target:
                    before = frame
                    continue
                if position > target:  # a gap in the timestamps: take the nearest frame before the target
                    found[target] = (before or frame).to_ndarray(format="rgb24")
                    after = frame
                if position in wanted:
                    found[position] = frame.to_ndarray(format="rgb24")
                before = frame
                break
    except av.error.FFmpegError as error:
        raise MediaError(f"{_name(source)}: corrupt or truncated video ({error})") from None
    missing = [index for index in wanted if index not in found]
    if missing:
        raise MediaError(
            f"{_name(source)}: truncated video, frame {missing[0]} could not be decoded ({len(missing)} of the "
            f"{len(wanted)} distinct frames sampled are missing)"
        )
    return np.stack([found[index] for index in indices])


def _keyframe_indices(container: Any, stream: Any, start: int, time_base: float, rate: float) -> list[int]:
    if not time_base:
        return [0]
    keys = [
        round((packet.pts - start) * time_base * rate)
        for packet in container.demux(stream)
        if packet.is_keyframe and packet.pts is not None
    ]
    return sorted(keys) or [0]


def _frame_index(pts: int | None, start: int, time_base: float, rate: float, position: int) -> int:
    if pts is None or not time_base:
        return position + 1
    return round((pts - start) * time_base * rate)


# ------------------------------------------------------------------------------------------------- counting


def visual_token_count(kind: str, height: int, width: int, frames: int, settings: EncodingSettings) -> int:
    """Visual tokens an image (``frames`` = 1) or video (``frames`` sampled, even) will take, from sizes alone."""
    if kind == "image":
        h1, w1 = smart_resize(height, width, LOADER_IMAGE_MIN_PIXELS, LOADER_IMAGE_MAX_PIXELS)
        frames = TEMPORAL_PATCH_SIZE
    elif kind == "frames":
        h1, w1 = smart_resize(height, width, LOADER_IMAGE_MIN_PIXELS, settings.video_max_pixels)
    else:
        h1, w1 = smart_resize(height, width, LOADER_VIDEO_MIN_PIXELS, settings.video_max_pixels)
    h2, w2 = smart_resize(h1, w1, settings.image_min_pixels, settings.image_max_pixels)
    return frames // TEMPORAL_PATCH_SIZE * (h2 // IMAGE_FACTOR) * (w2 // IMAGE_FACTOR)
