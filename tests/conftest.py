"""Shared test setup: everything offline, deterministic, on the CPU."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real test data beside the checkout (../shared/data); tests using it skip cleanly when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP oversubscription stalls (10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """A folder with test-made TorchScript stand-ins for the I3D and C3D weight files (tests/fakes.py)."""
    from fakes import save_metric_weights

    return save_metric_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP model, tokenizer and image processor saved offline (tests/fakes.py)."""
    from fakes import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random base (diffusers folder) and a tiny NADM checkpoint with random motion weights (a test module
    may define its own `tiny`)."""
    from nadm.tiny import build_tiny_base, build_tiny_motion

    root = tmp_path_factory.mktemp("tiny")
    return {"base": build_tiny_base(root / "base"), "motion": build_tiny_motion(root / "motion"), "root": root}


@pytest.fixture(scope="module")
def pipe(tiny):
    """The NADM pipeline on `tiny`, progress bars off."""
    from nadm.pipeline import NADMPipeline

    return NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], progress=False)
