"""Options shared by commands that load a model."""

from __future__ import annotations

import argparse
from typing import Any

from unite.settings import PositionScheme, Truncation

__all__ = ["add_model_options", "encoder_from_args", "setting_overrides"]


def add_model_options(
    parser: argparse.ArgumentParser,
    model_required: bool = True,
    model_help: str = "checkpoint folder or Hugging Face id (owner/name)",
) -> None:
    """Model, media and text options (``--model`` optional where a command can find the model elsewhere)."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=model_required, help=model_help)
    model.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    model.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, else mps, else cpu")
    model.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on GPU, float32 on CPU"
    )
    model.add_argument(
        "--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"], help="default: sdpa"
    )
    model.add_argument(
        "--no-packing",
        dest="packing",
        action="store_false",
        help="pad each batch to its longest item instead of packing the items into one sequence (same embeddings "
        "to float noise; packing skips the padding's work)",
    )
    media = parser.add_argument_group("media (default: the checkpoint's recorded settings)")
    media.add_argument("--video-fps", type=float, help="frames per second sampled from videos (default 1.0)")
    media.add_argument("--video-min-frames", type=int, help="fewest frames sampled at a rate (default 4)")
    media.add_argument("--video-max-frames", type=int, help="most frames sampled at a rate (default 32)")
    media.add_argument("--video-frames", type=int, help="sample this fixed frame count instead of a rate")
    media.add_argument(
        "--video-max-pixels", type=int, help="pixel bound of video frames, loader stage (default 360*420)"
    )
    media.add_argument("--image-min-pixels", type=int, help="lower pixel bound, processor stage (default 256*28*28)")
    media.add_argument("--image-max-pixels", type=int, help="upper pixel bound, processor stage (default 1280*28*28)")
    media.add_argument("--allow-remote", action="store_true", default=None, help="allow http(s) media URLs")
    text = parser.add_argument_group("text")
    text.add_argument("--max-length", type=int, help="longest token sequence accepted (default 32768)")
    text.add_argument(
        "--truncation", choices=[t.value for t in Truncation], help="above --max-length: refuse (default) or cut left"
    )
    text.add_argument(
        "--position-scheme",
        choices=[p.value for p in PositionScheme],
        help="decoder positions: sequential (released models) or mrope (stock Qwen2-VL)",
    )


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "video_fps",
        "video_min_frames",
        "video_max_frames",
        "video_frames",
        "video_max_pixels",
        "image_min_pixels",
        "image_max_pixels",
        "allow_remote",
        "max_length",
        "truncation",
        "position_scheme",
    )
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def encoder_from_args(args: argparse.Namespace, settings: Any = None) -> Any:
    """The encoder ``--model`` and the model options name; ``settings`` replace the checkpoint's own (the flags
    still override them)."""
    from unite.models.encoder import UniteEncoder

    return UniteEncoder.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        revision=args.revision,
        attn_implementation=args.attn_implementation,
        packing=getattr(args, "packing", True),
        settings=settings,
        **setting_overrides(args),
    )
