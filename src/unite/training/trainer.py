"""The Hugging Face Trainer, taught contrastive batches, gathered negatives and GradCache.

Distribution (DDP, DeepSpeed ZeRO 0-3, FSDP, several nodes with torchrun) comes from the Trainer and accelerate;
this file only decides how a batch becomes a loss and a backward pass.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from unite.data.collator import Features, ItemProcessor
from unite.errors import ConfigError
from unite.losses import ContrastiveLoss, gather_batch
from unite.losses.distributed import world_size
from unite.models.encoder import UniteEncoder
from unite.training.arguments import TrainConfig
from unite.training.data import PairCollator, PairDataset, PlannedSampler, TrainSource
from unite.training.gradcache import RngState, chunks
from unite.training.model import build_training_model, training_settings

logger = logging.getLogger(__name__)

__all__ = ["UniteTrainer", "train"]

#: accelerate builds FSDP only for a process group of accelerators (torchrun on GPUs, even one); on the CPU, or
#: without torchrun, it drops the plugin and would train unsharded. FSDP1 itself refuses the CPU ("FSDP needs a
#: non-CPU accelerator device"); FSDP2's fully_shard runs on gloo, but only when applied by hand.
_FSDP_NOT_APPLIED = (
    "fsdp is set but the engine would not shard: FSDP needs GPUs and a torchrun launch "
    "(torchrun --nproc_per_node N -m unite.cli.main train ...); on the CPU remove fsdp to train with DDP"
)

_LOGGED = ("loss_query_to_candidate", "loss_candidate_to_query", "accuracy", "temperature", "masked_fraction")


class UniteTrainer(Trainer):
    """Trainer whose step embeds queries, candidates and hard negatives, gathers them and applies the loss.

    Args:
        loss_module: the contrastive loss.
        processor: collates per-side feature lists into model inputs.
        gradcache_chunk_size: GradCache chunk size in items (0: plain backward).
        group_by: ``none``, ``source`` or ``modality`` batches (see :class:`PlannedSampler`).
    """

    def __init__(
        self,
        *args: Any,
        loss_module: ContrastiveLoss,
        processor: ItemProcessor,
        gradcache_chunk_size: int = 0,
        group_by: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_module = loss_module.to(self.args.device)
        self.processor = processor
        self.gradcache_chunk_size = gradcache_chunk_size
        self.group_by = group_by
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self.skipped = 0
        self.gathered_pairs = 0  # pairs in the last contrastive batch gathered over every rank
        if self.args.fsdp and not self.is_fsdp_enabled:
            raise ConfigError(_FSDP_NOT_APPLIED)
        if gradcache_chunk_size and self.is_deepspeed_enabled:
            raise ConfigError(
                "GradCache runs several backward passes per step, which DeepSpeed's engine does not allow; "
                "use DDP or FSDP with gradcache_chunk_size, or set it to 0"
            )

    # ---------------------------------------------------------------------------------------------- data

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> PlannedSampler:
        return PlannedSampler(self.train_dataset, self.args.seed, self.args.per_device_train_batch_size, self.group_by)

    def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        optimizer = super().create_optimizer(*args, **kwargs)
        learnable = [p for p in self.loss_module.parameters() if p.requires_grad]
        if learnable and not any(
            p is q for group in optimizer.param_groups for p in learnable for q in group["params"]
        ):
            optimizer.add_param_group({"params": learnable, "weight_decay": 0.0})
        return optimizer

    # --------------------------------------------------------------------------------------------- steps

    def embed(self, model: torch.nn.Module, features: list[Features]) -> torch.Tensor:
        """(N, D) embeddings of collated ``features`` on the training device."""
        batch = self.processor.collate(features)
        batch = {key: value.to(self.args.device) for key, value in batch.items()}
        dtype = next(p for p in model.parameters()).dtype
        for key in ("pixel_values", "pixel_values_videos"):
            if key in batch:
                batch[key] = batch[key].to(dtype)
        return model(**batch)

    def loss_terms(self, embeddings: dict[str, torch.Tensor], inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Gather the batch over ranks and apply the loss (see unite.losses.distributed for the convention)."""
        device = embeddings["query"].device
        negative = embeddings.get("negative")
        gathered = gather_batch(
            embeddings["query"],
            embeddings["candidate"],
            inputs["ids"].to(device),
            inputs["target_modality"].to(device),
            negative,
            inputs["negative_owner"].to(device) if negative is not None else None,
        )
        self.gathered_pairs = int(gathered["query"].shape[0])
        return self.loss_module(**gathered)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        terms = self.loss_terms(self._embed_sides(model, inputs), inputs)
        return (terms["loss"], terms) if return_outputs else terms["loss"]

    def _embed_sides(self, model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {side: self.embed(model, inputs[side]) for side in self._sides(inputs)}

    @staticmethod
    def _sides(inputs: dict[str, Any]) -> list[str]:
        return ["query", "candidate"] + (["negative"] if inputs.get("negative") else [])

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """One micro-step. The loss is multiplied by the world size for backward (engines average gradients over
        ranks, and every rank computes the loss of the whole global batch); the value returned for logging is not."""
        model.train()
        self.skipped += int(inputs.pop("skipped", 0))
        inputs.pop("sources", None)
        if not inputs["query"]:
            raise ConfigError("a whole batch was skipped; check the skipped-records report")
        accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        scale = world_size() / accumulation
        kwargs = {"scale_wrt_gas": False} if self.is_deepspeed_enabled else {}
        if self.gradcache_chunk_size:
            terms = self._gradcache_step(model, inputs, scale, kwargs)
        else:
            with self.compute_loss_context_manager():
                terms = self.loss_terms(self._embed_sides(model, inputs), inputs)
            self.accelerator.backward(terms["loss"] * scale, **kwargs)
        self._record(terms)
        return terms["loss"].detach() / accumulation

    def _gradcache_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], scale: float, kwargs: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        pieces = [
            (side, chunk) for side in self._sides(inputs) for chunk in chunks(inputs[side], self.gradcache_chunk_size)
        ]
        states, cached = [], {}
        with torch.no_grad():
            for side, chunk in pieces:
                states.append(RngState())
                cached.setdefault(side, []).append(self.embed(model, chunk))
        leaves = {side: torch.cat(parts).detach().requires_grad_(True) for side, parts in cached.items()}
        with self.compute_loss_context_manager():
            terms = self.loss_terms(leaves, inputs)
        (terms["loss"] * scale).backward()
        offsets = dict.fromkeys(leaves, 0)
        for number, ((side, chunk), state) in enumerate(zip(pieces, states)):
            last = number == len(pieces) - 1
            sync = nullcontext() if last else self.accelerator.no_sync(model)
            rows = slice(offsets[side], offsets[side] + len(chunk))
            offsets[side] += len(chunk)
            with sync, state.replay(), self.compute_loss_context_manager():
                embeddings = self.embed(model, chunk)
                surrogate = (embeddings * leaves[side].grad[rows].to(embeddings.dtype)).sum()
                self.accelerator.backward(surrogate, **kwargs)
        return terms

    # ------------------------------------------------------------------------------------------- logging

    def _record(self, terms: dict[str, torch.Tensor]) -> None:
        # Summed as detached tensors and read at log time: a float() per term would wait for the GPU every step.
        for name in _LOGGED:
            if name in terms:
                value = terms[name].detach().float()
                self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._count += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._count and "loss" in logs:
            logs.update({name: float(total) / self._count for name, total in self._sums.items()})
            logs["skipped_records"] = self.skipped
            self._sums, self._count = {}, 0
        super().log(logs, *args, **kwargs)


class _EpochShare(TrainerCallback):
    """Logs the realised share of each target modality at the start of every epoch."""

    def __init__(self, dataset: PairDataset, seed: int, batch_size: int, group_by: str) -> None:
        self.sampler = PlannedSampler(dataset, seed, batch_size, group_by)
        self.shares: list[dict[str, float]] = []

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.sampler.set_epoch(int(state.epoch or 0))
        share = self.sampler.dataset.modality_share(self.sampler.order())
        self.shares.append(share)
        logger.warning(
            "epoch %d target-modality share: %s",
            len(self.shares) - 1,
            ", ".join(f"{name} {value:.1%}" for name, value in share.items()),
        )


def _reporters(name: str) -> list[str]:
    """The logging integration asked for, when its package is installed (else a warning and console only)."""
    if name == "none":
        return []
    import importlib.util

    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name, name)
    if importlib.util.find_spec(package) is None and not (
        name == "tensorboard" and importlib.util.find_spec("tensorboardX")
    ):
        logger.warning("report_to=%s but %s is not installed; logging to the console only", name, package)
        return []
    return [name]


def training_arguments(config: TrainConfig) -> TrainingArguments:
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup,
        adam_beta2=config.adam_beta2,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        bf16=config.bf16,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        dataloader_num_workers=config.dataloader_num_workers,
        # Workers live across epochs: re-forking them at every epoch start stalled the first step of each epoch.
        dataloader_persistent_workers=config.dataloader_num_workers > 0,
        # Batches are lists of per-item features, collated in the step; pinning them would copy memory for nothing.
        dataloader_pin_memory=False,
        deepspeed=config.deepspeed or None,
        fsdp=config.fsdp or "",
        report_to=_reporters(config.report_to),
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        use_cpu=config.device == "cpu",
        disable_tqdm=False,
    )


def train(config: TrainConfig, callbacks: list[TrainerCallback] | None = None) -> dict[str, Any]:
    """Run one training from a configuration; returns a summary (steps, final loss, output paths, skips)."""
    config.check_ready()
    if config.gradcache_chunk_size and config.deepspeed:
        raise ConfigError("gradcache_chunk_size needs DDP or FSDP; DeepSpeed allows one backward pass per step")
    if config.fsdp and (config.device == "cpu" or not torch.cuda.is_available()):
        raise ConfigError(_FSDP_NOT_APPLIED)
    if config.max_steps > 0 and config.num_train_epochs != 1.0:
        raise ConfigError("set max_steps or num_train_epochs, not both (max_steps would silently win)")
    set_seed(config.seed)  # LoRA initialisation and dropout are reproducible from the seed
    model, encoder = build_training_model(config)
    settings = training_settings(config, encoder.settings)
    processor = ItemProcessor(encoder.tokenizer, settings)
    sources = [TrainSource.parse(entry) for entry in config.train_data]
    dataset = PairDataset(sources, processor, config.media_root or None, config.on_bad_record, config.hard_negatives)
    loss = ContrastiveLoss(
        temperature=config.temperature,
        symmetric=config.loss == "symmetric",
        modality_mask=config.modality_mask,
        paper_variant=config.paper_mamcl,
        learnable_temperature=config.learnable_temperature,
    )
    group_by = {"random": "none", "by_source": "source", "by_modality": "modality"}[config.sampler]
    args = training_arguments(config)
    share = _EpochShare(dataset, config.seed, config.per_device_train_batch_size, group_by)
    trainer = UniteTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=PairCollator(),
        loss_module=loss,
        processor=processor,
        gradcache_chunk_size=config.gradcache_chunk_size,
        group_by=group_by,
        callbacks=[share, *(callbacks or [])],
    )
    resume = config.resume_from_checkpoint or None
    if resume == "latest":
        resume = True
    result = trainer.train(resume_from_checkpoint=resume)
    output = Path(config.output_dir)
    summary = {
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "skipped_records": len(dataset.bad),
        "modality_share_per_epoch": share.shares,
        "output_dir": str(output),
        "world_size": world_size(),
        "gathered_pairs": trainer.gathered_pairs,
    }
    if trainer.is_world_process_zero():
        _save_final(trainer.model, encoder, config, output)
        if len(dataset.bad):
            dataset.bad.write(output / "skipped_records.jsonl")
        (output / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (output / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _save_final(model: torch.nn.Module, encoder: UniteEncoder, config: TrainConfig, output: Path) -> None:
    """A checkpoint ``unite encode --model OUTPUT_DIR`` loads: LoRA merged (default), or the adapter with its base."""
    model = model.to("cpu")
    if config.lora:
        model.save_pretrained(output / "adapter")
        if not config.merge_lora:
            model.save_pretrained(output)  # adapter_config.json records the base; from_pretrained merges on load
            return
        model = model.merge_and_unload()
    model.train(False)
    # The trained model's image bounds are the recipe's; video sampling keeps the start checkpoint's defaults.
    settings = encoder.settings.replace(
        image_min_pixels=config.image_min_pixels, image_max_pixels=config.image_max_pixels
    )
    UniteEncoder(model, encoder.tokenizer, settings, name_or_path=str(output)).save_pretrained(output)
