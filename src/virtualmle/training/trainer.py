"""`train`: one trial, from a `SequenceData` and a `TrainConfig` to a `TrainResult`.

Model selection (early stopping, the best epoch) uses validation metrics only; the test split is
evaluated once, for the best-validation weights, after training stops.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from virtualmle.data import SequenceData, profile_dataset
from virtualmle.errors import DataError, DivergedError
from virtualmle.models import ModelConfig, SequentialRecommender, build_model
from virtualmle.training import checkpoint as ckpt
from virtualmle.training.batching import TrainBatches
from virtualmle.training.config import TrainConfig
from virtualmle.training.display import EpochDisplay
from virtualmle.training.evaluation import build_eval_batches, evaluate, resolve_eval_mask
from virtualmle.training.losses import LOSSES, LossContext, NegativeSampler
from virtualmle.training.priors import ScorePriors
from virtualmle.training.schedule import make_scheduler

logger = logging.getLogger(__name__)


@dataclass
class EpochLog:
    """What one epoch produced; passed to `on_epoch` after validation."""

    epoch: int  # 1-based
    train_loss: float  # mean loss over the epoch's batches
    valid: dict[str, float]  # validation metrics after this epoch
    seconds: float  # training + validation time of this epoch
    metric: str = "ndcg@10"  # the selection metric's name
    is_best: bool = False  # best validation `metric` so far

    @property
    def score(self) -> float:
        """The selection metric's value."""
        return self.valid[self.metric]

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "valid": dict(self.valid),
            "seconds": self.seconds,
        }


@dataclass
class TrainResult:
    """A finished trial. `to_json()` is the `virtualmle train --output` document."""

    config: TrainConfig
    profile: dict[str, Any]
    num_params: int
    epochs: list[EpochLog]
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    peak_memory_mb: float
    stopped: str  # "early_stop" | "max_epochs" | "pruned"
    eval_mask: str = "history"  # the resolved evaluation mask both splits were ranked with
    resumed_epoch: int = 0  # the checkpoint's last epoch this run continued from (0 = from scratch)
    discarded: bool = False  # not kept (`train(discarded=..., partial=...)`): test not scored
    # The trained model holding the best-validation weights (what --save writes); not in to_json.
    model: SequentialRecommender | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_params(),
            "profile": self.profile,
            "num_params": self.num_params,
            "epochs": [e.to_json() for e in self.epochs],
            "best_epoch": self.best_epoch,
            "valid": dict(self.valid),
            "test": dict(self.test),
            "seconds": self.seconds,
            "peak_memory_mb": self.peak_memory_mb,
            "stopped": self.stopped,
            "eval_mask": self.eval_mask,
            "resumed_epoch": self.resumed_epoch,
            "discarded": self.discarded,
        }


def model_config(config: TrainConfig, num_items: int) -> ModelConfig:
    """The architecture part of a trial configuration."""
    names = ModelConfig.__dataclass_fields__.keys() - {"num_items"}
    return ModelConfig(num_items=num_items, **{n: getattr(config, n) for n in names})


def seed_everything(seed: int) -> None:
    """Seed torch (init, dropout) and numpy; batching and negatives get their own generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    # beta2 0.98 by default, as in SASRec.pytorch and HSTU; CE-SCE-LLMRec's runs use 0.999.
    # The fused kernel (one pass over each parameter instead of about ten) is 2-3x faster per step
    # on CPU, where the item table's update is a tenth of a release-default epoch; where it is
    # unsupported (an old torch, some devices) the foreach implementation is used.
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    kwargs = {"lr": config.lr, "betas": (0.9, config.adam_beta2), "eps": 1e-8, "weight_decay": config.weight_decay}
    try:
        return cls(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(model.parameters(), foreach=True, **kwargs)


def xavier_init(model: torch.nn.Module, *, keep_ffn: bool = False) -> None:
    """Xavier-normal item/position embeddings and Linear weights, zero biases, zero padding rows.

    The published SASRec code (SASRec.pytorch, CE-SCE-LLMRec) initialises this way; the item
    embedding then starts at std sqrt(2 / (N + D)) (0.013 on Beauty) instead of 0.02, and the
    position embedding at sqrt(2 / (max_len + D)) (0.13) instead of 0.02. With `keep_ffn` the
    feed-forward keeps torch's default init (`init=xavier_ffn_default`): CE-SCE-LLMRec's
    feed-forward is made of Conv1d layers, which its xavier pass skips, and a kernel-1 Conv1d's
    default init is nn.Linear's (uniform weights of std 1/sqrt(3 fan_in), uniform biases).
    """
    for name, module in model.named_modules():
        if keep_ffn and ".ffn." in f".{name}.":
            continue
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.Embedding):
            torch.nn.init.xavier_normal_(module.weight)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()


def resets_patience(score: float, reference: float, min_delta: float) -> bool:
    """Whether a validation `score` resets early stopping's patience: it beats `reference` (the
    score that last reset it) by more than `min_delta` of it. Any gain counts with min_delta 0."""
    if not math.isfinite(reference):
        return score > reference
    return score > reference + min_delta * abs(reference)


def _check_finite(value: float, what: str, epoch: int, step: int, config: TrainConfig) -> None:
    if not math.isfinite(value):
        raise DivergedError(
            f"training diverged: {what} became {value} at epoch {epoch}, batch {step} "
            f"(lr={config.lr:g}, loss={config.loss})"
        )


@dataclass
class RunSetup:
    """Everything one training run trains with, built in a fixed order from the seed: the batches,
    the initialised model, its optimizer and schedule, the loss context and both generators.
    `train` builds one; the speed benchmarks build the same one to time its epochs."""

    batches: TrainBatches
    model: SequentialRecommender
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss_ctx: LossContext
    rng: np.random.Generator  # batch composition and order
    gen: torch.Generator  # negatives
    cut: bool = False  # the last epoch was cut short by a stop request

    def train_epoch(self, config: TrainConfig, epoch: int, display: EpochDisplay | None = None,
                    stop: Callable[[], bool] | None = None) -> float:
        """One epoch over the batches (ended after the current batch when `stop()` says so:
        `cut`); the mean training loss."""
        loss, self.cut = _train_epoch(self.model, self.batches, self.rng, self.optimizer, config, self.loss_ctx,
                                      epoch, display, self.scheduler, stop)
        return loss


def setup_run(data: SequenceData, config: TrainConfig, device: str | torch.device = "cpu") -> RunSetup:
    """The seeded batches, model, optimizer, schedule and loss of a run of `config` on `data`.

    Raises:
        DataError: no user has the 4+ items a training sample needs.
    """
    dev = torch.device(device)
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator(device=dev).manual_seed(config.seed)
    batches = TrainBatches(
        data, config.train_window, config.batch_size,
        last_only=config.train_targets == "last", device=dev, order=config.batch_order,
    )
    if batches.num_samples == 0:
        raise DataError(f"{data.name}: no user has the 4+ items a training sample needs")
    model: SequentialRecommender = build_model(config.model, model_config(config, data.num_items))
    if config.init != "normal":
        xavier_init(model, keep_ffn=config.init == "xavier_ffn_default")
    model = model.to(dev)
    optimizer = _make_optimizer(config, model)
    loss_ctx = LossContext(
        negatives=config.negatives, gen=gen, logq=config.logq, gbce_t=config.gbce_t, ce_chunk=config.ce_chunk,
        bf16=config.precision == "bf16",
        sampler=NegativeSampler.from_sequences(config.neg_sampler, data.sequences, data.num_items).to(dev),
    )
    scheduler = make_scheduler(
        optimizer, schedule=config.lr_schedule, total_steps=config.schedule_horizon * len(batches),
        warmup_steps=round(config.warmup_epochs * len(batches)),
    )
    return RunSetup(batches, model, optimizer, scheduler, loss_ctx, rng, gen)


def train(
    data: SequenceData,
    config: TrainConfig,
    *,
    device: str = "cpu",
    on_epoch: Callable[[EpochLog], bool | None] | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    stop_file: str | Path | None = None,
    discarded: Callable[[], bool] | None = None,
    partial: bool = False,
) -> TrainResult:
    """Train `config` on `data`, select the best epoch on validation, test it once.

    Args:
        data: the sequences (leave-one-out splits are derived here).
        config: the trial configuration.
        device: torch device string.
        on_epoch: called after each epoch's validation; returning True stops training
            ("pruned").
        progress: show a rich progress display (batches per epoch and one line per epoch).
        checkpoint: a file the run's state is written to after every validation; when it
            exists, training continues from it (training/checkpoint.py: only `max_epochs`,
            `patience`, `min_delta` and `eval_every` may differ from the run that wrote it).
        stop_file: when this file appears, the epoch ends after its current batch, the model is
            validated and training stops ("pruned"); a search writes it when its compute budget
            is spent, or when its method gives the run up (then `discarded` says so and the cut
            epoch is not validated). A cut epoch writes no checkpoint (the last one stays
            resumable).
        discarded: asked when training was stopped early ("pruned"); True says the run will not
            be kept (a method or pruner gave up on it), so its test split is not scored
            (`TrainResult.test` is empty and `TrainResult.discarded` set).
        partial: the run is a screen, the first epochs of a longer one, to be compared and never
            kept when it runs its epochs (it is discarded as above); early stopping makes it a full
            run, and a stop that keeps it (the compute budget) a run cut at the deadline.
    Raises:
        DivergedError: the loss or the gradient norm became NaN / infinite.
        CheckpointError: `checkpoint` belongs to another configuration or dataset.
    """
    start = time.perf_counter()
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    run = setup_run(data, config, dev)
    stop = (lambda: os.path.exists(stop_file)) if stop_file is not None else None
    model, optimizer, scheduler, rng, gen = run.model, run.optimizer, run.scheduler, run.rng, run.gen
    profile = profile_dataset(data, max_len=config.max_len)
    for warning in profile["warnings"]:
        logger.warning(warning)
    eval_mask = resolve_eval_mask(config.eval_mask, data)
    valid_batches = build_eval_batches(data, "valid", config.max_len, dev, eval_mask)
    # Train-split priors, added to the scores at validation and test alike; None when all off.
    priors = ScorePriors.from_config(data, config)
    logger.info("training %s on %s: %d samples, %d params", config.model, data.name,
                run.batches.num_samples, model.num_params())

    logs: list[EpochLog] = []
    best_score, best_epoch, best_state = -math.inf, 0, copy.deepcopy(model.state_dict())
    stopped = "max_epochs"
    since_best = 0  # validations since patience was last reset (a gain of more than min_delta)
    ref_score = -math.inf  # the score that last reset it
    resumed = 0
    blob = ckpt.load(checkpoint, config=config, data=data) if checkpoint is not None else None
    if blob is not None:
        state = ckpt.restore(blob, model=model, optimizer=optimizer, scheduler=scheduler, rng=rng, gen=gen)
        logs = [EpochLog(e["epoch"], e["train_loss"], e["valid"], e["seconds"], config.metric, e["is_best"])
                for e in state.logs]
        best_score, best_epoch, best_state = state.best_score, state.best_epoch, state.best_state
        since_best, resumed = state.since_best, state.epoch
        ref_score = state.ref_score
        logger.info("resumed from %s at epoch %d (best %d)", checkpoint, resumed, best_epoch)
        if config.patience and since_best >= config.patience:
            stopped = "early_stop"
    display = EpochDisplay(config, len(run.batches)) if progress and stopped == "max_epochs" else None
    try:
        t0 = time.perf_counter()
        first = resumed + 1 if stopped == "max_epochs" else config.max_epochs + 1
        for epoch in range(first, config.max_epochs + 1):
            train_loss = run.train_epoch(config, epoch, display, stop)
            if run.cut and discarded is not None and discarded():
                # Stopped mid-epoch by a method or pruner that gives the run up: validating the
                # cut epoch would only cost time (a large model's validation can take minutes).
                stopped = "pruned"
                break
            # Validate every `eval_every` epochs, after the last and after a cut one; a log covers
            # the epochs since the previous validation (its seconds) and reports this epoch's loss.
            if epoch % config.eval_every and epoch != config.max_epochs and not run.cut:
                continue
            valid = evaluate(model, valid_batches, priors)
            log = EpochLog(epoch, train_loss, valid, time.perf_counter() - t0, config.metric)
            t0 = time.perf_counter()
            if log.score > best_score:
                best_score, best_epoch, log.is_best = log.score, epoch, True
                best_state = copy.deepcopy(model.state_dict())
            # (Only a new best resets it: a resume with a lower min_delta keeps "any gain" a gain.)
            if log.is_best and resets_patience(log.score, ref_score, config.min_delta):
                ref_score, since_best = log.score, 0
            else:
                since_best += 1
            logs.append(log)
            if checkpoint is not None and not run.cut:
                ckpt.save(checkpoint, config=config, data=data, model=model, optimizer=optimizer,
                          scheduler=scheduler, rng=rng, gen=gen, state=ckpt.RunState(
                              epoch, [{**e.to_json(), "is_best": e.is_best} for e in logs],
                              best_score, best_epoch, best_state, since_best, ref_score))
            if display:
                display.epoch_done(log)
            if (on_epoch is not None and on_epoch(log)) or run.cut:
                stopped = "pruned"
                break
            if config.patience and since_best >= config.patience:
                stopped = "early_stop"
                break
    finally:
        if display:
            display.close()

    model.load_state_dict(best_state)
    # A screen that ran its epochs is compared, never kept; one the budget cut may still be the
    # study's choice (it holds its best epoch's weights, as any run cut at the deadline does).
    dropped = (partial and stopped == "max_epochs") or (
        stopped == "pruned" and discarded is not None and discarded())
    best_valid = next((e.valid for e in logs if e.epoch == best_epoch), None)
    if best_valid is None:  # (a run given up before its first validation has none)
        best_valid = {} if dropped else evaluate(model, valid_batches, priors)
    test = {} if dropped else evaluate(model, build_eval_batches(data, "test", config.max_len, dev, eval_mask), priors)
    return TrainResult(
        config=config,
        profile=profile,
        num_params=model.num_params(),
        epochs=logs,
        best_epoch=best_epoch,
        valid=best_valid,
        test=test,
        seconds=time.perf_counter() - start,
        peak_memory_mb=_peak_memory_mb(dev),
        stopped=stopped,
        eval_mask=eval_mask,
        resumed_epoch=resumed,
        model=model.eval(),
        discarded=dropped,
    )


def _train_epoch(
    model: SequentialRecommender,
    batches: TrainBatches,
    rng: np.random.Generator,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    loss_ctx: LossContext,
    epoch: int,
    display: EpochDisplay | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[float, bool]:
    """One pass over the training batches: (mean batch loss, whether `stop()` cut it short)."""
    model.train()
    loss_fn = LOSSES[config.loss]
    # The norm is computed even without clipping: a non-finite norm is divergence.
    max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
    total, count = 0.0, 0
    # precision=bf16: the encoder's matmuls under autocast, the full softmax's in its own bf16
    # kernels (losses.py); the loss value, gradients and optimizer state stay float32.
    device_type = next(model.parameters()).device.type
    bf16 = config.precision == "bf16"
    for step, (items, ts, targets) in enumerate(batches.epoch(rng), 1):
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            states = model.encode(items, ts)  # (B, T, D)
            sel = targets != 0  # (B, T) supervised positions
            loss = loss_fn(states[sel], targets[sel], model, loss_ctx).float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        value = loss.item()
        _check_finite(value, "the loss", epoch, step, config)
        _check_finite(float(norm), "the gradient norm", epoch, step, config)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total, count = total + value, count + 1
        if display:
            display.step(epoch, value)
        if stop is not None and stop():
            return total / count, True
    return total / max(count, 1), False
