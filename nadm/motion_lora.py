"""Motion LoRAs (issue 20): low-rank updates `W + scale * (alpha / rank) * up @ down` of the motion module's
attention projections (Sec. III-D1), as AnimateDiff's MotionLoRA adds them to its temporal attention.

- Reading: a hub id, a diffusers-format file or folder (PEFT `lora_A/lora_B` keys, alpha in the safetensors
  metadata diffusers writes; or the older `processor.to_q_lora.down` keys of the published
  `guoyww/animatediff-motion-lora-*` repositories) or AnimateDiff's original release files (`v2_lora_*.ckpt`, keys
  `...temporal_transformer...attention_blocks.N.processor.to_q_lora.down.weight`, alpha = rank). Every layout becomes
  one `MotionLora`: {motion-module layer: (down (r, in), up (out, r), alpha)}.
- Fusing: each LoRA is checked against the motion weights (a key that fits no motion layer is one error naming it),
  loaded as a PEFT adapter on the video UNet by diffusers (`load_lora_adapter`), weighted by its scale, fused into
  the weights and unloaded, so sampling runs on plain weights at full speed.
- Training (`nadm train --motion-lora-rank R`): a PEFT adapter on the attention projections the configured
  attention types use, exported in diffusers' layout (`pytorch_lora_weights.safetensors` with its `LoraConfig` in
  the metadata, as diffusers' `save_lora_weights` writes it) plus an nadm sidecar.
"""

# torch, diffusers, peft and huggingface_hub are imported inside functions (CLI start-up time).

from __future__ import annotations

import collections
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from nadm.base import is_hub_id, split_scale
from nadm.errors import NADMError, note
from nadm.weights import read_weights

if TYPE_CHECKING:
    import diffusers
    import torch

    from nadm.config import NADMConfig

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
# the weights file of a motion-LoRA folder or hub repository, in the order they are looked for
# (guoyww/animatediff-motion-lora-* hold diffusion_pytorch_model.safetensors)
LORA_FILES = (LORA_FILE, "diffusion_pytorch_model.safetensors", "pytorch_lora_weights.bin")
SIDECAR = "nadm_motion_lora.json"  # beside an exported LoRA: the training config and the base motion weights
FORMAT = "nadm-motion-lora"
ADAPTER = "default"  # the PEFT adapter name of a LoRA being trained
_PROJECTION = re.compile(r"\.(attn[12])\.(to_q|to_k|to_v|to_out\.0)$")
# suffix of a LoRA tensor's key -> (which factor, layout); the module name is what comes before it
_SUFFIXES = (
    (".lora_A.weight", "down", "diffusers"),
    (".lora_B.weight", "up", "diffusers"),
    (".lora.down.weight", "down", "diffusers"),
    (".lora.up.weight", "up", "diffusers"),
    (".lora_linear_layer.down.weight", "down", "diffusers"),
    (".lora_linear_layer.up.weight", "up", "diffusers"),
    ("_lora.down.weight", "down", "animatediff"),  # attention_blocks.0.processor.to_q_lora.down.weight
    ("_lora.up.weight", "up", "animatediff"),
)


# ------------------------------------------------------------------------------------------ what to load


@dataclass(frozen=True)
class MotionLoraSpec:
    """`--motion-lora SRC[:SCALE]`: a hub id, a file or a folder, and its scale (default 1)."""

    source: str
    scale: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "MotionLoraSpec":
        """`SRC` or `SRC:SCALE` (`nadm.base.split_scale`); a local SRC must exist, anything else must look like a hub
        id (`owner/name`)."""
        source, scale = split_scale(spec, "motion LoRA")
        local = Path(source).expanduser()
        if not local.exists() and not is_hub_id(source):
            raise NADMError(f"motion LoRA not found: {source} (expected a file, a diffusers LoRA folder or a hub id)")
        return cls(str(local) if local.exists() else source, scale)


@dataclass
class MotionLora:
    """One motion LoRA in nadm's form: {motion-module layer: (down (r, in), up (out, r), alpha)}, where it came
    from, and the scale it is fused at."""

    layers: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    source: str
    layout: str  # "diffusers", "animatediff" (hub repositories' old diffusers keys) or "animatediff-original"
    file: str | None = None
    sha256: str | None = None
    scale: float = 1.0
    keys: dict[str, str] = field(default_factory=dict)  # layer -> one of its original keys (for error messages)

    def describe(self) -> dict[str, Any]:
        """Source, file, SHA-256, scale, layout and size (the sidecar's record)."""
        ranks = sorted({down.shape[0] for down, _, _ in self.layers.values()})
        return {"source": self.source, "file": self.file, "sha256": self.sha256, "scale": self.scale,
                "layout": self.layout, "layers": len(self.layers), "rank": ranks[0] if len(ranks) == 1 else ranks}  # fmt: skip


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lora_file(source: str) -> Path:
    """The weights file of a motion LoRA: the file itself, the one in a folder, or the hub repository's (from the
    cache, or downloaded after one probe of the hub)."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        found = next((path / name for name in LORA_FILES if (path / name).is_file()), None)
        if found is None:
            raise NADMError(f"the motion LoRA folder {path} has none of {', '.join(LORA_FILES)}")
        return found
    return _hub_file(source)


def _hub_file(repo: str) -> Path:
    """A hub repository's motion-LoRA file (the first of LORA_FILES it has); one NADMError when none can be had."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from nadm.hub import offline_unless_reachable

    offline_unless_reachable()
    for name in LORA_FILES:
        try:
            return Path(hf_hub_download(repo, name))
        except (OSError, ValueError, EntryNotFoundError):
            continue
    raise NADMError(
        f"cannot load the motion LoRA {repo!r} from the Hugging Face hub (offline, not cached or not found); "
        "pass a local file or folder"
    )


def read_motion_lora(spec: MotionLoraSpec | str) -> MotionLora:
    """Read a motion LoRA in any supported layout (nadm.weights: a damaged file is one NADMError line)."""
    spec = MotionLoraSpec.parse(spec) if isinstance(spec, str) else spec
    path = lora_file(spec.source)
    tensors = read_weights(path)
    layers, layout, keys = parse_lora(tensors, _adapter_metadata(path), str(path))
    return MotionLora(layers, spec.source, layout, str(path), sha256_file(path), spec.scale, keys)


def _adapter_metadata(path: Path) -> dict[str, Any] | None:
    """The `LoraConfig` diffusers stores in a safetensors LoRA's metadata (keys `unet.r`, `unet.lora_alpha`, ...),
    with the `unet.` prefix removed; None when there is none."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:  # read_weights has decoded this file already
        raw = (handle.metadata() or {}).get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise NADMError(f"{path}: its LoRA metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise NADMError(f"{path}: its LoRA metadata is not a JSON object")
    return {k.removeprefix("unet."): v for k, v in meta.items() if not k.startswith("text_encoder")}


def parse_lora(tensors: dict, metadata: dict | None, where: str) -> tuple[dict, str, dict[str, str]]:
    """LoRA tensors in any supported layout -> ({layer: (down, up, alpha)}, layout, {layer: an original key}).

    Layer names are the video UNet's (`down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q`): a `unet.`
    prefix, `.processor`, and the original AnimateDiff names (`temporal_transformer`, `attention_blocks.N`) go.
    """
    factors: dict[str, dict[str, Any]] = collections.defaultdict(dict)
    keys, alphas, layouts = {}, {}, set()
    for key, value in tensors.items():
        name = key.removeprefix("unet.")
        if name.endswith(".alpha"):  # kohya-style per-layer alphas
            alphas[_layer_name(name[: -len(".alpha")])] = float(value)
            continue
        match = next(((s, f, l) for s, f, l in _SUFFIXES if name.endswith(s)), None)
        if match is None or value.ndim != 2:
            raise NADMError(f"{where}: key {key} is not a LoRA weight of a linear layer (expected lora_A/lora_B or lora up/down)")
        suffix, factor, layout = match
        layer = _layer_name(name[: -len(suffix)])
        layouts.add("animatediff-original" if ".temporal_transformer." in name else layout)
        factors[layer][factor] = value
        keys.setdefault(layer, key)
    if not factors:
        raise NADMError(f"{where} holds no LoRA weights")
    layers = {}
    for layer, pair in factors.items():
        if set(pair) != {"down", "up"}:
            missing = ({"down", "up"} - set(pair)).pop()
            raise NADMError(f"{where}: key {keys[layer]} has no matching '{missing}' factor")
        down, up = pair["down"].float(), pair["up"].float()
        if down.shape[0] != up.shape[1]:
            raise NADMError(f"{where}: key {keys[layer]}: down {tuple(down.shape)} and up {tuple(up.shape)} ranks differ")
        layers[layer] = (down, up, alphas.get(layer, _metadata_alpha(metadata, layer, down.shape[0])))
    return layers, "/".join(sorted(layouts)), keys


def _layer_name(name: str) -> str:
    """A LoRA key's module part -> the video UNet's module name."""
    from nadm.checkpoint import ORIGINAL_TO_DIFFUSERS

    for old, new in ORIGINAL_TO_DIFFUSERS:
        name = name.replace(old, new)
    name = name.replace(".processor.", ".")
    return name + ".0" if name.endswith(".to_out") else name


def _metadata_alpha(metadata: dict | None, layer: str, rank: int) -> float:
    """A layer's alpha from diffusers' LoRA metadata (`lora_alpha`, `alpha_pattern` resolved as PEFT does); without
    metadata alpha = rank, the convention of diffusers and AnimateDiff (`W += up @ down`)."""
    if not metadata:
        return float(rank)
    from peft.utils.other import get_pattern_key

    pattern = metadata.get("alpha_pattern") or {}
    key = get_pattern_key(list(pattern), layer)
    return float(pattern.get(key, metadata.get("lora_alpha", rank)))


# ------------------------------------------------------------------------------------------ fusing


def unused_layer(layer: str, config: NADMConfig) -> bool:
    """Whether the configured attention types never use this layer: sparse-causal attention's query and key (only
    `W_o W_v z_{i-1}` is computed, Eq. 8) and every projection of an attention switched off (Table II)."""
    match = _PROJECTION.search(layer)
    if match is None:
        return False
    kind = config.attn1 if match.group(1) == "attn1" else config.attn2
    return kind == "off" or (kind == "sparse_causal" and match.group(2) in ("to_q", "to_k"))


def check_fits(lora: MotionLora, motion: dict[str, torch.Tensor], motion_source: str) -> None:
    """NADMError naming a key unless every layer of `lora` is a linear layer of these motion weights with its shapes."""
    for layer, (down, up, _) in lora.layers.items():
        weight = motion.get(f"{layer}.weight")
        if "motion_modules" not in layer or weight is None or weight.ndim != 2:
            raise NADMError(
                f"the motion LoRA {lora.source}: key {lora.keys.get(layer, layer)} fits no motion module "
                f"(no linear layer {layer} in the motion weights {motion_source})"
            )
        if down.shape[1] != weight.shape[1] or up.shape[0] != weight.shape[0]:
            raise NADMError(
                f"the motion LoRA {lora.source}: key {lora.keys.get(layer, layer)} is for a {down.shape[1]} -> "
                f"{up.shape[0]} layer, but {layer} of the motion weights {motion_source} is {weight.shape[1]} -> "
                f"{weight.shape[0]} (a LoRA for another motion module)"
            )


def read_motion_loras(items: Iterable[MotionLora | MotionLoraSpec | str], weights) -> list[MotionLora]:
    """Motion LoRAs read (specs) or taken as they are, each checked against `weights` (a MotionWeights), before the
    base model loads."""
    loras = [item if isinstance(item, MotionLora) else read_motion_lora(item) for item in items]
    for lora in loras:
        check_fits(lora, weights.motion, weights.source)
    return loras


def fuse_motion_loras(video_unet: diffusers.UNetMotionModel, config: NADMConfig, loras: list[MotionLora]) -> None:
    """Fuse each LoRA at its scale into the video UNet's motion weights (diffusers' `load_lora_adapter`, PEFT's merge,
    in float32), then unload the adapters; layers the attention types never use are left out, said once per LoRA."""
    # 1. what each LoRA adapts that these attention types use
    used = []
    for lora in loras:
        unused = sorted(layer for layer in lora.layers if unused_layer(layer, config))
        if unused:
            note(f"the motion LoRA {lora.source} changes {len(unused)} layer(s) that {config.kind}'s motion module never "
                 f"uses (e.g. {unused[0]}: {_why_unused(unused[0], config)}); they are left out")  # fmt: skip
        used.append({k: v for k, v in lora.layers.items() if k not in unused})
    touched = set().union(*used)
    if not touched:
        return
    # 2. those layers in float32, so the factors load and W + scale * (alpha/r) * up @ down is added at full precision
    dtype = video_unet.dtype
    for layer in touched:
        video_unet.get_submodule(layer).float()
    # 3. one PEFT adapter per LoRA, weighted by its scale, fused, unloaded: plain Linear layers again
    names = [f"motion_lora_{i}" for i, layers in enumerate(used) if layers]
    for name, layers in zip(names, (layers for layers in used if layers)):
        state, adapter_config = peft_form(layers)
        with warnings.catch_warnings():  # PEFT warns that a second adapter joins the first: that is the intent
            warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
            video_unet.load_lora_adapter(state, prefix=None, adapter_name=name, metadata=adapter_config)
    video_unet.set_adapters(names, [lora.scale for lora, layers in zip(loras, used) if layers])
    video_unet.fuse_lora(lora_scale=1.0, adapter_names=names)
    video_unet.unload_lora()
    for layer in touched:
        video_unet.get_submodule(layer).to(dtype)
    assert not has_lora(video_unet), "unload_lora removes every adapter layer"


def _why_unused(layer: str, config: NADMConfig) -> str:
    kind = config.attn1 if ".attn1." in layer else config.attn2
    return "attention switched off" if kind == "off" else "sparse-causal attention uses no query or key (Eq. 8)"


def peft_form(layers: dict) -> tuple[dict, dict]:
    """{layer: (down, up, alpha)} -> (PEFT state dict `layer.lora_A.weight`/`lora_B.weight`, the `LoraConfig`
    arguments: the commonest rank and alpha, patterns for the others, anchored as diffusers anchors them)."""
    state, ranks, alphas = {}, {}, {}
    for layer, (down, up, alpha) in layers.items():
        state[f"{layer}.lora_A.weight"], state[f"{layer}.lora_B.weight"] = down, up
        ranks[layer], alphas[layer] = down.shape[0], alpha
    rank = collections.Counter(ranks.values()).most_common(1)[0][0]
    alpha = collections.Counter(alphas.values()).most_common(1)[0][0]
    return state, {
        "r": rank,
        "lora_alpha": alpha,
        "rank_pattern": {f"^{k}": v for k, v in ranks.items() if v != rank},
        "alpha_pattern": {f"^{k}": v for k, v in alphas.items() if v != alpha},
        "target_modules": sorted(layers),
    }


def has_lora(module: torch.nn.Module) -> bool:
    """Whether a PEFT adapter layer is in `module`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


# ------------------------------------------------------------------------------------------ training


def training_targets(video_unet: diffusers.UNetMotionModel, config: NADMConfig) -> list[str]:
    """The layers a trained motion LoRA adapts: every attention projection of the motion modules that the configured
    attention types use (AnimateDiff's MotionLoRA adapts its temporal attention the same way)."""
    import torch

    return [
        name
        for name, module in video_unet.named_modules()
        if "motion_modules" in name and isinstance(module, torch.nn.Linear) and _PROJECTION.search(name)
        and not unused_layer(name, config)
    ]  # fmt: skip


def add_motion_lora(video_unet: diffusers.UNetMotionModel, config: NADMConfig, rank: int, alpha: float) -> list[str]:
    """Put a trainable PEFT LoRA (rank, alpha; up initialised to 0, so the module is unchanged at first) on the
    motion module's attention projections; returns the layers it adapts."""
    from peft import LoraConfig

    targets = training_targets(video_unet, config)
    if not targets:
        raise NADMError(f"no attention layer to train a motion LoRA on (attn1={config.attn1}, attn2={config.attn2})")
    video_unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), adapter_name=ADAPTER)
    return targets


def is_lora_key(key: str) -> bool:
    """Whether a state-dict key names a LoRA factor."""
    return ".lora_A." in key or ".lora_B." in key


def base_motion_state_dict(video_unet: diffusers.UNetMotionModel) -> dict[str, torch.Tensor]:
    """The motion-module weights under a LoRA being trained, keyed as without it (MotionAdapter keys)."""
    return {
        k.replace(".base_layer.", "."): v
        for k, v in video_unet.state_dict().items()
        if "motion_modules" in k and not is_lora_key(k)
    }


def layers_from_trained(motion: dict[str, torch.Tensor], alpha: float) -> dict:
    """Trained LoRA tensors keyed as in the video UNet (`<layer>.lora_A.default.weight`, other keys ignored) ->
    {layer: (down, up, alpha)}."""
    down, up = f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"
    return {k[: -len(down)]: (v, motion[k[: -len(down)] + up], float(alpha)) for k, v in motion.items() if k.endswith(down)}


def trained_keys(layers: dict) -> dict[str, torch.Tensor]:
    """{layer: (down, up, alpha)} -> the video UNet's keys of a LoRA being trained (for resuming from an export)."""
    out = {}
    for layer, (down, up, _) in layers.items():
        out[f"{layer}.lora_A.{ADAPTER}.weight"], out[f"{layer}.lora_B.{ADAPTER}.weight"] = down, up
    return out


def save_motion_lora(folder: Path, layers: dict, sidecar: dict[str, Any]) -> Path:
    """Write a trained motion LoRA as a diffusers LoRA folder (`pytorch_lora_weights.safetensors`, `unet.`-prefixed
    PEFT keys, its LoraConfig in the metadata: what `AnimateDiffPipeline.load_lora_weights` reads) plus SIDECAR,
    atomically."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    from nadm.outputs import staged_folder, write_text_atomic

    state, adapter_config = peft_form(layers)
    with staged_folder(Path(folder), overwrite=False) as tmp:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        StableDiffusionLoraLoaderMixin.save_lora_weights(tmp, unet_lora_layers=tensors, unet_lora_adapter_metadata=adapter_config,
                                                         weight_name=LORA_FILE)  # fmt: skip
        write_text_atomic(tmp / SIDECAR, json.dumps({"format": FORMAT, "format_version": 1, **sidecar}, indent=2) + "\n")
    return Path(folder)


def read_sidecar(folder: Path) -> dict[str, Any]:
    """An exported motion LoRA's SIDECAR (NADMError naming it when it is missing or damaged)."""
    path = Path(folder) / SIDECAR
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NADMError(f"{path} is missing or damaged: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NADMError(f"{path} is not an nadm motion-LoRA sidecar")
    return data
