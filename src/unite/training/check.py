"""``unite data check``: validate a training dataset before a run, and estimate its memory needs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unite.data.collator import ItemProcessor
from unite.errors import UniteError
from unite.training.data import BadRecords, PairRecord, TrainSource, _modality_name, read_source

__all__ = ["DataReport", "check_dataset", "estimate_memory_gib"]


@dataclass
class DataReport:
    """What ``check_dataset`` found."""

    records: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    target_modality_share: dict[str, float] = field(default_factory=dict)
    per_source: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, dict[str, float]] = field(default_factory=dict)
    memory_gib: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "errors": self.errors,
            "per_source": self.per_source,
            "target_modality_share": self.target_modality_share,
            "tokens": self.tokens,
            "estimated_peak_memory_gib": self.memory_gib,
        }


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {
        "min": int(array.min()),
        "median": float(np.median(array)),
        "p95": float(np.percentile(array, 95)),
        "max": int(array.max()),
        "mean": float(array.mean()),
    }


def check_dataset(
    files: list[str],
    processor: ItemProcessor,
    media_root: str | Path | None = None,
    limit: int | None = None,
    config: Any = None,
    batch_size: int = 64,
) -> DataReport:
    """Parse every record, decode every medium (of the first ``limit`` records), count tokens per side.

    Args:
        files: training files (UNITE pairs or MMEB-train, JSON or JSON lines).
        processor: the tokenizer and encoding settings (frames, pixel bounds) the run will use.
        media_root: folder of relative media paths.
        limit: decode and tokenize only this many records per file (all are still parsed).
        config: the model config (``Qwen2VLConfig``) for the memory estimate; ``None`` skips it.
        batch_size: pairs per device for the memory estimate.
    """
    report = DataReport()
    bad = BadRecords()
    records: list[PairRecord] = []
    for file in files:
        source = TrainSource.parse(file)
        try:
            found = read_source(source, media_root or "", "skip", bad)
        except UniteError as error:
            report.errors.append({"record": str(file), "error": str(error)})
            continue
        report.per_source[source.label] = len(found)
        records.extend(found[:limit] if limit else found)
    report.errors.extend(bad.entries)
    report.records = sum(report.per_source.values())
    shares = Counter(_modality_name(record.target_modality) for record in records)
    report.target_modality_share = {name: count / max(1, len(records)) for name, count in sorted(shares.items())}
    lengths: dict[str, dict[str, list[int]]] = {
        side: {"text": [], "visual": [], "total": []} for side in ("query", "candidate", "negative")
    }
    for record in records:
        for side, item in [("query", record.query), ("candidate", record.candidate)] + [
            ("negative", n) for n in record.negatives
        ]:
            try:
                features = processor.prepare(item)
            except UniteError as error:
                report.errors.append({"record": record.id, "side": side, "error": str(error)})
                continue
            visual = sum(v.num_tokens for v in features.images + features.videos)
            lengths[side]["visual"].append(visual)
            lengths[side]["text"].append(len(features.input_ids) - visual)
            lengths[side]["total"].append(len(features.input_ids))
    report.tokens = {
        f"{side}.{kind}": _stats(values) for side, kinds in lengths.items() for kind, values in kinds.items() if values
    }
    if config is not None:
        sides = {side: int(np.percentile(kinds["total"], 95)) for side, kinds in lengths.items() if kinds["total"]}
        report.memory_gib = estimate_memory_gib(config, batch_size, sides)
    return report


def estimate_memory_gib(
    config: Any, batch_size: int, side_lengths: dict[str, int], bytes_per_value: int = 2
) -> dict[str, float]:
    """A rough peak-memory estimate per device for LoRA training in bf16 with gradient checkpointing.

    weights: every parameter in bf16. activations: the decoder keeps each layer's input (tokens x hidden) for the
    recomputation, plus the working set of one layer recomputed in backward (about tokens x (10 hidden +
    3 intermediate) values); ``tokens`` is ``batch_size`` x the 95th-percentile length of each side, padded per
    side. Optimizer states of LoRA are negligible. Real peaks vary with the attention kernel and the allocator:
    use the estimate to choose between batch sizes and GradCache chunk sizes, then measure.
    """
    text = config.text_config
    vision = config.vision_config
    hidden, layers, inter = text.hidden_size, text.num_hidden_layers, text.intermediate_size
    params = text.vocab_size * hidden + layers * (4 * hidden * hidden + 3 * hidden * inter)
    params += vision.depth * 12 * vision.embed_dim**2
    tokens = batch_size * sum(side_lengths.values())
    kept = tokens * hidden * layers * bytes_per_value
    working = tokens * (10 * hidden + 3 * inter) * bytes_per_value
    weights = params * bytes_per_value
    gib = 2**30
    return {
        "weights": weights / gib,
        "activations": (kept + working) / gib,
        "total": (weights + kept + working) / gib,
        "batch_size": batch_size,
        "tokens_per_step": tokens,
    }
