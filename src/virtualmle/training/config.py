"""`TrainConfig`: one trial's flat, validated configuration.

The flat parameter names are a contract (docs/architecture.md): the same names are used by
`virtualmle train --set NAME=VALUE`, the search-space YAML files, Optuna's stored params and the
agent's proposals. Defaults depend on the backbone and follow the VirtualMLE release
(REFERENCE.md section 1); a missing parameter takes the default of the chosen `model`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from virtualmle.errors import ConfigError
from virtualmle.models.base import FFN, BlockLayout, Pooling
from virtualmle.models.position import PosEnc

ModelName = Literal["sasrec", "hstu"]
LossName = Literal["bce", "sampled_softmax", "softmax", "gbce"]
EvalMask = Literal["auto", "history", "none", "history_except_target"]
MetricName = Literal["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"]

METRICS: tuple[str, ...] = get_args(MetricName)

# Backbone defaults of the released code. Everything not listed is shared (see _SHARED).
_SHARED: dict[str, Any] = {
    "max_len": 50,
    "window": 0,
    "train_targets": "all",
    "loss": "sampled_softmax",
    "negatives": 500,
    "neg_sampler": "uniform",
    "logq": False,
    "gbce_t": 0.75,
    "ce_chunk": 0,
    "precision": "fp32",
    "grad_clip": 5.0,
    "adam_beta2": 0.98,
    "init": "normal",
    "batch_order": "bucketed",
    "attn_out_dropout": True,
    "mask_padding_keys": True,
    "max_epochs": 20,
    "patience": 3,
    "min_delta": 0.0,
    "eval_every": 1,
    "lr_schedule": "constant",
    "warmup_epochs": 0.0,
    "schedule_epochs": 0,
    "metric": "ndcg@10",
    "eval_mask": "auto",
    "seed": 0,
    "linear_dim": 16,
    "attn_dim": 16,
    "norm_first": True,
    "block_layout": "standard",
    # Structure switches (docs/training.md "Structure switches"): off, i.e. the release's model.
    "ffn_mult": 1,
    "pooling": "last",
    "pool_k": 3,
    # Train-split score priors (training/priors.py): every weight 0 = off.
    "prior_transition": 0.0,
    "prior_cooc": 0.0,
    "prior_pop": 0.0,
    "prior_recent_k": 5,
    "prior_window": 3,
    "prior_norm": "count",
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "sasrec": {
        **_SHARED,
        "model": "sasrec",
        "hidden": 128,
        "blocks": 1,
        "heads": 1,
        "dropout": 0.2,
        "attn_dropout": 0.2,
        "tied": False,
        "l2_norm": False,
        "temperature": 1.0,
        "ffn": "gelu",
        "pos_enc": "learned",
        "optimizer": "adam",
        "lr": 3e-4,
        "weight_decay": 1e-5,
        "batch_size": 256,
    },
    "hstu": {
        **_SHARED,
        "model": "hstu",
        "hidden": 128,
        "blocks": 1,
        "heads": 1,
        "dropout": 0.5,
        "attn_dropout": 0.0,
        "tied": True,
        "l2_norm": True,
        "temperature": 0.05,
        "ffn": "none",
        "pos_enc": "learned+relative",
        "optimizer": "adamw",
        "lr": 3e-4,
        "weight_decay": 0.0,
        "batch_size": 128,
    },
}

# BCE with 500 negatives per position is not what anyone means by "BCE": the original SASRec
# samples one negative per position, so switching the loss to bce without naming `negatives`
# gets that.
_BCE_DEFAULT_NEGATIVES = 1


def default_params(model: str = "sasrec") -> dict[str, Any]:
    """The full default parameter dict of a backbone (a fresh copy)."""
    if model not in _DEFAULTS:
        raise ConfigError(f"parameter 'model' = {model!r} is not allowed: use one of sasrec, hstu")
    return dict(_DEFAULTS[model])


class TrainConfig(BaseModel):
    """A validated trial configuration (flat, immutable).

    Construct with `TrainConfig(**params)` or `TrainConfig.for_model(model, **overrides)`; missing
    parameters take the defaults of `model`. Any invalid input raises `ConfigError` with a one-line
    message naming the parameter and what is allowed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: ModelName = "sasrec"  # backbone
    hidden: int = Field(128, ge=8, le=2048)  # embedding / hidden size
    blocks: int = Field(1, ge=1, le=16)  # encoder blocks
    heads: int = Field(1, ge=1, le=32)  # attention heads (SASRec: hidden % heads == 0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # embedding / residual dropout
    attn_dropout: float = Field(0.2, ge=0.0, lt=1.0)  # dropout on attention weights
    max_len: int = Field(50, ge=2, le=1024)  # longest history the model sees
    window: int = Field(0, ge=0, le=1024)  # training history window, 0 = max_len
    tied: bool = False  # output item embeddings = input item embeddings
    norm_first: bool = True  # SASRec: pre-LayerNorm (True) or post-LayerNorm (False)
    # SASRec: standard (norm_first's pre/post-LN) or the published code's wiring: queries alone
    # normalised, FFN on a normalised stream; attention residual from LN(x) (pmixer) or x (pmixer_x).
    block_layout: BlockLayout = "standard"
    linear_dim: int = Field(16, ge=1, le=1024)  # HSTU per-head U/V size
    attn_dim: int = Field(16, ge=1, le=1024)  # HSTU per-head Q/K size
    l2_norm: bool = False  # L2-normalise item embeddings and user states before scoring
    temperature: float = Field(1.0, ge=1e-3, le=100.0)  # logits are divided by it
    loss: LossName = "sampled_softmax"
    negatives: int = Field(500, ge=1, le=100_000)  # negatives per positive (bce, sampled_softmax, gbce)
    # Where shared negatives come from (sampled_softmax, gbce); in_batch: the batch's positives.
    neg_sampler: Literal["uniform", "popularity", "in_batch"] = "uniform"
    logq: bool = False  # sampled_softmax: subtract log q(item), the sampling-bias correction
    gbce_t: float = Field(0.75, ge=0.0, le=1.0)  # gbce calibration: 0 = BCE, 1 = fully calibrated
    ce_chunk: int = Field(0, ge=0, le=1_000_000)  # softmax: rows per logits chunk, 0 = auto
    # Training arithmetic: fp32, or bf16 autocast (bfloat16 matmuls; evaluation stays fp32).
    precision: Literal["fp32", "bf16"] = "fp32"
    train_targets: Literal["all", "last"] = "all"  # supervise every position or the last one
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(3e-4, gt=0.0, le=1e6)  # wide on purpose: divergence is a trial outcome
    weight_decay: float = Field(1e-5, ge=0.0, le=10.0)
    batch_size: int = Field(256, ge=1, le=65_536)
    grad_clip: float = Field(5.0, ge=0.0, le=1e6)  # max gradient norm, 0 = no clipping
    adam_beta2: float = Field(0.98, ge=0.0, lt=1.0)  # 0.98: SASRec.pytorch / HSTU; 0.999: torch default
    # normal: N(0, 0.02) embeddings, torch's default Linear init; xavier: xavier-normal embeddings
    # and Linear weights, zero biases (SASRec.pytorch); xavier_ffn_default: the same but the
    # feed-forward keeps torch's default init (CE-SCE-LLMRec, whose Conv1d FFN its xavier pass skips).
    init: Literal["normal", "xavier", "xavier_ffn_default"] = "normal"
    batch_order: Literal["bucketed", "random"] = "bucketed"  # length-bucketed or random users
    attn_out_dropout: bool = True  # sasrec: dropout on the attention branch output (published: none)
    mask_padding_keys: bool = True  # sasrec: hide padding keys (published PyTorch code: causal only)
    max_epochs: int = Field(20, ge=1, le=10_000)
    patience: int = Field(3, ge=0, le=10_000)  # validations without improvement, 0 = never stop early
    # Relative gain a validation needs to reset patience (0.005: 0.5% of the score it must beat);
    # the best epoch's weights still follow every gain. 0 = any gain resets it.
    min_delta: float = Field(0.0, ge=0.0, le=1.0)
    eval_every: int = Field(1, ge=1, le=1000)  # validate every k epochs (and after the last)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"  # decay after warm-up
    warmup_epochs: float = Field(0.0, ge=0.0, le=1000.0)  # linear warm-up length (fractions ok)
    # Epochs the schedule spans (0 = max_epochs): a screen trains the first epochs of a longer
    # run, so its learning rates are that run's and a promotion continues it exactly.
    schedule_epochs: int = Field(0, ge=0, le=10_000)
    metric: MetricName = "ndcg@10"  # validation metric for early stopping and the search
    # Which history items leave the ranking; auto = history unless repeated targets are common.
    eval_mask: EvalMask = "auto"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # Structure switches (models/); defaults are the release's model.
    ffn: FFN = "gelu"  # SASRec feed-forward: gelu | relu | swiglu; HSTU has none ("none")
    ffn_mult: int = Field(1, ge=1, le=8)  # SASRec feed-forward inner size = ffn_mult * hidden
    pos_enc: PosEnc = "learned"  # learned | none | relative | rotary | learned+relative
    pooling: Pooling = "last"  # user state: last position or recency-weighted mean of pool_k
    pool_k: int = Field(3, ge=1, le=1024)  # positions pooled by pooling=recency_mean
    # Train-split score priors (training/priors.py), added at scoring time; 0 = off.
    prior_transition: float = Field(0.0, ge=0.0, le=1000.0)  # weight of P(last item -> item)
    prior_cooc: float = Field(0.0, ge=0.0, le=1000.0)  # weight of co-occurrence with recent items
    prior_pop: float = Field(0.0, ge=0.0, le=1000.0)  # weight of item popularity
    prior_recent_k: int = Field(5, ge=1, le=1024)  # most recent history items feeding prior_cooc
    prior_window: int = Field(3, ge=1, le=50)  # co-occurrence: items at most this far apart
    prior_norm: Literal["sqrt", "count", "none"] = "count"  # divide the prior_cooc sum by sqrt(m), m, 1

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _fill_model_defaults(cls, data: Any) -> Any:
        # Missing parameters come from the chosen backbone's defaults, not the field defaults.
        if not isinstance(data, dict):
            return data
        model = data.get("model", "sasrec")
        if model not in _DEFAULTS:
            return data  # the Literal check reports it
        merged = {**_DEFAULTS[model], **data}
        if data.get("loss") == "bce" and "negatives" not in data:
            merged["negatives"] = _BCE_DEFAULT_NEGATIVES
        return merged

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.model == "sasrec" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.window > self.max_len:
            raise ValueError(f"window ({self.window}) must be 0 or at most max_len ({self.max_len})")
        if not math.isfinite(self.lr):
            raise ValueError("lr must be finite")
        if 0 < self.schedule_epochs < self.max_epochs:
            raise ValueError(f"schedule_epochs ({self.schedule_epochs}) must be 0 or at least max_epochs "
                             f"({self.max_epochs}): past its span the learning rate is 0")
        if self.warmup_epochs > self.schedule_horizon:
            span = f"schedule_epochs ({self.schedule_epochs})" if self.schedule_epochs else f"max_epochs ({self.max_epochs})"
            raise ValueError(f"warmup_epochs ({self.warmup_epochs:g}) must be at most {span}")
        self._check_structure()
        return self

    def _check_structure(self) -> None:
        # A switch the backbone does not have is an error, not a silent no-op: a user (or the
        # search) setting it would otherwise believe it was tried.
        if self.model == "hstu" and self.ffn != "none":
            raise ValueError(f"ffn={self.ffn} is not available for hstu: HSTU blocks have no feed-forward "
                             "(the U gate plays its part); use ffn=none or model=sasrec")
        if self.model == "hstu" and self.ffn_mult != 1:
            raise ValueError(f"ffn_mult={self.ffn_mult} is not available for hstu: HSTU blocks have no "
                             "feed-forward; use ffn_mult=1 or model=sasrec")
        if self.model == "sasrec" and self.ffn == "none":
            raise ValueError("ffn=none is not available for sasrec: use gelu, relu or swiglu")
        if self.model == "hstu" and self.block_layout != "standard":
            raise ValueError(f"block_layout={self.block_layout} is not available for hstu: it rewires "
                             "SASRec's block; use block_layout=standard or model=sasrec")
        if self.block_layout != "standard" and not self.norm_first:
            raise ValueError(f"block_layout={self.block_layout} fixes where the LayerNorms go: "
                             "it needs norm_first=true (or block_layout=standard for post-LN)")
        if self.pos_enc == "rotary":
            head = self.hidden // self.heads if self.model == "sasrec" else self.attn_dim
            what = "hidden / heads" if self.model == "sasrec" else "attn_dim"
            if head % 2:
                raise ValueError(f"pos_enc=rotary needs an even per-head size ({what} = {head})")

    @classmethod
    def for_model(cls, model: str = "sasrec", **overrides: Any) -> TrainConfig:
        """The defaults of `model` with `overrides` applied (validated)."""
        return cls(model=model, **overrides)

    @property
    def train_window(self) -> int:
        """The history length used for training samples."""
        return self.window or self.max_len

    @property
    def schedule_horizon(self) -> int:
        """Epochs over which the learning-rate schedule warms up and decays to 0."""
        return self.schedule_epochs or self.max_epochs

    def to_params(self) -> dict[str, Any]:
        """The flat dict of every parameter (JSON-ready)."""
        return self.model_dump()


PARAM_NAMES: tuple[str, ...] = tuple(TrainConfig.model_fields)

# One line per parameter, for --help and documentation.
PARAM_HELP: dict[str, str] = {
    "model": "backbone: sasrec or hstu",
    "hidden": "embedding / hidden size",
    "blocks": "encoder blocks",
    "heads": "attention heads (sasrec: must divide hidden)",
    "dropout": "embedding and residual dropout",
    "attn_dropout": "dropout on attention weights",
    "max_len": "longest history the model sees",
    "window": "training history window, 0 = max_len",
    "tied": "score with the input item embeddings",
    "norm_first": "sasrec: pre-LayerNorm (true) or post-LayerNorm (false)",
    "block_layout": "sasrec: standard (pre/post-LN by norm_first) | pmixer | pmixer_x (published SASRec code)",
    "linear_dim": "hstu: per-head U/V size",
    "attn_dim": "hstu: per-head Q/K size",
    "l2_norm": "L2-normalise user states and item vectors",
    "temperature": "logits are divided by it",
    "loss": "bce | sampled_softmax | softmax (full) | gbce (gSASRec)",
    "negatives": "negatives per positive (bce, sampled_softmax, gbce)",
    "neg_sampler": "uniform | popularity | in_batch: shared negatives of sampled_softmax and gbce",
    "logq": "sampled_softmax: subtract log q(item) (sampling-bias correction)",
    "gbce_t": "gbce calibration in [0, 1]: 0 = plain BCE, 1 = fully calibrated",
    "ce_chunk": "softmax: rows per logits chunk (bounded memory), 0 = auto",
    "precision": "training arithmetic: fp32 | bf16 (bfloat16 matmuls, fp32 evaluation; fast on CPUs with AVX512-BF16/AMX)",
    "train_targets": "supervise all positions or the last one",
    "optimizer": "adam | adamw",
    "lr": "learning rate",
    "weight_decay": "weight decay (L2 for adam, decoupled for adamw)",
    "batch_size": "users per training batch",
    "grad_clip": "max gradient norm, 0 = off",
    "adam_beta2": "Adam / AdamW beta2 (beta1 is 0.9)",
    "init": "normal (N(0, 0.02) embeddings) | xavier (xavier-normal embeddings and Linear weights) | "
            "xavier_ffn_default (xavier, feed-forward left at torch's default)",
    "batch_order": "bucketed (users of similar length per batch) | random (random users per batch)",
    "attn_out_dropout": "sasrec: dropout on the attention branch output (the published code has none)",
    "mask_padding_keys": "sasrec: hide padding keys from attention (the published PyTorch code does not)",
    "max_epochs": "epochs at most",
    "patience": "validations without improvement before stopping, 0 = never",
    "min_delta": "relative gain a validation needs to reset patience (0.005 = 0.5%), 0 = any gain",
    "eval_every": "validate every k epochs (and after the last one)",
    "lr_schedule": "constant | linear | cosine: decay to 0 at max_epochs after the warm-up",
    "warmup_epochs": "linear learning-rate warm-up, in epochs (fractions allowed), 0 = none",
    "schedule_epochs": "epochs the lr schedule spans, 0 = max_epochs (a screen: the first epochs of a longer run)",
    "metric": "validation metric for early stopping: hr@5/10/20, ndcg@5/10/20, mrr",
    "eval_mask": "history items left out of the ranking: auto | history | none | history_except_target",
    "seed": "seed for init, dropout, batching and negatives",
    "ffn": "sasrec feed-forward: gelu | relu | swiglu (hstu: none)",
    "ffn_mult": "sasrec feed-forward inner size = ffn_mult * hidden (1, 2, 4)",
    "pos_enc": "learned | none | relative | rotary | learned+relative",
    "pooling": "user state: last | recency_mean (of the last pool_k positions)",
    "pool_k": "positions pooled by pooling=recency_mean",
    "prior_transition": "weight of the train-split transition prior, 0 = off",
    "prior_cooc": "weight of the train-split co-occurrence prior, 0 = off",
    "prior_pop": "weight of the train-split popularity prior, 0 = off",
    "prior_recent_k": "most recent history items feeding the co-occurrence prior",
    "prior_window": "co-occurrence prior: items at most this far apart in a sequence",
    "prior_norm": "co-occurrence prior sum over recent items divided by: sqrt | count | none",
}


def _allowed(name: str) -> str:
    """Human description of what a field accepts, from its annotation and constraints."""
    info = TrainConfig.model_fields[name]
    args = get_args(info.annotation)
    if args and all(isinstance(a, str) for a in args):
        return "one of " + ", ".join(args)
    if info.annotation is bool:
        return "true or false"
    lo = hi = None
    lo_op = hi_op = ""
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            lo, lo_op = m.ge, "<="
        elif isinstance(m, annotated_types.Gt):
            lo, lo_op = m.gt, "<"
        elif isinstance(m, annotated_types.Le):
            hi, hi_op = m.le, "<="
        elif isinstance(m, annotated_types.Lt):
            hi, hi_op = m.lt, "<"
    kind = getattr(info.annotation, "__name__", str(info.annotation))
    bounds = f"{'' if lo is None else f'{lo} {lo_op} '}{name}{'' if hi is None else f' {hi_op} {hi}'}"
    return f"{kind}, {bounds}"


def _one_line(exc: ValidationError) -> str:
    """Turn a pydantic error into one line naming the parameter and its allowed values."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    name = loc[0] if loc else ""
    value = err.get("input")
    if err.get("type") == "extra_forbidden":
        return f"unknown parameter {name!r} (known: {', '.join(PARAM_NAMES)})"
    if name in TrainConfig.model_fields:
        return f"parameter {name!r} = {value!r} is not allowed: expected {_allowed(name)}"
    msg = str(err.get("msg", "invalid configuration")).removeprefix("Value error, ")
    return f"invalid configuration: {msg}"
