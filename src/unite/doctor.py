"""Health checks behind ``unite doctor``: the installation, devices, video decoding, a checkpoint, the Hub.

Every check returns :class:`Check` records (a status, what was found, and the fix when something is off); nothing
here prints. :func:`run_checks` runs them all, and a check that crashes becomes an ``error`` record naming the
exception instead of taking the others down.

Example:
    >>> from unite.doctor import has_errors, run_checks
    >>> checks = run_checks(model="/tmp/tiny")  # doctest: +SKIP
    >>> [check.line() for check in checks if check.status != "ok"]  # doctest: +SKIP
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from unite.errors import CheckpointError, UniteError

__all__ = [
    "HUB_TIMEOUT",
    "Check",
    "Status",
    "check_devices",
    "check_flash_attention",
    "check_hub",
    "check_model",
    "check_packages",
    "check_video_decoding",
    "has_errors",
    "run_checks",
]

DISTRIBUTION = "unite-embed"
#: Seconds the Hub check waits for an answer.
HUB_TIMEOUT = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}
#: The test clip: 8 frames at 8 fps (1 s), whose frame i has a brightness that encodes i.
_CLIP_FRAMES, _CLIP_FPS, _CLIP_HEIGHT, _CLIP_WIDTH = 8, 8, 64, 80
#: Extras that only gather the others; the requirement a package needs is taken from the extra that names it.
_GATHERING_EXTRAS = ("dev", "all")
#: Tokens the prompt and the vision blocks are built from; the vision ones must carry config.json's ids.
VISION_TOKENS = {
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}
PROMPT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


class Status(str, enum.Enum):
    """How a check came out; only ``error`` makes ``unite doctor`` exit with status 1."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Check:
    """One finding.

    Attributes:
        name: what was checked (``torch``, ``CUDA``, ``weights``, ...).
        status: ok, info (a neutral fact), warning or error.
        message: what was found.
        fix: what to do about it, when the status is not ok.
        details: the same facts as plain JSON values, for ``--json``.
    """

    name: str
    status: Status
    message: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """``status  name: message[: fix]`` on one line."""
        text = f"{self.status.value:<8}{self.name}: {self.message}"
        return f"{text}: {self.fix}" if self.fix else text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "fix": self.fix,
            "details": self.details,
        }


def has_errors(checks: Iterable[Check]) -> bool:
    """Whether any check is an error."""
    return any(check.status is Status.ERROR for check in checks)


def run_checks(model: str | Path | None = None, hub_timeout: float = HUB_TIMEOUT) -> list[Check]:
    """Every check, in the order ``unite doctor`` prints them.

    Args:
        model: a checkpoint folder or Hugging Face id (looked up in the local cache, never downloaded).
        hub_timeout: seconds the Hub check waits.
    """
    checks = _guarded("versions", check_packages)
    checks += _guarded("devices", check_devices)
    device = next((c.details["device"] for c in checks if c.name == "default device" and c.details), "cpu")
    checks += _guarded("flash-attention", check_flash_attention, device)
    checks += _guarded("video decoding", check_video_decoding)
    if model is not None:
        checks += _guarded("checkpoint", check_model, str(model))
    repo = str(model) if model is not None and _is_hub_id(str(model)) else _released_checkpoint()
    checks += _guarded("Hugging Face Hub", check_hub, repo, hub_timeout)
    return checks


def _guarded(name: str, function: Callable[..., Check | list[Check]], *args: Any) -> list[Check]:
    """Run one check; a crash becomes an error record naming the exception, never a traceback."""
    try:
        result = function(*args)
    except Exception as error:  # a doctor must report every failure, whatever raised it
        return [Check(name, Status.ERROR, f"the check itself failed: {_one_line(error)}")]
    return [result] if isinstance(result, Check) else list(result)


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --------------------------------------------------------------------------------------------------- versions


@dataclass(frozen=True)
class _Package:
    label: str
    distribution: str
    module: str
    extra: str | None  # None: a base dependency
    purpose: str  # what breaks without it
    required: bool = True  # False: reported only when installed
    imported: bool = True  # False: only located (its import takes seconds), so the check stays quick

    @property
    def essential(self) -> bool:
        """Whether unite needs it for its everyday work (a base dependency, or PyAV for video files)."""
        return self.extra in (None, "video")


_PACKAGES = (
    _Package("torch", "torch", "torch", None, "unite cannot run"),
    _Package("transformers", "transformers", "transformers", None, "unite cannot run"),
    _Package("tokenizers", "tokenizers", "tokenizers", None, "unite cannot run"),
    _Package("safetensors", "safetensors", "safetensors", None, "checkpoints cannot be read"),
    _Package("huggingface-hub", "huggingface-hub", "huggingface_hub", None, "checkpoints cannot be fetched"),
    _Package("numpy", "numpy", "numpy", None, "unite cannot run"),
    _Package("Pillow", "pillow", "PIL", None, "images cannot be read"),
    _Package("PyAV", "av", "av", "video", "video files cannot be read"),
    _Package("peft", "peft", "peft", "train", "unite train and LoRA adapters cannot run"),
    _Package("accelerate", "accelerate", "accelerate", "train", "unite train cannot run"),
    _Package("pyyaml", "pyyaml", "yaml", "eval", "recipes and evaluation tasks cannot be read"),
    _Package("lancedb", "lancedb", "lancedb", "index", "LanceDB indexes cannot be used", imported=False),
    _Package(
        "qdrant-client", "qdrant-client", "qdrant_client", "index", "Qdrant indexes cannot be used", imported=False
    ),
    _Package("pyarrow", "pyarrow", "pyarrow", "index", "indexes and .parquet output cannot be written"),
    _Package("fastapi", "fastapi", "fastapi", "serve", "unite serve cannot run"),
    _Package("uvicorn", "uvicorn", "uvicorn", "serve", "unite serve cannot run"),
    _Package(
        "sentence-transformers",
        "sentence-transformers",
        "sentence_transformers",
        None,
        "",
        required=False,
        imported=False,
    ),
    _Package("mteb", "mteb", "mteb", None, "", required=False, imported=False),
)


def check_packages() -> list[Check]:
    """unite-embed itself, Python, and each dependency's version against what unite-embed requires.

    The requirements are read from the installed distribution's metadata. A base dependency or PyAV that is
    missing or cannot be imported is an error, for an optional extra info (missing) or a warning (broken); a
    version outside the requirement is an error. Packages whose import takes seconds (lancedb, qdrant-client,
    sentence-transformers, mteb) are located rather than imported.
    """
    try:
        requirements = _requirements()
    except metadata.PackageNotFoundError:
        return [
            Check(
                DISTRIBUTION,
                Status.ERROR,
                "not installed (running from a source tree?): requirements cannot be read",
                fix="pip install -e . (or pip install unite-embed)",
            )
        ]
    checks = [_self_check(), _python_check()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # libraries warn on import about things unrelated to this check
        for package in _PACKAGES:
            check = _package_check(package, requirements.get(_canonical(package.distribution), []))
            if check is not None:
                checks.append(check)
    return checks


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def _requirements() -> dict[str, list[tuple[Any, str | None]]]:
    """Every requirement of the installed unite-embed, by canonical name, with the extra that asks for it."""
    from packaging.requirements import Requirement

    extras = metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or []
    found: dict[str, list[tuple[Any, str | None]]] = {}
    for line in metadata.requires(DISTRIBUTION) or []:
        requirement = Requirement(line)
        extra = _extra_of(requirement, extras)
        if extra != "":
            found.setdefault(_canonical(requirement.name), []).append((requirement, extra))
    return found


def _extra_of(requirement: Any, extras: list[str]) -> str | None:
    """None for a base requirement, the extra's name for an optional one, "" when not for this platform."""
    marker = requirement.marker
    if marker is None or marker.evaluate({"extra": ""}):
        return None
    ordered = [e for e in extras if e not in _GATHERING_EXTRAS] + [e for e in extras if e in _GATHERING_EXTRAS]
    return next((extra for extra in ordered if marker.evaluate({"extra": extra})), "")


def _self_check() -> Check:
    import unite

    installed = metadata.version(DISTRIBUTION)
    where = str(Path(unite.__file__).parent)
    details = {"version": installed, "imported_version": unite.__version__, "location": where}
    if installed != unite.__version__:
        return Check(
            DISTRIBUTION,
            Status.WARNING,
            f"the imported package is {unite.__version__} but the installed metadata says {installed} ({where})",
            fix="reinstall it (pip install -e . in a source tree)",
            details=details,
        )
    return Check(DISTRIBUTION, Status.OK, f"{installed} ({where})", details=details)


def _python_check() -> Check:
    from packaging.specifiers import SpecifierSet

    version = platform.python_version()
    wanted = metadata.metadata(DISTRIBUTION).get("Requires-Python") or ""
    details = {"version": version, "requirement": wanted, "executable": sys.executable}
    if wanted and not SpecifierSet(wanted).contains(version, prereleases=True):
        return Check(
            "Python",
            Status.ERROR,
            f"{version} is outside the requirement python{wanted}",
            fix=f"use a Python {wanted}",
            details=details,
        )
    return Check("Python", Status.OK, f"{version} ({sys.executable})", details=details)


def _package_check(package: _Package, requirements: list[tuple[Any, str | None]]) -> Check | None:
    named_by = [extra for _, extra in requirements if extra and extra not in _GATHERING_EXTRAS]
    extra = package.extra if package.extra in named_by or not named_by else named_by[0]
    wanted = sorted({str(requirement.specifier) for requirement, _ in requirements if requirement.specifier})
    requirement_text = ", ".join(f"{package.distribution}{spec}" for spec in wanted)
    install = (
        f"pip install 'unite-embed[{extra}]'" if extra else f"pip install '{requirement_text or package.distribution}'"
    )
    details: dict[str, Any] = {"version": None, "requirement": requirement_text or None, "extra": extra}
    try:
        version = metadata.version(package.distribution)
    except metadata.PackageNotFoundError:
        if not package.required:
            return None
        status = Status.ERROR if package.essential else Status.INFO
        return Check(package.label, status, "not installed", fix=f"{install} ({package.purpose})", details=details)
    details["version"] = version
    problem = _import_problem(package.module) if package.imported else _locate_problem(package.module)
    if problem:
        fix = f"reinstall it: {install}" + (f" ({package.purpose})" if package.purpose else "")
        return Check(
            package.label,
            Status.ERROR if package.essential else Status.WARNING,
            f"{version} is installed but cannot be imported ({problem})",
            fix=fix,
            details=details,
        )
    outside = [spec for spec in wanted if not _satisfies(version, spec)]
    if outside:
        return Check(
            package.label,
            Status.ERROR,
            f"{version} is outside the requirement {requirement_text} of unite-embed",
            fix=f"pip install '{requirement_text}'",
            details=details,
        )
    return Check(
        package.label, Status.OK, version + (f" ({requirement_text})" if requirement_text else ""), details=details
    )


def _satisfies(version: str, specifier: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion

    try:
        return SpecifierSet(specifier).contains(version, prereleases=True)
    except InvalidVersion:
        return False


def _locate_problem(module: str) -> str | None:
    """None when ``module`` can be found (without running it), else the reason."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError) as error:  # ValueError: a module in sys.modules without a spec
        return _one_line(error)
    return None if found else f"no module named {module!r}"


def _import_problem(module: str) -> str | None:
    """None when ``module`` imports, else the reason in one line."""
    try:
        importlib.import_module(module)
    except Exception as error:  # an import can fail in any way: missing libraries, ABI mismatches, bad versions
        return _one_line(error)
    return None


# ---------------------------------------------------------------------------------------------------- devices


def check_devices() -> list[Check]:
    """CUDA GPUs (names, memory, bf16), MPS, CPU threads, and the device and dtype ``from_pretrained`` picks."""
    return [
        *_guarded("CUDA", _cuda_check),
        *_guarded("MPS", _mps_check),
        *_guarded("CPU", _cpu_check),
        *_guarded("default device", _default_device_check),
    ]


def _gpus() -> list[dict[str, Any]]:
    import torch

    gpus = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        native_bf16 = properties.major >= 8 if not torch.version.hip else torch.cuda.is_bf16_supported()
        gpus.append(
            {
                "index": index,
                "name": properties.name,
                "memory_gib": round(properties.total_memory / 2**30, 1),
                "capability": f"{properties.major}.{properties.minor}",
                "bf16": bool(native_bf16),
            }
        )
    return gpus


def _cuda_check() -> Check:
    import torch

    built = torch.version.cuda or torch.version.hip
    if not torch.cuda.is_available():
        if built:
            message = f"not available: this torch is built for CUDA {built} but sees no GPU"
            return Check(
                "CUDA", Status.INFO, message, fix="check the driver and CUDA_VISIBLE_DEVICES if a GPU is there"
            )
        return Check("CUDA", Status.INFO, f"not available (torch {torch.__version__} is a CPU build)")
    gpus = _gpus()
    listed = "; ".join(
        f"{gpu['index']}: {gpu['name']} ({gpu['memory_gib']} GiB, {'bf16' if gpu['bf16'] else 'no native bf16'})"
        for gpu in gpus
    )
    message = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} with CUDA {built}: {listed}"
    return Check("CUDA", Status.OK, message, details={"version": built, "gpus": gpus})


def _mps_check() -> Check:
    import torch

    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("MPS", Status.OK, "available (Apple GPU)", details={"available": True})
    return Check("MPS", Status.INFO, "not available", details={"available": False})


def _cpu_check() -> Check:
    import torch

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    threads = torch.get_num_threads()
    details = {"cores": cores, "usable_cores": usable, "torch_threads": threads}
    return Check("CPU", Status.OK, f"{usable} of {cores} cores usable, torch uses {threads} threads", details=details)


def _default_device_check() -> Check:
    import torch

    from unite.models.loading import resolve_device, resolve_dtype

    device = resolve_device(None)
    dtype = str(resolve_dtype(None, device)).removeprefix("torch.")
    details = {"device": device.type, "dtype": dtype}
    message = f"UniteEncoder.from_pretrained would use {device.type} with {dtype}"
    if device.type == "cuda" and dtype == "bfloat16":
        slow = [gpu for gpu in _gpus() if not gpu["bf16"] and gpu["index"] == (torch.cuda.current_device())]
        if slow:
            return Check(
                "default device",
                Status.WARNING,
                f"{message}, but {slow[0]['name']} has no native bfloat16",
                fix="pass dtype='float16' (--dtype float16), or float32",
                details=details,
            )
    return Check("default device", Status.OK, message, details=details)


def check_flash_attention(device: str = "cpu") -> Check:
    """Whether flash-attn imports; missing on a CUDA machine is a warning (sdpa is used instead).

    Args:
        device: the device type unite would run on (``cuda``, ``mps``, ``cpu``).
    """
    name, install = "flash-attention", "pip install flash-attn --no-build-isolation"
    try:
        module = importlib.import_module("flash_attn")
    except ModuleNotFoundError as error:
        if error.name != "flash_attn":
            return _broken_flash_attention(device, error)
        if device == "cuda":
            message = "flash-attn is not installed: attention runs with sdpa (flash_attention_2 unavailable)"
            return Check(name, Status.WARNING, message, fix=install)
        return Check(name, Status.INFO, f"flash-attn is not installed (it serves CUDA GPUs only; {device} uses sdpa)")
    except Exception as error:  # compiled extensions fail to load with ImportError, OSError or RuntimeError
        return _broken_flash_attention(device, error)
    version = getattr(module, "__version__", "unknown version")
    details = {"version": version}
    if device != "cuda":
        return Check(name, Status.INFO, f"flash-attn {version} imports, but serves CUDA GPUs only", details=details)
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        message = f"flash-attn {version} imports, but transformers will not use it with this torch or GPU"
        return Check(name, Status.WARNING, message, fix=f"install a matching build: {install}", details=details)
    message = f"flash-attn {version}: attn_implementation='flash_attention_2' is available"
    return Check(name, Status.OK, message, details=details)


def _broken_flash_attention(device: str, error: Exception) -> Check:
    status = Status.WARNING if device == "cuda" else Status.INFO
    message = f"flash-attn is installed but cannot be imported ({_one_line(error)})"
    fix = "reinstall it for this torch: pip install --force-reinstall flash-attn --no-build-isolation"
    return Check("flash-attention", status, message, fix=fix)


# ------------------------------------------------------------------------------------------------------ video


def check_video_decoding() -> Check:
    """Write a tiny clip with PyAV and decode it through unite's video path, checking which frames come back.

    The clip (8 frames at 8 fps) encodes each frame's index in its brightness; the frames sampled by the default
    settings are read back from the patches :func:`unite.data.media.load_video` returns.
    """
    name, install = "video decoding", "pip install 'unite-embed[video]'"
    problem = _import_problem("av")
    if problem:
        return Check(
            name, Status.ERROR, f"PyAV cannot be imported ({problem})", fix=f"{install} (video files cannot be read)"
        )
    from unite.data.media import load_video, probe_video, sample_indices
    from unite.settings import EncodingSettings
    from unite.testing import make_video

    settings = EncodingSettings()
    with tempfile.TemporaryDirectory(prefix="unite-doctor-") as folder:
        path = Path(folder) / "clip.mp4"
        try:
            make_video(path, frames=_CLIP_FRAMES, fps=_CLIP_FPS, height=_CLIP_HEIGHT, width=_CLIP_WIDTH)
        except Exception as error:  # PyAV builds without an H.264 encoder raise several types
            message = f"cannot write an H.264 test clip ({_one_line(error)}); decoding was not checked"
            return Check(name, Status.WARNING, message)
        expected = sample_indices(_CLIP_FRAMES, probe_video(str(path), settings)[0])
        try:
            visual = load_video(str(path), settings)
        except UniteError as error:
            return Check(
                name, Status.ERROR, f"unite cannot decode a test clip: {error}", fix=f"reinstall PyAV: {install}"
            )
    decoded = _frame_numbers(visual)
    details = {"expected_frames": expected, "decoded_frames": decoded, "grid_thw": list(visual.grid_thw)}
    shown = ", ".join(str(index) for index in expected)
    if decoded != expected:
        message = f"frames {decoded} came back instead of {expected} from a test clip of {_CLIP_FRAMES} frames"
        return Check(name, Status.ERROR, message, fix=f"reinstall PyAV: {install}", details=details)
    message = f"frames {shown} of a test clip of {_CLIP_FRAMES} frames came back through unite's video path"
    return Check(name, Status.OK, message, details=details)


def _frame_numbers(visual: Any) -> list[int]:
    """The test clip's frame index of each frame in a video's patches, from its mean brightness."""
    from unite.settings import IMAGE_MEAN, IMAGE_STD, PATCH_SIZE, TEMPORAL_PATCH_SIZE
    from unite.testing import frame_number

    grid_t, grid_h, grid_w = visual.grid_thw
    patches = visual.pixel_values.reshape(grid_t, grid_h * grid_w, 3, TEMPORAL_PATCH_SIZE, PATCH_SIZE * PATCH_SIZE)
    normalised = patches.astype(np.float64).mean(axis=(1, 4))  # (grid_t, 3 channels, 2 frames)
    pixels = (normalised * np.asarray(IMAGE_STD)[:, None] + np.asarray(IMAGE_MEAN)[:, None]) * 255
    levels = pixels.mean(axis=1).reshape(-1)  # frame order: patch 0 frames 0, 1, patch 1 frames 0, 1, ...
    return [frame_number(np.asarray([level]), _CLIP_FRAMES) for level in levels]


# ------------------------------------------------------------------------------------------------- checkpoint


def check_model(name_or_path: str | Path) -> list[Check]:
    """A checkpoint folder (or a Hub id found in the local cache): config, weights, fingerprint, tokenizer,
    encoding settings; a LoRA adapter folder reports its base and checks the base when it is at hand.

    Nothing is downloaded and the model is not built: tensor names and shapes come from the file headers and are
    matched, strictly, against a model built on the ``meta`` device (no memory, no weights).
    """
    text = str(name_or_path)
    folder, found = _locate(text)
    if folder is None:
        return [found]
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        return [found, *_adapter_checks(folder)]
    return [found, *_checkpoint_checks(folder)]


def _is_hub_id(text: str) -> bool:
    """The rule :func:`unite.models.loading.resolve_checkpoint` uses to tell a Hub id from a path."""
    return not Path(text).expanduser().exists() and not text.startswith((".", "/", "~")) and text.count("/") == 1


def _released_checkpoint() -> str:
    from unite.models.loading import RELEASED_CHECKPOINTS

    return RELEASED_CHECKPOINTS[0]


def _locate(text: str) -> tuple[Path | None, Check]:
    from unite.models.loading import resolve_checkpoint

    path = Path(text).expanduser()
    if path.is_dir():
        return path, Check("checkpoint", Status.OK, f"{path} (local folder)", details={"folder": str(path)})
    if not _is_hub_id(text):
        return None, Check("checkpoint", Status.ERROR, f"{text}: not a folder, nor a Hugging Face id (owner/name)")
    try:
        folder = resolve_checkpoint(text, local_files_only=True)
    except CheckpointError:
        message = f"{text} is not in the local Hugging Face cache; unite doctor does not download it"
        fix = "it is downloaded on first use (unite encode --model ...) when the Hub can be reached"
        return None, Check("checkpoint", Status.WARNING, message, fix=fix)
    return folder, Check("checkpoint", Status.OK, f"{text} (cached at {folder})", details={"folder": str(folder)})


def _checkpoint_checks(folder: Path) -> list[Check]:
    config, checks = _config_check(folder)
    if config is not None:
        checks += _guarded("weights", _weights_check, folder, config)
    checks += _guarded("fingerprint", _fingerprint_check, folder)
    checks += _guarded("tokenizer", _tokenizer_check, folder, config)
    checks += _guarded("encoding settings", _settings_check, folder)
    return checks


def _config_check(folder: Path) -> tuple[Any, list[Check]]:
    from transformers import Qwen2VLConfig

    path = folder / "config.json"
    if not path.is_file():
        return None, [Check("config", Status.ERROR, f"{path}: missing", fix="copy config.json of the checkpoint")]
    try:
        config = Qwen2VLConfig.from_pretrained(folder)
    except Exception as error:  # transformers raises OSError, ValueError or its own strict-config errors
        return None, [Check("config", Status.ERROR, f"{path}: cannot be read ({_one_line(error)})")]
    if config.model_type != "qwen2_vl":
        return None, [
            Check("config", Status.ERROR, f"{path}: model_type is {config.model_type!r}, expected 'qwen2_vl'")
        ]
    text = config.text_config
    architecture = ", ".join(config.architectures or ["(none recorded)"])
    details = {
        "architectures": list(config.architectures or []),
        "hidden_size": text.hidden_size,
        "embedding_size": text.hidden_size,
        "layers": text.num_hidden_layers,
        "vocab_size": text.vocab_size,
        "vision_depth": config.vision_config.depth,
    }
    message = (
        f"{architecture} (qwen2_vl), {text.num_hidden_layers} layers, hidden size {text.hidden_size} -> "
        f"{text.hidden_size}-d embeddings, vision tower depth {config.vision_config.depth}"
    )
    if "UniteQwen2VL" not in (config.architectures or []):
        message += " (a stock Qwen2-VL: a base for training; its embeddings are not UNITE's)"
    return config, [Check("config", Status.OK, message, details=details)]


def _weights_check(folder: Path, config: Any) -> Check:
    """The file's tensor names and shapes against the model's, as strictly as ``load_weights`` matches them."""
    from unite.models.loading import CURRENT_LAYOUT, match_weights, to_current_layout

    found = _file_shapes(folder)
    shapes, origin, layout = to_current_layout(found)
    expected, tied = _model_shapes(config)
    match = match_weights(expected, shapes, origin, tied, rename=lambda key: _file_name(key, layout))
    missing, unexpected, wrong = match.missing, match.unexpected, match.wrong_shapes
    kind = "current" if layout == CURRENT_LAYOUT else "legacy, as released"
    details = {"layout": layout, "tensors": len(found), "missing": missing, "unexpected": unexpected, "shapes": wrong}
    if missing or unexpected:
        message = f"{folder} ({layout} layout) does not match the model: {match.describe()}"
        return Check(
            "weights", Status.ERROR, message, fix="use a complete checkpoint (recopy or redownload it)", details=details
        )
    if wrong:
        message = f"tensor shapes differ from config.json: {'; '.join(wrong[:5])}"
        return Check(
            "weights", Status.ERROR, message, fix="use the config.json saved with these weights", details=details
        )
    message = f"{len(found)} tensors, every one mapped and none missing; {layout} layout ({kind})"
    return Check("weights", Status.OK, message, details=details)


def _file_name(key: str, layout: str) -> str:
    """A tensor's current name as a file in ``layout`` spells it (the inverse of the loader's renaming)."""
    from unite.models.loading import LEGACY_LAYOUT

    if layout != LEGACY_LAYOUT:
        return key
    if key.startswith("model.visual."):
        return key.removeprefix("model.")
    if key.startswith("model.language_model."):
        return "model." + key.removeprefix("model.language_model.")
    return key


def _file_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint folder, read from the safetensors headers (no tensor data)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{index}: cannot read the weight map ({_one_line(error)})") from None
        files = [folder / shard for shard in shards]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif (folder / "pytorch_model.bin").is_file():
        return _bin_shapes(folder / "pytorch_model.bin")
    else:
        raise CheckpointError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        shapes.update(_safetensors_shapes(file))
    return shapes


def _safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    if not file.is_file():
        raise CheckpointError(f"{file}: shard listed in the index is missing")
    try:
        with safe_open(str(file), framework="pt") as tensors:
            return {key: tuple(tensors.get_slice(key).get_shape()) for key in tensors.keys()}
    except Exception as error:  # safetensors raises its own untyped errors for corrupt files
        raise CheckpointError(f"{file}: cannot read the tensor header ({_one_line(error)})") from None


def _bin_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch.load raises pickle, zip and runtime errors for bad files
        raise CheckpointError(f"{file}: cannot read ({_one_line(error)})") from None
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def _model_shapes(config: Any) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """The tensor shapes of the model ``config`` describes, built on the meta device; and the tied names."""
    import torch
    from transformers.initialization import no_init_weights

    from unite.models.loading import tied_names
    from unite.models.modeling import UniteQwen2VL

    with torch.device("meta"), no_init_weights():
        model = UniteQwen2VL._from_config(config)
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}, tied_names(model)


def _fingerprint_check(folder: Path, base_fingerprint: str | None = None) -> Check:
    from unite.models.loading import weights_fingerprint

    fingerprint = weights_fingerprint(folder, base_fingerprint=base_fingerprint)
    return Check("fingerprint", Status.OK, fingerprint, details={"sha256": fingerprint})


def _tokenizer_check(folder: Path, config: Any) -> Check:
    """The tokenizer loads, holds the prompt and vision special tokens, and agrees with config.json on their ids."""
    from transformers import AutoTokenizer

    if not (folder / "tokenizer.json").is_file() and not (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    ):
        message = f"{folder}: no tokenizer.json (nor vocab.json with merges.txt)"
        return Check("tokenizer", Status.ERROR, message, fix="copy the tokenizer files saved with this checkpoint")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # tokenizer loading raises OSError, ValueError, or library-specific errors
        return Check("tokenizer", Status.ERROR, f"{folder}: cannot be loaded ({_one_line(error)})")
    vocab = tokenizer.get_vocab()
    ids = {token: vocab.get(token) for token in (*VISION_TOKENS.values(), *PROMPT_TOKENS)}
    details = {"class": type(tokenizer).__name__, "size": len(tokenizer), "special_tokens": ids}
    problems = [f"{token} is missing" for token, index in ids.items() if index is None]
    if config is not None:
        problems += [
            f"{token} is {ids[token]} in the tokenizer but {key} is {getattr(config, key, None)} in config.json"
            for key, token in VISION_TOKENS.items()
            if ids[token] is not None and getattr(config, key, None) != ids[token]
        ]
        if len(tokenizer) > config.text_config.vocab_size:
            problems.append(f"{len(tokenizer)} tokens but config.json has {config.text_config.vocab_size} embeddings")
    if problems:
        fix = "use the tokenizer saved with this checkpoint"
        return Check("tokenizer", Status.ERROR, "; ".join(problems), fix=fix, details=details)
    shown = ", ".join(f"{token}={ids[token]}" for token in VISION_TOKENS.values())
    message = f"{type(tokenizer).__name__}, {len(tokenizer)} tokens; vision tokens {shown}"
    return Check("tokenizer", Status.OK, message, details=details)


def _settings_check(folder: Path) -> Check:
    from unite.models.encoder import SETTINGS_FILE
    from unite.settings import EncodingSettings

    path = folder / SETTINGS_FILE
    if path.is_file():
        try:
            settings = EncodingSettings.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as error:  # ConfigError is a ValueError
            return Check("encoding settings", Status.ERROR, f"{path}: cannot be read ({_one_line(error)})")
        source = SETTINGS_FILE
    else:
        settings, source = EncodingSettings(), f"the released defaults (no {SETTINGS_FILE})"
    values = {key: value for key, value in settings.to_dict().items() if key != "prompt_template"}
    shown = ", ".join(f"{key}={value}" for key, value in values.items() if key != "system_prompt")
    return Check("encoding settings", Status.OK, f"from {source}: {shown}", details={"source": source, **values})


def _adapter_checks(folder: Path) -> list[Check]:
    """A LoRA adapter folder: what it adapts, whether peft is there, and the base's own checks when at hand."""
    path = folder / "adapter_config.json"
    try:
        adapter = json.loads(path.read_text())
        base = adapter.get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as error:
        return [Check("adapter", Status.ERROR, f"{path}: cannot be read ({_one_line(error)})")]
    if not base:
        return [Check("adapter", Status.ERROR, f"{path}: no base_model_name_or_path recorded")]
    details = {"base": base, "r": adapter.get("r"), "lora_alpha": adapter.get("lora_alpha")}
    message = f"LoRA adapter (r={adapter.get('r')}, alpha={adapter.get('lora_alpha')}) on base {base}"
    checks = [Check("adapter", Status.OK, message, details=details)]
    problem = _import_problem("peft")
    if problem:
        fix = "pip install 'unite-embed[train]'"
        checks.append(Check("peft", Status.ERROR, f"loading an adapter needs peft ({problem})", fix=fix))
    base_folder, located = _locate(str(base))
    checks.append(replace(located, name="base checkpoint"))
    if base_folder is None:
        return checks
    base_checks = _checkpoint_checks(base_folder)
    checks += [replace(check, name=f"base {check.name}") for check in base_checks]
    base_fingerprint = next((c.details["sha256"] for c in base_checks if c.name == "fingerprint" and c.details), None)
    if base_fingerprint is not None:
        checks += _guarded("fingerprint", _fingerprint_check, folder, base_fingerprint)
    return checks


# -------------------------------------------------------------------------------------------------------- Hub


def check_hub(repo_id: str | None = None, timeout: float = HUB_TIMEOUT) -> Check:
    """Whether the Hugging Face Hub answers for ``repo_id`` (a HEAD of its config.json), within ``timeout``.

    Never contacts the network when offline mode is set (``HF_HUB_OFFLINE``), and never waits longer than
    ``timeout``: the request runs in a background thread that is abandoned if it stalls (a DNS lookup included).
    """
    name = "Hugging Face Hub"
    repo_id = repo_id or _released_checkpoint()
    if _offline():
        return Check(name, Status.INFO, "offline mode is set (HF_HUB_OFFLINE); the network was not used")
    started = time.monotonic()
    try:
        _within(timeout, _head_config, repo_id, timeout)
    except Exception as error:  # huggingface_hub raises many unrelated types for one failure
        return _hub_failure(repo_id, error)
    seconds = time.monotonic() - started
    details = {"repo": repo_id, "seconds": round(seconds, 2)}
    return Check(name, Status.OK, f"reachable ({repo_id} answered in {seconds:.1f} s)", details=details)


def _offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _head_config(repo_id: str, timeout: float) -> Any:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    return get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=timeout)


def _within(seconds: float, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a daemon thread; TimeoutError when it has not returned after ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # handed back to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="unite-doctor-hub", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _hub_failure(repo_id: str, error: Exception) -> Check:
    from huggingface_hub import errors

    name, details = "Hugging Face Hub", {"repo": repo_id, "error": _one_line(error)}
    if isinstance(error, errors.GatedRepoError):
        message = f"reachable, but {repo_id} is gated"
        fix = "accept its terms on huggingface.co and log in (hf auth login, or HF_TOKEN)"
        return Check(name, Status.WARNING, message, fix=fix, details=details)
    if isinstance(error, errors.RepositoryNotFoundError):
        message = f"reachable, but it has no repository {repo_id} (or it is private)"
        fix = "check the name, or log in for a private repository (hf auth login, or HF_TOKEN)"
        return Check(name, Status.ERROR, message, fix=fix, details=details)
    if isinstance(error, errors.EntryNotFoundError):
        return Check(name, Status.WARNING, f"reachable, but {repo_id} has no config.json", details=details)
    message = f"the Hugging Face Hub cannot be reached (offline?): {_one_line(error)}"
    fix = "check the network or proxy (HTTPS_PROXY); set HF_HUB_OFFLINE=1 to work from local folders and the cache"
    return Check(name, Status.WARNING, message, fix=fix, details=details)
