"""Pixel weights and the three x_0 losses of paper §3.2 (official `Model.compute_loss`,
`task_utils.get_normalized_weight`).

    code name    paper symbol
    p            p     weight exponent: w_ij = (1/(c_ij + 1))^p (paper writes 1/c^p; code c+1)
    weights      w'    w normalised so each image's weights sum to H·W
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bits import group_values
from .config import LossKind


def instance_weights(ids: torch.Tensor, p: float, max_instances: int) -> torch.Tensor:
    """ids: int (B, H, W) -> float (B, H, W) weights w'.

    c_ij = pixels of the image sharing pixel ij's id (id 0 is a region too). Ids >= K get
    weight 0. Counting is a scatter-add with a per-image offset: no loop, no host sync.
    """
    b, h, w = ids.shape
    k = max_instances
    valid = ids < k
    bucket = torch.where(valid, ids.clamp(min=0), k)  # ids >= K share the spare bucket K
    flat = (bucket + (k + 1) * torch.arange(b, device=ids.device).view(b, 1, 1)).reshape(-1)
    counts = torch.zeros(b * (k + 1), device=ids.device).scatter_add_(
        0, flat, torch.ones(flat.shape, device=ids.device)
    )
    c = counts[flat].view(b, h, w)
    weights = (1.0 / (c + 1.0)) ** p * valid
    total = weights.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    return weights * (h * w) / total


def softmax_ce_loss(
    logits: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Mean over pixels and the G groups of w'·CE (official 'x_softmax_xent').

    logits: channels-last (B, H, W, G, 2^(16/G)) (the paper's G = 2: (B, H, W, 2, 256));
    masks: int (B, 2, H, W) (class, id); weights: (B, H, W).
    """
    g, n = logits.shape[-2:]
    targets = group_values(masks, g)  # (B, H, W, G): the int each group's bits encode
    ce = F.cross_entropy(logits.reshape(-1, n).float(), targets.reshape(-1), reduction="none")
    return (ce.view(targets.shape) * weights[..., None]).mean()


def l2_loss(x0_hat: torch.Tensor, x0: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean(w'·(x̂_0 − x_0)²) over pixels and the 16 bits (official 'x').

    x0_hat, x0: (B, 16, H, W); weights: (B, H, W).
    """
    return ((x0_hat.float() - x0) ** 2 * weights[:, None]).mean()


def sigmoid_ce_loss(
    out: torch.Tensor, x0: torch.Tensor, b_scale: float, weights: torch.Tensor
) -> torch.Tensor:
    """mean(w'·(−log σ(out·x_0/b))) per bit (official 'x_sigmoid_xent'). out, x0: (B, 16, H, W)."""
    return (F.softplus(-out.float() * x0 / b_scale) * weights[:, None]).mean()


def mask_loss(
    kind: LossKind,
    out: torch.Tensor,
    masks: torch.Tensor,
    x0: torch.Tensor,
    weights: torch.Tensor,
    b_scale: float,
    groups: int = 2,
) -> torch.Tensor:
    """Dispatch on LossKind. out: channels-last decoder output (B, H, W, G·2^(16/G)) for
    softmax_ce with `groups` G (512 for the paper's 2), else (B, H, W, 16); masks (B, 2, H, W);
    x0 (B, 16, H, W); weights (B, H, W)."""
    if kind == LossKind.SOFTMAX_CE:
        return softmax_ce_loss(out.unflatten(-1, (groups, -1)), masks, weights)
    if kind == LossKind.L2:
        return l2_loss(out.permute(0, 3, 1, 2), x0, weights)
    if kind == LossKind.SIGMOID_CE:
        return sigmoid_ce_loss(out.permute(0, 3, 1, 2), x0, b_scale, weights)
    raise ValueError(f"unknown loss kind {kind!r}")
