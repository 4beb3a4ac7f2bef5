"""Typed configs: the NADM motion-module config (Sec. III-D1, Table II switches) and strict dict/YAML loading."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypeVar

T = TypeVar("T")

ATTN1_TYPES = ("versatile", "off")
ATTN2_TYPES = ("sparse_causal", "versatile", "off")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`; unknown keys fail with their names, tuples are restored from lists."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
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
