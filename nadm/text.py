"""The text condition tau_theta(y) of Alg. 1 (Sec. III-C): the frozen CLIP text encoder's last hidden state.

One encoder for everything that conditions the UNet on text: the sampler (nadm.pipeline), live training batches
(nadm.train_data) and the latent cache (nadm.latent_cache). Texts longer than the tokenizer's `model_max_length`
(77 tokens for SD 1.5) are cut there, as Stable Diffusion does; `token_counts` tells a caller which ones were.
"""

# torch is imported inside the functions: the CLI imports this module before it knows whether a model will run.

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from nadm.base import quiet_loading

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer


def token_counts(texts: Sequence[str], tokenizer: CLIPTokenizer) -> list[int]:
    """Each text's length in tokens before cutting (start and end tokens included)."""
    with quiet_loading():  # the tokenizer warns about long inputs in its own words; callers say it once
        return [len(tokenizer(text, truncation=False).input_ids) for text in texts]


def encode_text(texts: Sequence[str], tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> torch.Tensor:
    """tau_theta(y) as Stable Diffusion uses it: `(len(texts), model_max_length, dim)`, padded and cut to the
    tokenizer's length, on the text encoder's device and in its dtype."""
    import torch

    ids = tokenizer(
        list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device)).last_hidden_state
