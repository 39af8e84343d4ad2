"""The softmax_ce loss fused with the decoder's output head (`loss.fused`).

The paper's head gives G·2^(16/G) logits per mask pixel (512 for G = 2): at a 256² mask
that is 33.5 M logits per image, which the plain loss holds as the head's output, again as
a float32 copy and as the saved log-softmax. Here the head (a linear map of the decoder's
channels-last features) and the weighted cross-entropy run on chunks of rows: the forward
keeps only each row's log-sum-exp, the backward recomputes a chunk's logits from the
features and turns them straight into the gradients of the features, the head's weight and
its bias. The value is the plain loss's (`losses.softmax_ce_loss` of the head's output) up
to float rounding; the price is the head's matmul run a second time in the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bits import group_values

CHUNK_ROWS = 1 << 16  # mask pixels per chunk: 32 M float32 logits at the paper's 512


class _LinearSoftmaxCE(torch.autograd.Function):
    """Σ over rows r and groups g of w_r·CE(h_r·Wᵀ + b, y_rg), divided by rows × G.

    h (N, F) features; weight (G·n, F) and bias (G·n,) the head; targets (N, G) int64;
    weights (N,) float32."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, weight, bias, targets, weights, chunk: int):
        groups = targets.shape[1]
        lse = torch.empty(targets.shape, dtype=torch.float32, device=h.device)
        picked = torch.empty_like(lse)
        for s in range(0, h.shape[0], chunk):
            logits = F.linear(h[s : s + chunk], weight, bias).float().unflatten(-1, (groups, -1))
            lse[s : s + chunk] = logits.logsumexp(-1)
            picked[s : s + chunk] = logits.gather(-1, targets[s : s + chunk, :, None])[..., 0]
        ctx.save_for_backward(h, weight, bias, targets, weights, lse)
        ctx.chunk = chunk
        return ((lse - picked) * weights[:, None]).sum() / targets.numel()

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        h, weight, bias, targets, weights, lse = ctx.saved_tensors
        groups, chunk = targets.shape[1], ctx.chunk
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=h.device)
        scale = weights * (grad / targets.numel())
        for s in range(0, h.shape[0], chunk):
            rows = slice(s, s + chunk)
            logits = F.linear(h[rows], weight, bias).float().unflatten(-1, (groups, -1))
            d = (logits - lse[rows, :, None]).exp()  # the softmax
            d = d - F.one_hot(targets[rows], d.shape[-1]).to(d.dtype)
            d = (d * scale[rows, None, None]).flatten(1)
            grad_h[rows] = (d.to(weight.dtype) @ weight).to(h.dtype)
            grad_w += d.t() @ h[rows].float()
            grad_b += d.sum(0)
        return grad_h, grad_w.to(weight.dtype), grad_b.to(bias.dtype), None, None, None


def fused_softmax_ce(
    h: torch.Tensor,
    head_weight: torch.Tensor,
    head_bias: torch.Tensor,
    masks: torch.Tensor,
    weights: torch.Tensor,
    groups: int,
    chunk: int = CHUNK_ROWS,
) -> torch.Tensor:
    """`softmax_ce_loss(F.linear(h, head_weight, head_bias) as (B, H, W, G, n), masks,
    weights)` without holding the logits.

    h: channels-last features (B, H, W, F); head_weight (G·n, F) (a 1×1 convolution's
    weight may come flattened); head_bias (G·n,); masks int (B, 2, H, W); weights (B, H, W).
    """
    targets = group_values(masks, groups).reshape(-1, groups)
    return _LinearSoftmaxCE.apply(
        h.reshape(-1, h.shape[-1]),
        head_weight.flatten(1),
        head_bias,
        targets,
        weights.reshape(-1).float(),
        chunk,
    )
