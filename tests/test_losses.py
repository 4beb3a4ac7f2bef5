"""The noise contrastive loss (Eq. 9-11) against a reference written straight from the paper, and Eq. 12-13."""

import math

import pytest
import torch

from nadm.losses import NoiseAdapter, diffusion_loss, noise_contrastive_loss, total_loss


def reference_loss(emb, tau, m, positive):
    """Loops over videos, anchors and frames exactly as Eq. 9-11 read (DESIGN.md section 3)."""
    b, n, _ = emb.shape
    total = 0.0
    for v in range(b):
        r = lambda i, j: torch.dot(emb[v, i], emb[v, j]).item() / (emb[v, i].norm().item() * emb[v, j].norm().item())
        anchor_losses = []
        for i in range(n - 1):  # anchors: every frame but the last
            negatives = [math.exp(r(i, k) / tau) for k in range(n) if abs(k - i) > m]
            if positive == "next":
                positives = [i + 1]
            else:
                positives = [k for k in range(n) if k != i and abs(k - i) <= m]
            terms = []
            for j in positives:
                p = math.exp(r(i, j) / tau)
                terms.append(-math.log(p / (p + sum(negatives))))
            anchor_losses.append(sum(terms) / len(terms))
        total += sum(anchor_losses) / (n - 1)
    return total / b


@pytest.mark.parametrize("positive", ["next", "window"])
@pytest.mark.parametrize("frames", [4, 8, 16])
@pytest.mark.parametrize("m", [1, 2, 4])
def test_matches_the_paper_reference(m, frames, positive):
    g = torch.Generator().manual_seed(m * 100 + frames)
    emb = torch.randn(3, frames, 16, generator=g, dtype=torch.float64)
    got = noise_contrastive_loss(emb, tau=0.5, m=m, positive=positive).item()
    assert got == pytest.approx(reference_loss(emb, 0.5, m, positive), rel=1e-5, abs=1e-6)


def test_no_negatives_cross_videos():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 8, 16, generator=g)
    b = torch.randn(1, 8, 16, generator=g)
    joint = noise_contrastive_loss(torch.cat([a, b]), m=2)
    separate = (noise_contrastive_loss(a, m=2) + noise_contrastive_loss(b, m=2)) / 2
    torch.testing.assert_close(joint, separate)


def test_smooth_clip_scores_lower_than_the_reverse():
    g = torch.Generator().manual_seed(1)
    # Smooth: a slow random walk, so neighbours agree and distant frames drift apart.
    steps = torch.randn(1, 8, 32, generator=g) * 0.3
    smooth = steps.cumsum(1) + torch.randn(1, 1, 32, generator=g) * 0.1
    # Reverse: neighbours differ (alternating directions), distant frames agree.
    base = torch.randn(1, 1, 32, generator=g)
    other = torch.randn(1, 1, 32, generator=g)
    rough = torch.cat([base if i % 2 == 0 else other for i in range(8)], dim=1)
    assert noise_contrastive_loss(smooth, m=2) < noise_contrastive_loss(rough, m=2)


def test_gradient_reaches_the_adapter():
    adapter = NoiseAdapter(4, grid=4, hidden=16, out_dim=8)
    noise = torch.randn(2, 4, 6, 8, 8, requires_grad=True)
    loss = noise_contrastive_loss(adapter(noise), m=2)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    assert noise.grad.abs().sum() > 0


def test_anchor_without_negatives_contributes_zero_and_no_nan():
    emb = torch.randn(2, 4, 8, requires_grad=True)
    loss = noise_contrastive_loss(emb, m=4)  # 4 frames, m=4: nobody has a negative
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(emb.grad).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(m=0), "m must be"),
        (dict(tau=0.0), "tau"),
        (dict(positive="all"), "positive"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        noise_contrastive_loss(torch.randn(1, 4, 8), **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="batch, frames, dim"):
        noise_contrastive_loss(torch.randn(4, 8))
    with pytest.raises(ValueError, match="at least 2 frames"):
        noise_contrastive_loss(torch.randn(1, 1, 8))
    with pytest.raises(ValueError, match="noise must be"):
        NoiseAdapter(4, 4, 8, 8)(torch.randn(1, 3, 2, 8, 8))


def test_adapter_shapes():
    adapter = NoiseAdapter(4, grid=4, hidden=16, out_dim=8)
    assert adapter(torch.randn(2, 4, 5, 32, 32)).shape == (2, 5, 8)


def test_diffusion_and_total_loss():
    pred, noise = torch.zeros(2, 4, 3, 4, 4), torch.ones(2, 4, 3, 4, 4)
    assert diffusion_loss(pred, noise).item() == pytest.approx(1.0)
    assert total_loss(torch.tensor(2.0), torch.tensor(10.0)).item() == pytest.approx(2.0 + 0.7)
    assert total_loss(torch.tensor(2.0), torch.tensor(10.0), 0.5, 1.0).item() == pytest.approx(11.0)
    with pytest.raises(ValueError, match="shape"):
        diffusion_loss(pred, noise[:, :, :2])
