"""Typed configs: the NADM motion-module config (Sec. III-D1, Table II switches) and strict dict/YAML loading."""

# yaml and nadm.io are imported inside the functions that read and write YAML: `nadm --help` imports this module
# (through `nadm train`'s presets) and needs neither.

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypeVar

from nadm import __version__

T = TypeVar("T")

ATTN1_TYPES = ("versatile", "off")
ATTN2_TYPES = ("sparse_causal", "versatile", "off")


def check_keys(cls, data: Any, where: str) -> None:
    """ValueError unless `data` is a mapping whose keys are all fields of dataclass `cls` (unknown ones named)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`; unknown keys fail with their names, tuples are restored from lists."""
    check_keys(cls, data, where)
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        hint = hints[key]
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):  # Optional[...]: look at the non-None member
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            origin = typing.get_origin(args[0]) if args else None
        if origin is tuple and isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def to_dict(obj) -> dict[str, Any]:
    """A dataclass as a JSON/YAML-ready dict (tuples become lists)."""

    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in asdict(obj).items()}


@dataclass(frozen=True)
class NADMConfig:
    """Motion module + noise adapter settings (Sec. III-D); defaults are SD 1.5 / AnimateDiff v1-5-2 shapes.

    attn1 is the first temporal attention of every motion block, attn2 the second (Fig. 3). NADM is
    (versatile, sparse_causal); the AnimateDiff baseline is (versatile, versatile); Table II's ablations switch
    one of NADM's two off ("off": the block's residual branch is skipped).
    """

    attn1: Literal["versatile", "off"] = "versatile"
    attn2: Literal["sparse_causal", "versatile", "off"] = "sparse_causal"
    # MotionAdapter architecture (must match the base UNet's block_out_channels and layers_per_block).
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    motion_layers_per_block: int = 2
    motion_num_attention_heads: int = 8
    motion_norm_num_groups: int = 32
    motion_max_seq_length: int = 32
    use_motion_mid_block: bool = True
    # Noise adapter g (Sec. III-D2): pool predicted noise to grid x grid, then Linear -> ReLU -> Linear.
    adapter_grid: int = 32
    adapter_hidden: int = 512
    adapter_dim: int = 128

    def __post_init__(self):
        if self.attn1 not in ATTN1_TYPES:
            raise ValueError(f"attn1 must be one of {ATTN1_TYPES}, got {self.attn1!r}")
        if self.attn2 not in ATTN2_TYPES:
            raise ValueError(f"attn2 must be one of {ATTN2_TYPES}, got {self.attn2!r}")
        if self.motion_max_seq_length < 2:
            raise ValueError(f"motion_max_seq_length must be >= 2, got {self.motion_max_seq_length}")
        for name in ("motion_layers_per_block", "motion_num_attention_heads", "adapter_grid", "adapter_hidden", "adapter_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def kind(self) -> str:
        """'nadm', 'animatediff' (both attentions versatile) or 'ablation' (anything else)."""
        if (self.attn1, self.attn2) == ("versatile", "sparse_causal"):
            return "nadm"
        if (self.attn1, self.attn2) == ("versatile", "versatile"):
            return "animatediff"
        return "ablation"

    @classmethod
    def ablation(cls, versatile: bool = True, sparse_causal: bool = True, **kw) -> "NADMConfig":
        """Table II's switches: NADM with versatile and/or sparse-causal attention turned off."""
        return cls(attn1="versatile" if versatile else "off", attn2="sparse_causal" if sparse_causal else "off", **kw)

    def adapter_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for diffusers' `MotionAdapter` with this architecture."""
        return dict(
            block_out_channels=tuple(self.block_out_channels),
            motion_layers_per_block=self.motion_layers_per_block,
            motion_num_attention_heads=self.motion_num_attention_heads,
            motion_norm_num_groups=self.motion_norm_num_groups,
            motion_max_seq_length=self.motion_max_seq_length,
            use_motion_mid_block=self.use_motion_mid_block,
        )

    def replace(self, **changes) -> "NADMConfig":
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------------------ training configs
# Sections of `TrainConfig` (Sec. III-D3, IV-A1). Defaults are the paper's; where the paper says nothing
# (optimizer details, clipping, caption dropout) they follow AnimateDiff's training recipe, which the paper
# builds on. Layering: defaults <- preset <- YAML file <- command-line flags.

DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_VALIDATION_PROMPTS = (
    "a Chinese ink landscape painting, misty mountains and a river, clouds drifting",
    "a Chinese ink painting of a small boat on a lake in the rain, ripples on the water",
)


def _check_positive(obj, *names: str, allow_zero: bool = False) -> None:
    """ValueError naming the first of `names` that is not a (non-negative / positive) number."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (value < 0 if allow_zero else value <= 0):
            raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _check_types(obj) -> None:
    """TypeError-free strictness for YAML input: each field must have its annotated type (an int is accepted,
    and stored, as a float where a float is expected); ValueError naming the field otherwise."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        ok, converted = _conforms(value, hint)
        if not ok:
            raise ValueError(f"{f.name} must be {_type_name(hint)}, got {value!r}")
        if converted is not value:
            object.__setattr__(obj, f.name, converted)


def _conforms(value, hint) -> tuple[bool, Any]:
    """(does `value` fit `hint`, the value to store)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, converted = _conforms(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in args, value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        items = [_conforms(v, args[0]) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if hint is type(None):
        return value is None, value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, hint), value


def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    return "null" if hint is type(None) else hint.__name__


def clip_span(frames: int, stride: int) -> int:
    """Source frames a clip of `frames` frames `stride` apart covers, first to last: (frames - 1) * stride + 1 (the
    paper's 8 frames at stride 4: 29), the shortest video a training clip can come from."""
    return (frames - 1) * stride + 1


@dataclass(frozen=True)
class DataConfig:
    """Training clips (Sec. IV-A1): `frames` frames `stride` apart from a random start, centre-cropped to
    `resolution`; captions dropped (set to "") with `empty_caption_prob` for classifier-free guidance.

    The one data config: `TrainConfig.data`, `nadm.data.VideoClipDataset` and the latent cache all take it (the
    clip sampling's seed is the run's, `run.seed`, passed to the dataset beside it).
    """

    root: str | None = None  # dataset ROOT (ROOT/videos + captions); or --data
    latent_cache: str | None = None  # a `cache_latents` folder used instead of decoding videos
    frames: int = 8
    stride: int = 4
    resolution: int = 256
    empty_caption_prob: float = 0.1  # captions dropped for classifier-free guidance (AnimateDiff's 0.1)
    captions_file: str | None = None  # default: ROOT/captions.csv or ROOT/captions.jsonl
    allow_empty_captions: bool = False  # train on clips whose caption is "" (else refused)
    num_workers: int = 0

    def __post_init__(self):
        for name in ("root", "latent_cache", "captions_file"):  # paths may come as Path objects from Python callers
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        _check_types(self)
        _check_positive(self, "frames", "stride", "resolution")
        _check_positive(self, "num_workers", allow_zero=True)
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2 (the contrastive loss needs a next frame), got {self.frames}")
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8 (the VAE's factor), got {self.resolution}")
        if not 0.0 <= self.empty_caption_prob <= 1.0:
            raise ValueError(f"empty_caption_prob must be in [0, 1], got {self.empty_caption_prob!r}")

    @property
    def span(self) -> int:
        """Source frames one clip covers, first to last (`clip_span`)."""
        return clip_span(self.frames, self.stride)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class LossConfig:
    """L = lambda_diff * L_diff + lambda_con * L_con (Eq. 13) and the contrastive loss's m, tau, positives (Eq. 10)."""

    lambda_diff: float = 1.0
    lambda_con: float = 0.07
    tau: float = 0.07
    m: int = 4
    positive: Literal["next", "window"] = "next"

    def __post_init__(self):
        _check_types(self)
        _check_positive(self, "lambda_diff", "lambda_con", allow_zero=True)
        _check_positive(self, "tau", "m")
        if self.positive not in ("next", "window"):
            raise ValueError(f"positive must be 'next' or 'window', got {self.positive!r}")


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """The training forward process (Eq. 2, Sec. IV-A1): AnimateDiff's linear betas, epsilon prediction (Eq. 12)."""

    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: Literal["linear", "scaled_linear"] = "linear"
    num_train_timesteps: int = 1000
    prediction_type: Literal["epsilon"] = "epsilon"

    def __post_init__(self):
        _check_types(self)
        _check_positive(self, "beta_start", "beta_end", "num_train_timesteps")
        if self.beta_schedule not in ("linear", "scaled_linear"):
            raise ValueError(f"beta_schedule must be 'linear' or 'scaled_linear', got {self.beta_schedule!r}")
        if self.prediction_type != "epsilon":
            raise ValueError(
                f"prediction_type must be 'epsilon' (L_diff of Eq. 12 is on the noise), got {self.prediction_type!r}"
            )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW on the motion module and noise adapter (Sec. IV-A1: batch 1, lr 1e-5, 40k steps)."""

    learning_rate: float = 1e-5
    batch_size: int = 1  # per process; effective batch = batch_size * gradient_accumulation_steps * processes
    gradient_accumulation_steps: int = 1
    max_steps: int = 40_000
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0  # 0 turns clipping off
    ema: bool = False
    ema_decay: float = 0.9999

    def __post_init__(self):
        _check_types(self)
        _check_positive(self, "batch_size", "gradient_accumulation_steps", "max_steps", "adam_epsilon")
        _check_positive(self, "learning_rate", "warmup_steps", "weight_decay", "max_grad_norm", allow_zero=True)
        if self.lr_scheduler not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_scheduler must be constant, linear or cosine, got {self.lr_scheduler!r}")
        for name in ("adam_beta1", "adam_beta2", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")


@dataclass(frozen=True)
class RunConfig:
    """Seed, precision, memory and bookkeeping of a run (none of it changes the paper's recipe)."""

    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile (inductor) the trained module in place
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end
    checkpoints_total_limit: int | None = None  # keep only the newest K checkpoints (None: all)
    log_every: int = 10  # steps between console/TensorBoard/metrics.jsonl records (averaged over the window)

    def __post_init__(self):
        _check_types(self)
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        _check_positive(self, "checkpoint_every", "log_every")
        if self.checkpoints_total_limit is not None:
            _check_positive(self, "checkpoints_total_limit")


@dataclass(frozen=True)
class ValidationConfig:
    """Validation videos from fixed prompts and seeds every `every` steps (0: off), DDIM as at inference (Sec. IV-A2)."""

    every: int = 0
    prompts: tuple[str, ...] = DEFAULT_VALIDATION_PROMPTS
    seeds: tuple[int, ...] = (0,)
    frames: int | None = None  # default: the training clip length
    resolution: int | None = None  # default: the training resolution
    steps: int = 25
    guidance: float = 8.0
    interpolate: bool = False

    def __post_init__(self):
        _check_types(self)
        _check_positive(self, "every", allow_zero=True)
        _check_positive(self, "steps", "guidance")
        for name in ("frames", "resolution"):
            if getattr(self, name) is not None:
                _check_positive(self, name)
        if self.every and (not self.prompts or not self.seeds):
            raise ValueError("validation needs at least one prompt and one seed")


@dataclass(frozen=True)
class MotionLoraConfig:
    """A motion LoRA (issue 20): train a rank-`rank` LoRA on the motion module's attention projections, on top of
    `init_motion`, instead of the whole module (0: train the whole module, Sec. III-D3)."""

    rank: int = 0
    alpha: float | None = None  # None: the rank (scale 1: W + up @ down)

    def __post_init__(self):
        _check_types(self)
        _check_positive(self, "rank", allow_zero=True)
        if self.alpha is not None:
            _check_positive(self, "alpha")

    @property
    def scale_alpha(self) -> float:
        """The LoRA's alpha (its update is scaled by alpha / rank)."""
        return float(self.rank if self.alpha is None else self.alpha)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (Sec. III-D3, IV-A1); the defaults are the `paper` preset."""

    base: str = DEFAULT_BASE_MODEL
    base_config: str | None = None  # a single-file base's component configs (diffusers folder or hub id)
    init_motion: str | None = None  # AnimateDiff/NADM weights that initialise the motion module
    model: NADMConfig = dataclasses.field(default_factory=NADMConfig)
    motion_lora: MotionLoraConfig = dataclasses.field(default_factory=MotionLoraConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    noise: NoiseScheduleConfig = dataclasses.field(default_factory=NoiseScheduleConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "TrainConfig":
        """Strict nested loading: unknown sections or keys fail with their names."""
        return train_config_from_dict(data, where)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


TRAIN_SECTIONS = {
    "model": NADMConfig,
    "motion_lora": MotionLoraConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "noise": NoiseScheduleConfig,
    "optim": OptimConfig,
    "run": RunConfig,
    "validation": ValidationConfig,
}


def train_config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """A `TrainConfig` from a nested dict; each section goes through the strict `from_dict`."""
    check_keys(TrainConfig, data, where)
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in TRAIN_SECTIONS:
            try:
                values[key] = from_dict(TRAIN_SECTIONS[key], value if value is not None else {}, where=f"{where}: {key}")
            except (ValueError, TypeError) as e:
                prefix = f"{where}: {key}"
                raise ValueError(str(e) if str(e).startswith(prefix) else f"{prefix}: {e}") from None
        else:
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}: {key} must be a string, got {value!r}")
            values[key] = value
    return TrainConfig(**values)


def merge_dicts(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, section by section (nested dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of nested `data` with `section.key` (or a top-level key) set to `value`."""
    parts = dotted.split(".")
    if not all(parts) or len(parts) > 2:
        raise ValueError(f"expected KEY or SECTION.KEY, got {dotted!r}")
    override: dict[str, Any] = {parts[-1]: value}
    if len(parts) == 2:
        override = {parts[0]: override}
    return merge_dicts(data, override)


# Presets: overrides of the defaults (which are the paper's). Table II: attention and contrastive ablations;
# Table III: negative threshold m; Table IV: positives = all frames within m.
TRAIN_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": ("Sec. IV-A1 exactly: 8 frames at stride 4, 256x256, batch 1, lr 1e-5, 40k steps, m=4, tau=0.07", {}),
    "no-versatile": ("Table II, w/o Ver-Attn: the first temporal attention switched off", {"model": {"attn1": "off"}}),
    "no-sparse-causal": ("Table II, w/o SC-Attn: the second temporal attention switched off", {"model": {"attn2": "off"}}),
    "no-contrastive": ("Table II, w/o CLoFNoise: lambda_con = 0 (L_con still logged)", {"loss": {"lambda_con": 0.0}}),
    **{
        f"m{m}": (f"Table III: negative-sample threshold m = {m}", {"loss": {"m": m}})
        for m in (2, 3, 5, 6)
    },
    "positive-window": ("Table IV: every frame within m is a positive", {"loss": {"positive": "window"}}),
    "animatediff": (
        "the AnimateDiff baseline on the same data: both attentions versatile, no contrastive loss",
        {"model": {"attn2": "versatile"}, "loss": {"lambda_con": 0.0}},
    ),
    "motion-lora": (
        "a motion of your own from a handful of clips: a rank-16 LoRA on AnimateDiff v1-5-2's motion module, "
        "16 frames at stride 3, lr 1e-4, 1000 steps",
        {
            "init_motion": "guoyww/animatediff-motion-adapter-v1-5-2",
            "motion_lora": {"rank": 16},
            "data": {"frames": 16, "stride": 3},
            "optim": {"learning_rate": 1.0e-4, "max_steps": 1000},
            "run": {"checkpoint_every": 250},
        },
    ),
}


def train_preset(name: str) -> dict[str, Any]:
    """The override dict of a named preset (ValueError listing the names for an unknown one)."""
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(TRAIN_PRESETS)})")
    return TRAIN_PRESETS[name][1]


def load_yaml(path) -> dict[str, Any]:
    """A YAML file's top-level mapping (an empty file is {}); ValueError naming the file otherwise."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_train_config(path) -> TrainConfig:
    """A `TrainConfig` from a YAML file (strict: unknown keys fail)."""
    return train_config_from_dict(load_yaml(path), where=str(path))


def save_train_config(config: TrainConfig, path) -> None:
    """Write the resolved config as YAML, with the nadm version in a comment, atomically."""
    import yaml

    from nadm.outputs import write_text_atomic

    text = f"# nadm {__version__} training config (resolved: defaults <- preset <- file <- flags)\n"
    text += yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
    write_text_atomic(path, text)
