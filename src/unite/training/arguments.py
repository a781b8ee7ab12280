"""The training configuration: typed fields with help, read from YAML and overridden from the command line."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unite.errors import ConfigError
from unite.losses import DEFAULT_TEMPERATURE

__all__ = ["LossDirection", "TrainConfig", "load_config"]

LossDirection = typing.Literal["symmetric", "query_to_candidate"]
_SAMPLERS = ("random", "by_source", "by_modality")


def _field(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 (help text, as in HfArgumentParser)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    """Everything a training run needs; every field can be set in YAML or as ``--field value``."""

    model_name_or_path: str = _field(
        "", "checkpoint to start from: Qwen2-VL-*-Instruct (stage 1) or a merged stage-1 output (stage 2)"
    )
    train_data: list = _field([], "training files; each a path or {path, weight | share, name, format, media_root}")
    media_root: str = _field(
        "", "folder that relative image and video paths resolve against (default: each file's folder)"
    )
    output_dir: str = _field("", "where checkpoints and the final merged model go")
    loss: str = _field("symmetric", "symmetric (stage 1) or query_to_candidate (stage 2)")
    modality_mask: bool = _field(False, "MAMCL: negatives only from candidates of the query's target modality")
    paper_mamcl: bool = _field(
        False, "reproduce the public code's MAMCL exactly (query-to-candidate only, hard negatives unmasked)"
    )
    temperature: float = _field(DEFAULT_TEMPERATURE, "softmax temperature")
    learnable_temperature: bool = _field(False, "learn the temperature")
    hard_negatives: bool = _field(True, "use the records' negatives as extra columns")
    per_device_train_batch_size: int = _field(
        8, "pairs per device per step (in-batch negatives are gathered over all devices)"
    )
    gradient_accumulation_steps: int = _field(1, "accumulate gradients; this does NOT add in-batch negatives")
    gradcache_chunk_size: int = _field(0, "GradCache chunk size in pairs (0 = off): large batches in bounded memory")
    learning_rate: float = _field(1e-4, "peak learning rate")
    lr_scheduler_type: str = _field("cosine", "learning-rate schedule")
    warmup_ratio: float = _field(0.03, "share of the run's optimizer steps used for linear warm-up, in [0, 1)")
    warmup_steps: int = _field(0, "optimizer steps of linear warm-up; when > 0 it takes precedence over warmup_ratio")
    adam_beta2: float = _field(0.999, "AdamW beta2 (second-moment decay); 0.98 steadies short or small runs")
    weight_decay: float = _field(0.0, "weight decay")
    max_grad_norm: float = _field(1.0, "clip the global gradient norm to this value before each step (0: no clipping)")
    num_train_epochs: float = _field(1.0, "epochs (ignored when max_steps > 0)")
    max_steps: int = _field(-1, "stop after this many optimizer steps (-1: run the epochs)")
    lora: bool = _field(True, "train LoRA adapters on the language model's linear layers (else full fine-tuning)")
    lora_r: int = _field(8, "LoRA rank")
    lora_alpha: int = _field(16, "LoRA alpha")
    lora_dropout: float = _field(0.05, "LoRA dropout")
    train_vision: bool = _field(False, "also train the vision tower (LoRA on its linear layers, or fully)")
    gradient_checkpointing: bool = _field(True, "recompute activations in backward to save memory")
    bf16: bool = _field(False, "bfloat16 weights and compute (use on GPUs)")
    seed: int = _field(42, "seed of sampling, shuffling, dropout and initialisation")
    sampler: str = _field("random", "random, by_source (batches from one source) or by_modality (one target modality)")
    on_bad_record: str = _field("raise", "raise at a bad record, or skip it with a warning (counted and reported)")
    video_fps: float = _field(1.0, "video frames per second")
    video_min_frames: int = _field(4, "fewest frames per video")
    video_max_frames: int = _field(12, "most frames per video")
    video_max_pixels: int = _field(240 * 320, "loader pixel bound of video frames")
    image_min_pixels: int = _field(256 * 28 * 28, "processor lower pixel bound")
    image_max_pixels: int = _field(1280 * 28 * 28, "processor upper pixel bound")
    max_length: int = _field(2048, "longest token sequence; longer items are cut from the left outside vision blocks")
    position_scheme: str = _field("sequential", "sequential (released models) or mrope")
    logging_steps: int = _field(10, "log every N steps")
    save_steps: int = _field(500, "checkpoint every N steps")
    save_total_limit: int = _field(2, "keep at most N checkpoints")
    dataloader_num_workers: int = _field(2, "data loading processes (kept alive across epochs)")
    deepspeed: str = _field("", "DeepSpeed config JSON (e.g. recipes/deepspeed/zero1.json)")
    fsdp: str = _field("", "FSDP options for the Hugging Face Trainer, e.g. 'full_shard auto_wrap'")
    report_to: str = _field("none", "tensorboard, wandb, or none")
    resume_from_checkpoint: str = _field("", "a checkpoint folder to resume from, or 'latest'")
    device: str = _field("", "cpu or cuda (default: cuda when available)")
    merge_lora: bool = _field(
        True, "merge LoRA into the final checkpoint (else save the adapter with its base recorded)"
    )

    def __post_init__(self) -> None:
        if self.loss not in typing.get_args(LossDirection):
            raise ConfigError(f"loss must be symmetric or query_to_candidate, got {self.loss!r}")
        if self.sampler not in _SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(_SAMPLERS)}, got {self.sampler!r}")
        if self.on_bad_record not in ("raise", "skip"):
            raise ConfigError(f"on_bad_record must be raise or skip, got {self.on_bad_record!r}")
        if self.gradcache_chunk_size < 0 or self.per_device_train_batch_size < 1:
            raise ConfigError("gradcache_chunk_size must be >= 0 and per_device_train_batch_size >= 1")
        if self.deepspeed and self.fsdp:
            raise ConfigError("choose DeepSpeed or FSDP, not both")
        if self.paper_mamcl and not self.modality_mask:
            raise ConfigError("paper_mamcl only makes sense with modality_mask: true")
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not 0.0 <= self.adam_beta2 < 1.0:
            raise ConfigError(f"adam_beta2 must be in [0, 1), got {self.adam_beta2!r}")
        if self.max_grad_norm < 0:
            raise ConfigError(f"max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm!r}")

    @property
    def warmup(self) -> float:
        """The warm-up as the Trainer reads it: whole steps (``warmup_steps`` > 0) or a ratio of the run below 1."""
        return self.warmup_steps if self.warmup_steps > 0 else self.warmup_ratio

    def check_ready(self) -> None:
        """Fields a run cannot start without."""
        missing = [name for name in ("model_name_or_path", "output_dir") if not getattr(self, name)]
        if not self.train_data:
            missing.append("train_data")
        if missing:
            raise ConfigError(f"missing required setting(s): {', '.join(missing)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if kind in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if kind in (float, "float"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if kind in (list, "list"):
        return list(value) if isinstance(value, (list, tuple)) else [value]
    return str(value)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML recipe and apply overrides; unknown fields and bad values raise :class:`ConfigError`."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: recipe not found") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML ({getattr(error, 'problem', error)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of field: value")
        data.update(loaded or {})
    data.update(overrides or {})
    kinds = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}{f' in {path}' if path else ''}")
    values = {name: _coerce(name, kinds[name], value) for name, value in data.items()}
    return TrainConfig(**values)
