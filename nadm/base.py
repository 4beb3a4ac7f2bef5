"""The frozen Stable Diffusion 1.5 base (Sec. III-C, IV-A1): its components from a hub id, a local diffusers folder
or a single-file `.safetensors`/`.ckpt` checkpoint, with LoRAs fused on top.

Where a source is read from:
- a local diffusers folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`): each component's
  `from_pretrained(folder, subfolder=...)`;
- a hub id (default `stable-diffusion-v1-5/stable-diffusion-v1-5`): the same, fetched/cached by huggingface_hub;
- a single file (community fine-tunes, original SD key layout): diffusers' `StableDiffusionPipeline.from_single_file`.
  The file holds weights only; the component configs (and the tokenizer) come from `config`, a local diffusers
  folder of the same architecture (or a hub id). Without `config`, diffusers infers the matching hub repo from
  the keys and needs it in the hub cache or online.
LoRAs (diffusers/PEFT or kohya format, whatever diffusers' `load_lora_weights` reads) are loaded as named
adapters, weighted by their scales, fused into the UNet/text-encoder weights and unloaded again, so sampling runs
on plain weights at full speed.
"""

# diffusers and transformers are imported inside functions (CLI start-up time); nadm.pipeline too (import cycle).

from __future__ import annotations

import contextlib
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nadm.errors import NADMError
from nadm.hub import offline_unless_reachable
from nadm.weights import check_weights

DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(src: str) -> bool:
    """Whether `src` has the form of a Hugging Face hub id (`owner/name`)."""
    return bool(_HUB_ID.fullmatch(src)) and not src.startswith((".", "~"))


def split_scale(spec: str, what: str) -> tuple[str, float]:
    """`SRC` or `SRC:SCALE` -> (SRC, scale): the last `:` followed by a number is the scale (default 1), unless SPEC
    itself exists; a `:` after an existing SRC must be followed by a finite number (NADMError naming `what`)."""
    head, sep, tail = spec.rpartition(":")
    if Path(spec).expanduser().exists() or not (sep and head):
        return spec, 1.0  # no scale (or a ':' that is part of an existing path)
    try:
        scale = float(tail)
    except ValueError:
        if Path(head).expanduser().exists():
            raise NADMError(f"{what} scale {tail!r} in {spec!r} is not a number (SRC:SCALE, e.g. {head}:0.7)") from None
        return spec, 1.0
    if not math.isfinite(scale):
        raise NADMError(f"{what} scale {tail!r} in {spec!r} must be a finite number")
    return head, scale


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to fuse into the base: a file (or diffusers LoRA folder) and its scale."""

    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "LoraSpec":
        """`FILE` or `FILE:SCALE` (`split_scale`); the file must exist."""
        path, scale = split_scale(spec, "LoRA")
        resolved = Path(path).expanduser()
        if not resolved.exists():
            raise NADMError(f"LoRA file not found: {path}")
        return cls(resolved, scale)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "scale": self.scale}


@dataclass
class BaseModel:
    """SD 1.5 components ready for sampling (LoRAs already fused) and where they came from."""

    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    source: str
    kind: str  # "hub", "folder" or "single-file"
    config: str | None = None  # single-file only: where the component configs came from
    loras: tuple[LoraSpec, ...] = field(default_factory=tuple)

    def describe(self) -> dict[str, Any]:
        """The base's provenance, for the settings and the sidecar."""
        return {"source": self.source, "kind": self.kind, "config": self.config, "loras": [l.describe() for l in self.loras]}


def base_kind(src: str) -> str:
    """'single-file', 'folder' or 'hub' for a base source; NADMError for a missing or unusable local path."""
    path = Path(src).expanduser()
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise NADMError(f"base checkpoint not found: {src}")
        return "single-file"
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise NADMError(f"{src} is not a diffusers model folder (no model_index.json or unet/ in it)")
        return "folder"
    if path.exists():
        raise NADMError(f"{src} is neither a diffusers folder nor a {'/'.join(SINGLE_FILE_SUFFIXES)} checkpoint")
    if is_hub_id(src):
        return "hub"
    raise NADMError(f"base model not found: {src} (expected a diffusers folder, a .safetensors/.ckpt file or a hub id)")


def check_base_source(src: str, config: str | None = None) -> str:
    """The base's kind (`base_kind`), after checking that a config source comes only with a single file and exists."""
    kind = base_kind(src)
    if config is None:
        return kind
    if kind != "single-file":
        raise NADMError("--base-config applies to single-file (.safetensors/.ckpt) base checkpoints only")
    path = Path(config).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise NADMError(f"--base-config {config} is not a diffusers pipeline folder (no model_index.json)")
    elif not _HUB_ID.fullmatch(config):
        raise NADMError(f"base config folder not found: {config}")
    return kind


def _unreachable(src: str, err: Exception) -> NADMError:
    """The one-line error for a source that could not be read, local or remote."""
    reason = f"{err.__class__.__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    if Path(src).expanduser().exists():
        return NADMError(f"cannot load the base model from {src}: {reason}")
    return NADMError(
        f"cannot load {src!r} from the Hugging Face hub (offline, not cached or not found); "
        "pass a local path: a diffusers folder or a .safetensors/.ckpt file (with --base-config for a single file)"
    )


@contextlib.contextmanager
def quiet_loading():
    """Silence diffusers/transformers info, warnings and progress bars while weights load (errors still raise)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    state = (dlog.get_verbosity(), tlog.get_verbosity(), dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled())
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # diffusers 0.42 still passes huggingface_hub an argument it deprecated: noise, not a problem
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
            yield
    finally:
        dlog.set_verbosity(state[0])
        tlog.set_verbosity(state[1])
        if state[2]:
            dlog.enable_progress_bar()
        if state[3]:
            tlog.enable_progress_bar()


# Errors a loader raises for a bad or unreachable source (huggingface_hub's errors subclass OSError/ValueError).
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


def _load_components(src: str, dtype) -> dict[str, Any]:
    """unet, vae, text_encoder and tokenizer from a diffusers folder or hub id, each from its subfolder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer}
    if not Path(src).exists():
        offline_unless_reachable()
    out = {}
    for name in COMPONENTS:
        kwargs = {} if name == "tokenizer" else {"torch_dtype": dtype}
        try:
            out[name] = classes[name].from_pretrained(src, subfolder=name, **kwargs)
        except _LOAD_ERRORS as e:
            raise _unreachable(src, e) from None
    return out


def _load_single_file(path: str, config: str | None, dtype) -> dict[str, Any]:
    """unet, vae, text_encoder and tokenizer from an original-layout SD checkpoint (diffusers' from_single_file)."""
    from diffusers import StableDiffusionPipeline

    check_weights(path)  # a damaged or random file is said to be one, not blamed on the configs
    if config is None or not Path(config).exists():
        offline_unless_reachable()  # the component configs come from the hub
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            path, config=config, torch_dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    except _LOAD_ERRORS as e:
        if config is None:
            raise NADMError(
                f"cannot load the single-file checkpoint {path} ({e.__class__.__name__}): its component configs come "
                "from the hub (offline, not cached or not found); pass --base-config DIR, a local diffusers folder of "
                "the same architecture (e.g. a downloaded stable-diffusion-v1-5)"
            ) from None
        if "meta tensor" in str(e):  # diffusers leaves weights the file lacks on the meta device
            raise NADMError(
                f"cannot load the single-file checkpoint {path}: weights are missing from it for the architecture in "
                f"{config} (an incomplete file, or not a Stable Diffusion 1.5 checkpoint)"
            ) from None
        reason = f"{e.__class__.__name__}: {(str(e).strip().splitlines() or [''])[0]}"
        raise NADMError(f"cannot load the single-file checkpoint {path} with the configs of {config}: {reason}") from None
    return {name: getattr(pipe, name) for name in COMPONENTS}


def _check_complete(components: dict[str, Any], src: str) -> None:
    """Refuse a model with weights left uninitialised (diffusers leaves keys missing from a file on the meta device)."""
    for name in ("unet", "vae", "text_encoder"):
        missing = [k for k, t in components[name].state_dict().items() if t.is_meta]
        if missing:
            more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
            raise NADMError(f"{src}: the {name} weights are incomplete, missing {missing[0]}{more}")


def _fuse_loras(components: dict[str, Any], loras: tuple[LoraSpec, ...]) -> None:
    """Load each LoRA as a named adapter, weight it by its scale, fuse all into the weights, then unload the adapters."""
    from diffusers import StableDiffusionPipeline

    from nadm.pipeline import make_scheduler

    holder = StableDiffusionPipeline(  # only a container for diffusers' LoRA loader; never called
        **components, scheduler=make_scheduler("ddim"), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    names = [f"lora_{i}" for i in range(len(loras))]
    for name, lora in zip(names, loras):
        check_weights(lora_weights_file(lora.path))
        try:
            holder.load_lora_weights(str(lora.path), adapter_name=name)
        except _LOAD_ERRORS as e:
            raise NADMError(f"cannot load the LoRA {lora.path}: {e.__class__.__name__}: {(str(e).splitlines() or [''])[0]}") from None
    holder.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
    holder.fuse_lora(adapter_names=names, lora_scale=1.0)
    holder.unload_lora_weights()  # the fused weights stay; the adapter layers go


# the weights file of a diffusers LoRA folder, in the order diffusers looks for it
LORA_WEIGHTS = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")


def lora_weights_file(path: Path) -> Path:
    """A LoRA's weights file: the file itself, or the one in a diffusers LoRA folder."""
    if not path.is_dir():
        return path
    found = next((path / name for name in LORA_WEIGHTS if (path / name).is_file()), None)
    if found is None:
        raise NADMError(f"the LoRA folder {path} has no {' or '.join(LORA_WEIGHTS)}")
    return found


def load_base(src: str | Path = DEFAULT_BASE, config: str | Path | None = None, loras: tuple[LoraSpec, ...] = (), dtype=None) -> BaseModel:
    """SD 1.5 components from `src` (hub id, diffusers folder or single file + `config`), LoRAs fused (Sec. III-C)."""
    # 1. what the source is (NADMError for missing local paths before anything is imported)
    src, config = str(src), (None if config is None else str(config))
    kind = check_base_source(src, config)
    loras = tuple(loras)
    # 2. load the components
    with quiet_loading():
        if kind == "single-file":
            local_config = config if config is None or not Path(config).expanduser().exists() else str(Path(config).expanduser())
            components = _load_single_file(str(Path(src).expanduser()), local_config, dtype)
        else:
            components = _load_components(str(Path(src).expanduser()) if kind == "folder" else src, dtype)
        _check_complete(components, src)
        # 3. LoRAs on top
        if loras:
            _fuse_loras(components, loras)
    for name in ("unet", "vae", "text_encoder"):
        components[name].requires_grad_(False).eval()
    return BaseModel(**components, source=src, kind=kind, config=config, loras=loras)


def load_unet(src: str = DEFAULT_BASE, **kwargs):
    """The base `UNet2DConditionModel` alone, from a diffusers folder (its `unet/` subfolder) or a hub id."""
    from diffusers import UNet2DConditionModel

    kind = base_kind(src)
    if kind == "single-file":
        return load_base(src, **kwargs).unet
    if kind == "hub":
        offline_unless_reachable()
    with quiet_loading():
        try:
            return UNet2DConditionModel.from_pretrained(src, subfolder="unet", **kwargs)
        except _LOAD_ERRORS as e:
            raise _unreachable(src, e) from None
