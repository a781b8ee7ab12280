"""Cross-check unite-embed against the original UNITE reference stack (pixels, prompts, token ids, embeddings).

The reference stack is what the released UNITE checkpoints were trained and served with: transformers 4.47.1
(Qwen2-VL processor and model), qwen-vl-utils 0.0.8 (the loader; UNITE pinned ``qwen-vl-utils[decord]==0.0.8``)
and UNITE's embedding forward (decoder called with ``position_ids=None``, which 4.47.1 turns into plain 0..L-1
positions in all three M-RoPE sections; last token; L2 norm). It runs in its own virtual environment; the two
sides exchange only .npy and .json files in a work folder.

Reference venv (Python 3.11; torch and torchvision are capped at 2.14.1 / 0.29.1 on the build machine)::

    python3.11 -m venv /work/refcheck/.venv
    /work/refcheck/.venv/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers==4.47.1 \
        "tokenizers<0.22" qwen-vl-utils==0.0.8 decord==0.6.0 pillow==13.0.0 numpy==2.4.6 av==18.1.0

(Pillow, numpy and PyAV pinned to the versions of the unite venv, so that only the code differs.)

Run, from the repository root::

    .venv/bin/python benchmarks/reference_crosscheck.py --side ours --workdir /tmp/crosscheck
    /work/refcheck/.venv/bin/python benchmarks/reference_crosscheck.py --side reference --workdir /tmp/crosscheck
    .venv/bin/python benchmarks/reference_crosscheck.py --compare --workdir /tmp/crosscheck

``--side ours`` must run first: it writes the synthetic media, the tiny random checkpoint (4.47.1 layout) and the
case manifest, then our pixels, prompts, token ids and embeddings. ``--side reference`` reads the manifest and
writes the reference's. ``--compare`` prints the table and writes ``report.json``.

Substitutions on the reference side (stated in the output too):

* torchvision 0.29 no longer has ``torchvision.io.read_video``. The primary video reader is decord (what
  qwen-vl-utils 0.0.8 picks when decord is installed, as UNITE's requirements install it). A second reference,
  ``tvsub``, replaces ``torchvision.io.read_video`` with a PyAV reimplementation of its semantics (decode every
  frame from the start, sort by pts, ``frame.to_rgb().to_ndarray()``, ``video_fps = float(average_rate)``).
* transformers 4.47.1 cannot read the tiny checkpoint's tokenizer_config (``TokenizersBackend``, written by
  transformers 5); the same ``tokenizer.json`` is loaded as ``Qwen2TokenizerFast(tokenizer_file=...)``.
* torch 2.14.1 instead of UNITE's torch 2.5.0 / torchvision 0.20.0 (not installable here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

IMAGE_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_BLOCK = "<|vision_start|><|video_pad|><|vision_end|>"
UNITE_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{text}\n"
    "Summary above {modalities} in one word:<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
)
MIN_PIXELS, MAX_PIXELS = 256 * 28 * 28, 1280 * 28 * 28
VIDEO_MAX_PIXELS = 360 * 420

# (name, height, width, seed, mode)
IMAGES = [
    ("rgb_37x301", 37, 301, 1, "RGB"),
    ("rgb_480x640", 480, 640, 2, "RGB"),
    ("rgb_1000x333", 1000, 333, 3, "RGB"),
    ("rgb_100x100", 100, 100, 4, "RGB"),
    ("rgb_2000x1500", 2000, 1500, 5, "RGB"),
    ("rgba_301x37", 301, 37, 6, "RGBA"),
    ("rgba_480x640", 480, 640, 7, "RGBA"),
    ("grey_333x1000", 333, 1000, 8, "L"),
    ("grey_100x100", 100, 100, 9, "L"),
    ("palette_250x190", 250, 190, 10, "P"),
    ("rgb_10x10", 10, 10, 11, "RGB"),  # below one 28x28 token
    ("rgb_20x3000", 20, 3000, 12, "RGB"),  # aspect ratio 150
]
#: Images on which skipping the loader resize changes the sizes (37x301, 2000x1500) or only the pixels (100x100).
PROBES = ("rgb_37x301", "rgb_2000x1500", "rgb_100x100")
# (name, frames, fps, height, width, seed, gop, container)
VIDEOS = [
    ("v24f_8fps_120x160", 24, 8, 120, 160, 1, 12, "mp4"),
    ("v50f_10fps_240x320", 50, 10, 240, 320, 2, 12, "mp4"),  # 5 s at fps 1 -> 5 -> round(2.5)*2 = 4 (half to even)
    ("v75f_5fps_240x320", 75, 5, 240, 320, 3, 10, "mp4"),  # 15 s -> 15 -> round(7.5)*2 = 16
    ("v90f_30fps_360x640", 90, 30, 360, 640, 4, 12, "mp4"),
    ("v300f_25fps_130x170", 300, 25, 130, 170, 5, 25, "mp4"),  # 12 s -> 12 frames
    ("v40f_8fps_120x160_mkv", 40, 8, 120, 160, 6, 12, "mkv"),  # Matroska: no frame count in the header
    ("v100f_29.97fps_180x240", 100, Fraction(30000, 1001), 180, 240, 7, 15, "mp4"),  # NTSC rate
]
# (name, frame count, height, width)
FRAME_LISTS = [("frames3_240x320", 3, 240, 320), ("frames4_37x301", 4, 37, 301), ("frames5_700x500", 5, 700, 500)]
VIDEO_MODES = {"fps": {"fps": 1.0, "max_frames": 32}, "n8": {"nframes": 8}}


def _media(workdir: Path) -> dict:
    m = workdir / "media"
    return {
        "images": {name: str(m / f"{name}.png") for name, *_ in IMAGES},
        "videos": {name: str(m / f"{name}.{ext}") for name, *_, ext in VIDEOS},
        "frame_lists": {name: [str(m / f"{name}_{i}.png") for i in range(n)] for name, n, *_ in FRAME_LISTS},
    }


def _items(media: dict) -> list[dict]:
    img, vid, fl = media["images"], media["videos"], media["frame_lists"]
    return [
        {"name": "text", "item": {"text": "A red circle on a white background. A blue square."}},
        {"name": "image", "item": {"image": img["rgb_480x640"]}},
        {"name": "image_rgba_odd", "item": {"image": img["rgba_301x37"]}},
        {"name": "video", "item": {"video": vid["v75f_5fps_240x320"]}},
        {"name": "video_short", "item": {"video": vid["v24f_8fps_120x160"]}},
        {"name": "video_frames", "item": {"video": fl["frames3_240x320"]}},
        {"name": "video_mkv", "item": {"video": vid["v40f_8fps_120x160_mkv"]}},
        {"name": "video_ntsc", "item": {"video": vid["v100f_29.97fps_180x240"]}},
        {
            "name": "fused_image",
            "item": {"text": "<|IMAGE|> What is the name of this place?", "image": img["rgb_1000x333"]},
        },
        {
            "name": "fused_image_text_first",
            "item": {"text": "The book titled Riding with Reindeer. <|IMAGE|>", "image": img["grey_100x100"]},
        },
        {
            "name": "fused_image_no_placeholder",
            "item": {"text": "What is the name of this place?", "image": img["rgb_100x100"]},
        },
        {
            "name": "fused_video",
            "item": {"text": "<|VIDEO|> A timelapse of stormy clouds.", "video": vid["v50f_10fps_240x320"]},
        },
        {
            "name": "multi_image",
            "item": {"text": "<|IMAGE|> and <|IMAGE|>", "image": [img["rgb_37x301"], img["rgba_480x640"]]},
        },
    ]


# ------------------------------------------------------------------------------------------------------- ours


def run_ours(workdir: Path) -> None:
    import torch

    from unite import UniteEncoder
    from unite.data.media import load_image, load_video, patchify
    from unite.data.prompts import build_prompt
    from unite.settings import EncodingSettings
    from unite.testing import make_image, make_tiny_checkpoint, make_video
    from unite.types import Item

    torch.manual_seed(0)
    media = _media(workdir)
    (workdir / "media").mkdir(parents=True, exist_ok=True)
    for name, h, w, seed, mode in IMAGES:
        make_image(h, w, seed, mode).save(media["images"][name])
    for name, frames, fps, h, w, seed, gop, _ in VIDEOS:
        make_video(media["videos"][name], frames=frames, fps=fps, height=h, width=w, seed=seed, gop=gop)
    for name, _n, h, w in FRAME_LISTS:
        for i, path in enumerate(media["frame_lists"][name]):
            make_image(h, w, 100 + i, "RGB").save(path)
    checkpoint = make_tiny_checkpoint(workdir / "tiny")
    items = _items(media)
    settings = {
        "fps": EncodingSettings(video_fps=1.0, video_max_frames=32, video_max_pixels=VIDEO_MAX_PIXELS),
        "n8": EncodingSettings(video_frames=8, video_max_pixels=VIDEO_MAX_PIXELS),
    }
    manifest = {"media": media, "items": items, "settings": {k: v.to_dict() for k, v in settings.items()}}
    (workdir / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))

    out = workdir / "ours"
    out.mkdir(exist_ok=True)
    image_settings = EncodingSettings()
    for name, path in media["images"].items():
        _save_visual(out / f"img_{name}", load_image(path, image_settings))
    # sensitivity probe: stage 2 alone (no loader resize) must NOT match the reference
    from PIL import Image

    for name in PROBES:
        with Image.open(media["images"][name]) as im:
            rgb = np.asarray(im.convert("RGB"))
        single = patchify([rgb], image_settings.image_min_pixels, image_settings.image_max_pixels)
        _save_visual(out / f"probe_single_resize_{name}", single)
    for mode, s in settings.items():
        for name, path in media["videos"].items():
            _save_visual(out / f"vid_{mode}_{name}", load_video(path, s))
        for name, paths in media["frame_lists"].items():
            _save_visual(out / f"frm_{mode}_{name}", load_video(paths, s))

    record: dict = {"prompts": {}, "input_ids": {}, "timing_s": {}, "unite_source_sha256": _source_hash()}
    for mode, s in settings.items():
        encoder = UniteEncoder.from_pretrained(
            checkpoint, device="cpu", dtype="float32", attn_implementation="sdpa", **_overrides(s)
        )
        parsed = [Item.from_dict(entry["item"]) for entry in items]
        if mode == "fps":
            record["prompts"] = {e["name"]: build_prompt(i) for e, i in zip(items, parsed)}
        record["input_ids"][mode] = {e["name"]: encoder.processor.prepare(i).input_ids for e, i in zip(items, parsed)}
        raw = [entry["item"] for entry in items]
        t0 = time.perf_counter()
        single = np.concatenate([encoder.encode([r], batch_size=1) for r in raw])
        t1 = time.perf_counter()
        batched = encoder.encode(raw, batch_size=8)
        t2 = time.perf_counter()
        np.save(out / f"emb_{mode}_bs1.npy", single)
        np.save(out / f"emb_{mode}_bs8.npy", batched)
        record["timing_s"][mode] = {"bs1": t1 - t0, "bs8": t2 - t1}
    if record["unite_source_sha256"] != _source_hash():
        raise SystemExit("the unite sources changed while this side ran; run it again")
    (out / "record.json").write_text(json.dumps(record, indent=1))
    print(f"ours: wrote {out} (unite sources sha256 {record['unite_source_sha256'][:12]})")


def _source_hash() -> str:
    """sha256 over the imported unite package's .py files, to tie the numbers to one version of the code."""
    import hashlib

    import unite

    root = Path(unite.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _overrides(settings) -> dict:
    return {
        "video_fps": settings.video_fps,
        "video_max_frames": settings.video_max_frames,
        "video_frames": settings.video_frames,
        "video_max_pixels": settings.video_max_pixels,
    }


def _save_visual(stem: Path, visual) -> None:
    np.save(f"{stem}.npy", np.asarray(visual.pixel_values, dtype=np.float32))
    Path(f"{stem}.json").write_text(json.dumps(list(map(int, visual.grid_thw))))


# -------------------------------------------------------------------------------------------------- reference


def _read_video_substitute(path, start_pts=0.0, end_pts=None, pts_unit="sec", output_format="TCHW"):
    """torchvision.io.read_video (removed in torchvision 0.24) for a whole file: all frames by pts, RGB."""
    import av
    import torch

    assert start_pts == 0.0 and end_pts is None and pts_unit == "sec"
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        frames = {frame.pts: frame for frame in container.decode(video=0)}
        fps = float(stream.average_rate)
        arrays = [frames[pts].to_rgb().to_ndarray() for pts in sorted(frames)]
    video = torch.as_tensor(np.stack(arrays))
    if output_format == "TCHW":
        video = video.permute(0, 3, 1, 2)
    return video, torch.empty((1, 0)), {"video_fps": fps}


def _ref_prompt(item: dict) -> tuple[str, str]:
    """UNITE's prompt (ret_dataset.prepare_inputs_for_fusedmodal semantics), and which rule built it."""
    words = {"text": "sentence", "image": "image", "video": "video"}
    modalities = " and ".join(words[key] for key in item if key in words)
    has_text = "text" in item
    text = item.get("text", "")
    rule = "unite-code"
    media_blocks = ""
    if "image" in item:
        n = len(item["image"]) if isinstance(item["image"], list) else 1
        if not has_text:
            text += IMAGE_BLOCK + "\n"
        elif "<|IMAGE|>" not in text:  # UNITE silently dropped the image here; docs/reference.md section 3 instead
            media_blocks += IMAGE_BLOCK * n
            rule = "docs/reference.md section 3 (UNITE code drops the image)"
    if "video" in item:
        if not has_text:
            text += VIDEO_BLOCK + "\n"
        elif "<|VIDEO|>" not in text:
            media_blocks += VIDEO_BLOCK
            rule = "docs/reference.md section 3 (UNITE code drops the video)"
    text = text.replace("<|IMAGE|>", IMAGE_BLOCK).replace("<|VIDEO|>", VIDEO_BLOCK)
    return UNITE_TEMPLATE.format(text=(media_blocks + text).strip(), modalities=modalities), rule


def run_reference(workdir: Path) -> None:
    import torch
    import torchvision
    import transformers
    from qwen_vl_utils import vision_process
    from transformers import (
        Qwen2TokenizerFast,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )

    assert transformers.__version__ == "4.47.1", transformers.__version__
    torchvision.io.read_video = _read_video_substitute  # vision_process calls io.read_video at call time
    torch.manual_seed(0)
    manifest = json.loads((workdir / "manifest.json").read_text())
    media = manifest["media"]
    out = workdir / "reference"
    out.mkdir(exist_ok=True)
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)

    def video_ele(path, mode):
        return {"video": path, **VIDEO_MODES[mode], "max_pixels": VIDEO_MAX_PIXELS}

    def fetch_video(ele, backend):
        vision_process.get_video_reader_backend = lambda: backend
        return vision_process.fetch_video(ele)

    def save(stem, pixels, grid):
        np.save(out / f"{stem}.npy", np.asarray(pixels, dtype=np.float32))
        (out / f"{stem}.json").write_text(json.dumps([int(x) for x in np.asarray(grid).reshape(-1)]))

    for name, path in media["images"].items():
        batch = image_processor(images=[vision_process.fetch_image({"image": path})], return_tensors="np")
        save(f"img_{name}", batch["pixel_values"], batch["image_grid_thw"])
    for mode in VIDEO_MODES:
        for name, path in media["videos"].items():
            for backend in ("decord", "torchvision"):
                batch = image_processor(
                    images=None, videos=[fetch_video(video_ele(path, mode), backend)], return_tensors="np"
                )
                tag = "" if backend == "decord" else "_tvsub"
                save(f"vid_{mode}_{name}{tag}", batch["pixel_values_videos"], batch["video_grid_thw"])
        for name, paths in media["frame_lists"].items():
            frames = fetch_video(video_ele(paths, "fps"), "decord")  # frame lists ignore fps / nframes
            batch = image_processor(images=None, videos=[frames], return_tensors="np")
            save(f"frm_{mode}_{name}", batch["pixel_values_videos"], batch["video_grid_thw"])

    # ---- embeddings
    folder = workdir / "tiny"
    tokenizer = Qwen2TokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
    )
    tokenizer.padding_side = "left"
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model, info = Qwen2VLForConditionalGeneration.from_pretrained(
        folder, torch_dtype=torch.float32, attn_implementation="sdpa", output_loading_info=True
    )
    model.eval()
    load_problems = {k: v for k, v in info.items() if v}
    record: dict = {
        "prompts": {},
        "prompt_rule": {},
        "input_ids": {},
        "load_problems": load_problems,
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }
    items = manifest["items"]
    for entry in items:
        record["prompts"][entry["name"]], record["prompt_rule"][entry["name"]] = _ref_prompt(entry["item"])

    def inputs_for(entries, mode, backend="decord"):
        images, videos = [], []
        for entry in entries:
            item = entry["item"]
            if "image" in item:
                for path in item["image"] if isinstance(item["image"], list) else [item["image"]]:
                    images.append(vision_process.fetch_image({"image": path}))
            if "video" in item:
                videos.append(fetch_video(video_ele(item["video"], mode), backend))
        return processor(
            text=[record["prompts"][e["name"]] for e in entries],
            images=images or None,
            videos=videos or None,
            padding=True,
            return_tensors="pt",
        )

    @torch.no_grad()
    def unite_forward(batch, mrope=False):
        """UNITE's embedding forward: vision embeds scattered in, decoder with position_ids=None, last token."""
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = model.model.embed_tokens(input_ids)
        for pixels_key, grid_key, token_id in (
            ("pixel_values", "image_grid_thw", model.config.image_token_id),
            ("pixel_values_videos", "video_grid_thw", model.config.video_token_id),
        ):
            if batch.get(pixels_key) is not None:
                visual = model.visual(batch[pixels_key].type(model.visual.get_dtype()), grid_thw=batch[grid_key])
                where = (input_ids == token_id).unsqueeze(-1).expand_as(embeds)
                embeds = embeds.masked_scatter(where, visual.to(embeds.dtype))
        positions = None
        if mrope:  # the stock Qwen2-VL 3-D positions, only to show that the check can tell the schemes apart
            positions, _ = model.get_rope_index(
                input_ids, batch.get("image_grid_thw"), batch.get("video_grid_thw"), mask
            )
        hidden = model.model(
            input_ids=None, position_ids=positions, attention_mask=mask, inputs_embeds=embeds
        ).last_hidden_state
        assert bool(mask[:, -1].all()), "expected left padding"
        return torch.nn.functional.normalize(hidden[:, -1], p=2, dim=1).numpy()

    timing = {}
    for mode in VIDEO_MODES:
        singles, mrope, tvsub = [], [], []
        t0 = time.perf_counter()
        for entry in items:
            batch = inputs_for([entry], mode)
            record["input_ids"].setdefault(mode, {})[entry["name"]] = batch["input_ids"][0].tolist()
            singles.append(unite_forward(batch))
            mrope.append(unite_forward(batch, mrope=True))
            if "video" in entry["item"] and isinstance(entry["item"]["video"], str):
                tvsub.append(unite_forward(inputs_for([entry], mode, "torchvision")))
            else:
                tvsub.append(singles[-1])
        t1 = time.perf_counter()
        batched = np.concatenate([unite_forward(inputs_for(items[i : i + 8], mode)) for i in range(0, len(items), 8)])
        timing[mode] = {"bs1": t1 - t0, "bs8": time.perf_counter() - t1}
        np.save(out / f"emb_{mode}_bs1.npy", np.concatenate(singles))
        np.save(out / f"emb_{mode}_bs1_mrope.npy", np.concatenate(mrope))
        np.save(out / f"emb_{mode}_bs1_tvsub.npy", np.concatenate(tvsub))
        np.save(out / f"emb_{mode}_bs8.npy", batched)
    record["timing_s"] = timing
    (out / "record.json").write_text(json.dumps(record, indent=1))
    print(f"reference: wrote {out}; load problems: {load_problems or 'none'}")


# ---------------------------------------------------------------------------------------------------- compare


def compare(workdir: Path) -> dict:
    ours, ref = workdir / "ours", workdir / "reference"
    manifest = json.loads((workdir / "manifest.json").read_text())
    report: dict = {"pixels": [], "embeddings": [], "prompts": [], "input_ids": []}

    def pixel_row(stem, ref_stem, label):
        a, b = np.load(ours / f"{stem}.npy"), np.load(ref / f"{ref_stem}.npy")
        ga, gb = json.loads((ours / f"{stem}.json").read_text()), json.loads((ref / f"{ref_stem}.json").read_text())
        row = {"case": label, "grid_ours": ga, "grid_ref": gb, "shape_ours": list(a.shape), "shape_ref": list(b.shape)}
        if a.shape == b.shape:
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            row.update(max_abs=float(diff.max()), n_diff=int((diff > 1e-6).sum()), n=int(diff.size))
        else:
            row.update(max_abs=None, n_diff=None, n=None)
        row["ok"] = ga == gb and row["max_abs"] is not None and row["max_abs"] <= 1e-6
        report["pixels"].append(row)

    for name in manifest["media"]["images"]:
        pixel_row(f"img_{name}", f"img_{name}", f"image {name}")
    for name in PROBES:
        pixel_row(f"probe_single_resize_{name}", f"img_{name}", f"PROBE: {name}, stage 2 only (must differ)")
    for mode in VIDEO_MODES:
        for name in manifest["media"]["videos"]:
            pixel_row(f"vid_{mode}_{name}", f"vid_{mode}_{name}", f"video[{mode}] {name} (decord)")
            pixel_row(f"vid_{mode}_{name}", f"vid_{mode}_{name}_tvsub", f"video[{mode}] {name} (read_video sub)")
        for name in manifest["media"]["frame_lists"]:
            pixel_row(f"frm_{mode}_{name}", f"frm_{mode}_{name}", f"frames[{mode}] {name}")

    rec_o, rec_r = json.loads((ours / "record.json").read_text()), json.loads((ref / "record.json").read_text())
    names = [e["name"] for e in manifest["items"]]
    for name in names:
        report["prompts"].append(
            {
                "item": name,
                "equal": rec_o["prompts"][name] == rec_r["prompts"][name],
                "rule": rec_r["prompt_rule"][name],
                "ours": rec_o["prompts"][name],
                "ref": rec_r["prompts"][name],
            }
        )
    for mode in VIDEO_MODES:
        for name in names:
            a, b = rec_o["input_ids"][mode][name], rec_r["input_ids"][mode][name]
            report["input_ids"].append(
                {"mode": mode, "item": name, "equal": a == b, "len_ours": len(a), "len_ref": len(b)}
            )
        ref1 = np.load(ref / f"emb_{mode}_bs1.npy")
        cos = lambda x, y: np.sum(x * y, -1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)  # noqa: E731
        columns = {
            "ours_bs1": cos(np.load(ours / f"emb_{mode}_bs1.npy"), ref1),
            "ours_bs8": cos(np.load(ours / f"emb_{mode}_bs8.npy"), ref1),
            "ref_bs8": cos(np.load(ref / f"emb_{mode}_bs8.npy"), ref1),
            "ref_tvsub": cos(np.load(ref / f"emb_{mode}_bs1_tvsub.npy"), ref1),
            "ours_vs_ref_mrope": cos(np.load(ours / f"emb_{mode}_bs1.npy"), np.load(ref / f"emb_{mode}_bs1_mrope.npy")),
        }
        for i, name in enumerate(names):
            report["embeddings"].append({"mode": mode, "item": name, **{k: float(v[i]) for k, v in columns.items()}})
    report["unite_source_sha256"] = rec_o.get("unite_source_sha256")
    report["reference_versions"] = rec_r.get("versions")
    report["reference_load_problems"] = rec_r.get("load_problems")
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    _print(report)
    return report


def _print(report: dict) -> None:
    print("## Pixels (ours vs reference)\n")
    print("| case | grid ours | grid ref | max abs diff | values differing |")
    print("| --- | --- | --- | --- | --- |")
    for r in report["pixels"]:
        mx = "shape mismatch" if r["max_abs"] is None else f"{r['max_abs']:.3g}"
        nd = "-" if r["n_diff"] is None else f"{r['n_diff']} / {r['n']}"
        print(f"| {r['case']} | {r['grid_ours']} | {r['grid_ref']} | {mx} | {nd} |")
    print("\n## Prompts\n")
    for r in report["prompts"]:
        print(f"- {r['item']}: {'equal' if r['equal'] else 'DIFFERENT'} ({r['rule']})")
        if not r["equal"]:
            print(f"  ours: {r['ours']!r}\n  ref:  {r['ref']!r}")
    bad = [r for r in report["input_ids"] if not r["equal"]]
    print(f"\n## Token ids: {len(report['input_ids']) - len(bad)} / {len(report['input_ids'])} equal")
    for r in bad:
        print(f"- [{r['mode']}] {r['item']}: length ours {r['len_ours']}, ref {r['len_ref']}")
    print("\n## Embeddings: cosine to the reference at batch size 1\n")
    print("| mode | item | ours bs1 | ours bs8 | ref bs8 | ref (read_video sub) | ours vs ref with M-RoPE |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in report["embeddings"]:
        print(
            f"| {r['mode']} | {r['item']} | {r['ours_bs1']:.7f} | {r['ours_bs8']:.7f} | {r['ref_bs8']:.7f} | "
            f"{r['ref_tvsub']:.7f} | {r['ours_vs_ref_mrope']:.5f} |"
        )
    worst = min(min(r["ours_bs1"], r["ours_bs8"]) for r in report["embeddings"])
    print(f"\nworst ours-vs-reference cosine: {worst:.7f} (target >= 0.99999)")
    print(f"unite sources sha256: {report.get('unite_source_sha256')}; reference: {report.get('reference_versions')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", choices=["ours", "reference"])
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--workdir", default="/tmp/crosscheck", type=Path)
    args = parser.parse_args()
    if not args.side and not args.compare:
        parser.error("give --side ours, --side reference or --compare")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.side == "ours":
        run_ours(args.workdir)
    elif args.side == "reference":
        run_reference(args.workdir)
    if args.compare:
        compare(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
