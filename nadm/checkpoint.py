"""NADM checkpoints and AnimateDiff motion weights: one loader for every motion source (Sec. III-D1).

An NADM checkpoint is a folder:
    config.json                   {"format": "nadm", "format_version": 1, "nadm_version", "kind", "config": NADMConfig,
                                   "trained_frames": the training clip length (the default context of long clips)}
    motion_modules.safetensors    motion-module weights, keyed as diffusers' MotionAdapter
    noise_adapter.safetensors     the noise adapter (training only; optional)
AnimateDiff motion weights come as a diffusers `MotionAdapter` folder or hub id, or as an original-format
file (`.ckpt`/`.safetensors` with `...temporal_transformer...attention_blocks.0...` keys).
"""

# diffusers and safetensors are imported inside the functions that read or write weights (CLI start-up time).

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from nadm import __version__
from nadm.config import NADMConfig, from_dict, to_dict
from nadm.errors import NADMError
from nadm.motion import check_state_dict
from nadm.outputs import staged_folder
from nadm.weights import check_weights, read_weights

FORMAT = "nadm"
FORMAT_VERSION = 1
MOTION_FILE = "motion_modules.safetensors"
ADAPTER_FILE = "noise_adapter.safetensors"
ANIMATEDIFF_TRAINED_FRAMES = 16  # AnimateDiff's SD 1.5 motion modules (v1-4, v1-5, v1-5-2) train on 16-frame clips


@dataclass
class MotionWeights:
    """Motion weights from any source, with the config that says how to run them."""

    config: NADMConfig
    motion: dict[str, torch.Tensor]
    noise_adapter: dict[str, torch.Tensor] | None = None
    source: str = ""
    source_format: str = ""  # "nadm", "diffusers-motion-adapter" or "animatediff-original"
    trained_frames: int | None = None  # training clip length (default context window); None: not recorded


def save_checkpoint(
    path: str | Path,
    config: NADMConfig,
    motion: dict[str, torch.Tensor],
    noise_adapter: dict[str, torch.Tensor] | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
    trained_frames: int | None = None,
) -> Path:
    """Write an NADM checkpoint folder atomically (a temporary folder renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise NADMError(f"{path} already exists (pass overwrite=True / --overwrite to replace it)")
    if not motion:
        raise ValueError("no motion-module weights to save")
    with staged_folder(path, overwrite) as tmp:
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "nadm_version": __version__, "kind": config.kind}
        meta["config"] = to_dict(config)
        if trained_frames is not None:
            meta["trained_frames"] = int(trained_frames)
        if extra:
            meta.update(extra)
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in motion.items()}, str(tmp / MOTION_FILE))
        if noise_adapter is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in noise_adapter.items()}, str(tmp / ADAPTER_FILE))
    return path


def is_nadm_checkpoint(path: str | Path) -> bool:
    """True for a folder whose config.json says it is an NADM checkpoint."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def load_checkpoint(path: str | Path) -> MotionWeights:
    """Read an NADM checkpoint folder, refusing unknown formats and configs with unknown keys."""
    path = Path(path)
    try:
        meta = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise NADMError(f"{path} is not an NADM checkpoint (no config.json)") from None
    except json.JSONDecodeError as e:
        raise NADMError(f"{path / 'config.json'} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT:
        raise NADMError(f"{path} is not an NADM checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise NADMError(f"{path}: checkpoint format version {meta.get('format_version')} is not supported (this nadm reads {FORMAT_VERSION})")
    try:
        config = from_dict(NADMConfig, meta["config"], where=f"{path / 'config.json'}")
    except (KeyError, ValueError, TypeError) as e:
        raise NADMError(f"bad NADM config in {path}: {e}") from None
    if not (path / MOTION_FILE).is_file():
        raise NADMError(f"{path} has no {MOTION_FILE}")
    adapter = read_weights(path / ADAPTER_FILE) if (path / ADAPTER_FILE).is_file() else None
    weights = MotionWeights(config, read_weights(path / MOTION_FILE), adapter, str(path), "nadm")
    weights.trained_frames = _trained_frames(meta, path)
    return weights


def _trained_frames(meta: dict, path: Path) -> int | None:
    """The training clip length: `trained_frames`, else (checkpoints before that field) the exported training
    config's `data.frames`, else None (the caller's stated fallback)."""
    frames = meta.get("trained_frames")
    if frames is None:
        train = meta.get("train_config")
        data = train.get("data") if isinstance(train, dict) else None
        frames = data.get("frames") if isinstance(data, dict) else None
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 2):
        raise NADMError(f"bad trained_frames {frames!r} in {path / 'config.json'}: expected an integer >= 2")
    return frames


# --- AnimateDiff original-format key conversion (our own mapping of the published layout) ---------------------

ORIGINAL_TO_DIFFUSERS = [
    (".temporal_transformer.", "."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
]
_ORIGINAL_PE = re.compile(r"^(.*\.transformer_blocks\.\d+)\.attention_blocks\.(\d+)\.pos_encoder\.pe$")


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The sinusoidal temporal position table `(1, length, dim)` both AnimateDiff and diffusers use (Eq. 7's PE)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-torch.log(torch.tensor(10000.0)) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * freq)
    table[0, :, 1::2] = torch.cos(position * freq)
    return table


def convert_original_motion_state_dict(state_dict: dict[str, torch.Tensor], max_seq_length: int = 32) -> dict[str, torch.Tensor]:
    """Original AnimateDiff motion-module keys -> diffusers MotionAdapter keys.

    The original keeps one position table per attention block; diffusers one per transformer block, shared by
    attn1 and attn2. Each original table must be the standard sinusoid (checked on its length); the converted
    table is that sinusoid at `max_seq_length` positions, so 24-frame originals extend to 32.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        pe = _ORIGINAL_PE.match(key)
        if pe:
            length, dim = value.shape[-2:]
            if not torch.allclose(value.reshape(1, length, dim).float(), sinusoidal_table(length, dim), atol=1e-4):
                raise NADMError(f"{key} is not the sinusoidal position encoding this conversion supports")
            new = f"{pe.group(1)}.pos_embed.pe".replace(".temporal_transformer.", ".")
            converted[new] = sinusoidal_table(max_seq_length, dim).to(value.dtype)
            continue
        if "motion_modules" not in key or ".temporal_transformer." not in key:
            raise NADMError(f"unexpected key in an AnimateDiff motion-module checkpoint: {key}")
        new = key
        for old, rep in ORIGINAL_TO_DIFFUSERS:
            new = new.replace(old, rep)
        converted[new] = value
    return converted


def _infer_original_config(converted: dict[str, torch.Tensor], base: NADMConfig) -> NADMConfig:
    """Architecture of converted AnimateDiff weights: channels and layers from the weights, heads from `base`."""
    channels, layers = [], {}
    for key, value in converted.items():
        m = re.match(r"^down_blocks\.(\d+)\.motion_modules\.(\d+)\.proj_in\.weight$", key)
        if m:
            block, layer = int(m.group(1)), int(m.group(2))
            layers[block] = max(layers.get(block, 0), layer + 1)
            if layer == 0:
                channels.append((block, value.shape[0]))
    if not channels:
        raise NADMError("no down-block motion modules found in the AnimateDiff weights")
    counts = set(layers.values())
    if len(counts) != 1:
        raise NADMError(f"AnimateDiff weights have different motion layers per block: {layers}")
    return base.replace(
        attn1="versatile",
        attn2="versatile",
        block_out_channels=tuple(c for _, c in sorted(channels)),
        motion_layers_per_block=counts.pop(),
        use_motion_mid_block=any(k.startswith("mid_block.") for k in converted),
    )


def load_motion_source(src: str | Path, heads_from: NADMConfig | None = None) -> MotionWeights:
    """Motion weights from an NADM folder, a diffusers MotionAdapter folder or hub id, or an original file.

    AnimateDiff weights keep their own attention types (both versatile: the AnimateDiff baseline); their head
    count is not stored in original files and is taken from `heads_from` (default: 8, as AnimateDiff uses).
    """
    base = heads_from or NADMConfig()
    path = Path(src)
    # 1. NADM checkpoint folder (a config.json that does not parse is a damaged folder, whichever kind it was).
    if path.is_dir():
        _check_folder_config(path)
        if is_nadm_checkpoint(path):
            return load_checkpoint(path)
    # 2. Original-format AnimateDiff file.
    if path.is_file():
        converted = convert_original_motion_state_dict(read_weights(path), base.motion_max_seq_length)
        config = _infer_original_config(converted, base)
        return MotionWeights(config, converted, None, str(path), "animatediff-original", ANIMATEDIFF_TRAINED_FRAMES)
    # 3. diffusers MotionAdapter: a local folder or a hub id.
    if not path.exists() and (str(src).endswith((".ckpt", ".safetensors", ".pt", ".pth")) or str(src).startswith((".", "/"))):
        raise NADMError(f"motion weights not found: {src}")
    adapter = _load_motion_adapter(str(src))
    cfg = adapter.config
    config = base.replace(
        attn1="versatile",
        attn2="versatile",
        block_out_channels=tuple(cfg.block_out_channels),
        motion_layers_per_block=_single(cfg.motion_layers_per_block, "motion_layers_per_block"),
        motion_num_attention_heads=_single(cfg.motion_num_attention_heads, "motion_num_attention_heads"),
        motion_norm_num_groups=cfg.motion_norm_num_groups,
        motion_max_seq_length=cfg.motion_max_seq_length,
        use_motion_mid_block=cfg.use_motion_mid_block,
    )
    return MotionWeights(config, dict(adapter.state_dict()), None, str(src), "diffusers-motion-adapter", ANIMATEDIFF_TRAINED_FRAMES)


def _single(value, name: str) -> int:
    """A per-block setting that nadm supports only when it is the same for every block."""
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise NADMError(f"motion adapters with a different {name} per block are not supported: {value}")
    return value[0]


def _check_folder_config(path: Path) -> None:
    """NADMError naming the file when a motion folder's config.json is not a JSON object."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NADMError(f"{cfg} is damaged: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise NADMError(f"{cfg} is damaged: a JSON {type(meta).__name__}, not an object")


# the weights file of a diffusers MotionAdapter folder, in the order diffusers looks for it
ADAPTER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _load_motion_adapter(src: str):
    """diffusers `MotionAdapter.from_pretrained`, with offline/missing sources turned into one clear line; a local
    folder's weights pass `check_weights` first, so a damaged file is named as such."""
    from diffusers import MotionAdapter

    from nadm.hub import offline_unless_reachable

    folder = Path(src)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise NADMError(f"{src} is neither an NADM checkpoint nor a diffusers MotionAdapter folder (no config.json)")
        weights = next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)
        if weights is None:
            raise NADMError(f"{src} has no motion weights ({' or '.join(ADAPTER_WEIGHTS)})")
        check_weights(weights)
    else:
        offline_unless_reachable()
    try:
        return MotionAdapter.from_pretrained(src)
    except (OSError, ValueError) as e:
        if folder.is_dir():
            reason = next((line.strip() for line in str(e).splitlines() if line.strip()), e.__class__.__name__)
            raise NADMError(f"{src} is not a diffusers MotionAdapter folder nadm can load: {reason}") from None
        raise NADMError(
            f"cannot load motion weights {src!r} from the Hugging Face hub (offline or not found); "
            "pass a local path to an NADM checkpoint, a MotionAdapter folder or an AnimateDiff .ckpt/.safetensors"
        ) from None


def load_noise_adapter(adapter, state_dict: dict[str, torch.Tensor]) -> None:
    """Load noise-adapter weights strictly (key names and shapes)."""
    check_state_dict({k: v.shape for k, v in adapter.state_dict().items()}, state_dict, "noise adapter weights")
    adapter.load_state_dict(state_dict, strict=True)

