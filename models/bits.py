"""Integer panoptic maps <-> analog bits (paper §2, §3.2; official `task_utils.integer_map_to_bits`).

Each int channel is written with N_BITS = 8 bits, least significant bit first, and every bit is
mapped to the analog value a = (2·bit − 1)·b, b = `b_scale`. A (class, id) mask therefore gives
16 channels [class bit0..bit7, id bit0..bit7]; a video conditioning stack of T frames gives 16·T.

    code name          paper symbol
    b_scale            b   (input scaling, Table 3)
    analog bits        x_0 ∈ {−b, +b}^16
"""

from __future__ import annotations

import torch

N_BITS = 8  # bits per int channel: class and id each in [0, 255]


def bit_table(
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    n_bits: int = N_BITS,
) -> torch.Tensor:
    """(2^n_bits, n_bits) table: row c holds the bits of integer c, LSB first (used for
    expected bits)."""
    values = torch.arange(2**n_bits, device=device)
    shifts = torch.arange(n_bits, device=device)
    return ((values[:, None] >> shifts) & 1).to(dtype)


def group_bits(groups: int) -> int:
    """Bits per softmax group when the 16 mask bits are cut into `groups` groups (official
    `outp_softmax_groups`): 8 for the paper's 2 groups. Groups never straddle the class and
    id channels, so `groups` must be 2, 4, 8 or 16."""
    if groups not in (2, 4, 8, 16):
        raise ValueError(
            f"model.decoder.softmax_groups={groups}: must be 2, 4, 8 or 16 (the "
            f"{2 * N_BITS} mask bits are cut into equal groups within the class "
            "and the id channel)"
        )
    return 2 * N_BITS // groups


def group_values(masks: torch.Tensor, groups: int) -> torch.Tensor:
    """(class, id) masks int (B, 2, H, W) -> the integer each softmax group's bits encode,
    int64 (B, H, W, groups), groups in bit order (class low bits first, then id)."""
    n = group_bits(groups)
    shifts = (n * torch.arange(N_BITS // n, device=masks.device)).view(1, 1, -1, 1, 1)
    values = (masks.long()[:, :, None] >> shifts) & (2**n - 1)  # (B, 2, groups/2, H, W)
    return values.flatten(1, 2).permute(0, 2, 3, 1)


def int_to_analog_bits(masks: torch.Tensor, b_scale: float) -> torch.Tensor:
    """Integer maps -> analog bits.

    masks: int (B, ..., H, W), e.g. (B, 2, H, W) for a (class, id) mask or (B, T, 2, H, W) for
        video conditioning; all middle dims are flattened into C int channels (oldest first).
    Returns float (B, 8·C, H, W) in {−b, +b}: channel 8·c + k holds bit k of int channel c.
    """
    b, h, w = masks.shape[0], masks.shape[-2], masks.shape[-1]
    ints = masks.reshape(b, -1, 1, h, w).long()
    shifts = torch.arange(N_BITS, device=masks.device).view(1, 1, N_BITS, 1, 1)
    bits = ((ints >> shifts) & 1).reshape(b, -1, h, w)
    return (2.0 * bits.float() - 1.0) * b_scale


def analog_bits_to_int(x: torch.Tensor, num_classes: int, max_instances: int) -> torch.Tensor:
    """Analog bits (B, 16, H, W) -> int64 (B, 2, H, W) (class, id) (official
    `bits_to_panoptic_map`).

    Each bit is thresholded at 0; class is clipped to num_classes − 1 and id to K − 1.
    """
    b, _, h, w = x.shape
    bits = (x > 0).long().view(b, 2, N_BITS, h, w)
    powers = (2 ** torch.arange(N_BITS, device=x.device)).view(1, 1, N_BITS, 1, 1)
    ints = (bits * powers).sum(dim=2)
    limits = torch.tensor([num_classes - 1, max_instances - 1], device=x.device).view(1, 2, 1, 1)
    return torch.minimum(ints, limits)


def expected_analog_bits(logits: torch.Tensor, b_scale: float) -> torch.Tensor:
    """Softmax groups -> analog bits: a_k = (2·E[bit_k] − 1)·b with E[bit_k] = Σ_c p_c·bit_k(c).

    logits: channels-last (B, H, W, G, 2^n) (the paper's G = 2, n = 8). Returns
    (B, n·G, H, W) in [−b, b] (official `TransUNet.call`).
    """
    b, h, w, g, v = logits.shape
    n = v.bit_length() - 1
    expected = logits.float().softmax(dim=-1) @ bit_table(logits.device, n_bits=n)
    analog = (2.0 * expected - 1.0) * b_scale
    return analog.reshape(b, h, w, g * n).permute(0, 3, 1, 2)
