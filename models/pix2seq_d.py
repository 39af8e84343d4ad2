"""Pix2Seq-D: image encoder + TransUNet denoiser over 16 analog bits (paper Algorithms 1-2).

This class only composes bits.py, diffusion.py, losses.py, encoder.py and decoder.py.

    decoder input channels (docs/model.md, "Architecture" and "Video")
    [0, 16)                          x_t: noisy analog bits of the target mask
    [16, 16 + fuse_dim)              fused encoder map (zeros without 'cat' conditioning)
    next 16·cond_frames              video: bits of the masks at t−2, t−1 (oldest first)
    next 16 (only if self_cond)      previous x̂_0 estimate (self-conditioning)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .bits import (
    N_BITS,
    analog_bits_to_int,
    expected_analog_bits,
    group_bits,
    group_values,
    int_to_analog_bits,
)
from .config import Conditioning, DiffusionConfig, LossConfig, LossKind, ModelConfig
from .decoder import TransUNet
from .diffusion import StopFn, corrupt, ddim_sample_final, gamma_cosine
from .encoder import Encoded, Encoder
from .frame_dropout import drop_frames
from .fused_ce import fused_softmax_ce
from .losses import instance_weights, mask_loss
from .weight_transfer import ConvInLayout, video_conv_in

MASK_BITS = 2 * N_BITS  # class bits + id bits
SELF_COND_RATE = 0.5  # official self_cond_rate


class Pix2SeqD(nn.Module):
    """forward(images, masks, cond_masks) = loss(...), so a DDP wrapper can be called directly.

    images: float (B, 3, H, W) in [0, 1]; masks: int64 (B, 2, H/s, W/s) (class, id), s =
    mask_stride; cond_masks: int64 (B, cond_frames, 2, H/s, W/s), all-zero = missing frame.
    """

    def __init__(self, model: ModelConfig, diffusion: DiffusionConfig, loss: LossConfig):
        super().__init__()
        self.cfg, self.b_scale, self.loss_cfg = model, diffusion.b_scale, loss
        dec, enc = model.decoder, model.encoder
        self.use_cat = dec.conditional in (Conditioning.CAT, Conditioning.CAT_ATTN)
        self.use_attn = dec.conditional in (Conditioning.ATTN, Conditioning.CAT_ATTN)
        self.encoder = Encoder(enc, model.mask_stride)
        # Unused parts stay in the state dict (checkpoints transfer between modes) but are frozen
        # so DDP does not wait for their gradients ('none' freezes the encoder:
        # docs/model.md, "Architecture").
        if dec.conditional == Conditioning.NONE:
            self.encoder.requires_grad_(False)
        elif not self.use_cat:
            self.encoder.fuser.requires_grad_(False)
        out_channels = self.head_channels(model, loss)
        self.decoder = TransUNet(
            dec, self.in_channels(model), out_channels, enc.tf_dim if self.use_attn else None
        )
        self.set_grad_checkpointing(model.grad_checkpoint)
        # compile_sampler's compiled x0_step and final_step: functions, not submodules, so
        # the state dict keeps its keys
        self._compiled_x0_step: Callable[..., torch.Tensor] | None = None
        self._compiled_final_step: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None

    def set_grad_checkpointing(self, enabled: bool) -> None:
        """Recompute the decoder ResBlocks and every transformer layer in the backward pass
        (models/remat.py) instead of keeping their activations."""
        self.encoder.transformer.remat = enabled
        self.decoder.bottleneck.remat = enabled
        self.decoder.remat = enabled

    def compile_sampler(self, backend: str = "inductor", mode: str | None = None) -> None:
        """Compile the sampler's denoising step (decoder + x̂_0) and its last step (which also
        returns the class probabilities), whose shapes do not change between steps: one
        graph per batch size, with no graph break (fullgraph). On CUDA the default mode is
        'reduce-overhead', which also captures the steps in CUDA graphs."""
        if mode is None:
            mode = "reduce-overhead" if next(self.parameters()).is_cuda else "default"
        options = dict(backend=backend, mode=mode, dynamic=False, fullgraph=True)
        self._compiled_x0_step = torch.compile(self.x0_step, **options)
        self._compiled_final_step = torch.compile(self.final_step, **options)

    @property
    def sampler_compiled(self) -> bool:
        """Whether `compile_sampler` was called: callers then keep batch sizes fixed."""
        return self._compiled_x0_step is not None

    @staticmethod
    def head_channels(model: ModelConfig, loss: LossConfig) -> int:
        """Decoder outputs per mask pixel: G·2^(16/G) logits for softmax_ce with G =
        decoder.softmax_groups (512 for the paper's 2), else the 16 bits."""
        if loss.kind != LossKind.SOFTMAX_CE:
            return MASK_BITS
        groups = model.decoder.softmax_groups
        return groups * 2 ** group_bits(groups)

    @staticmethod
    def in_channels(model: ModelConfig) -> int:
        """Decoder input width: 272 for the paper image model, 304 for the video model."""
        dec = model.decoder
        return MASK_BITS * (1 + dec.cond_frames + int(dec.self_cond)) + model.encoder.fuse_dim

    def encode(self, images: torch.Tensor) -> Encoded:
        """images (B, 3, H, W) -> Encoded(tokens (B, N, tf_dim), fused (B, fuse_dim, Hm, Wm)).

        Parts the conditioning mode does not use are not run and come back as zeros.
        """
        b, _, h, w = images.shape
        s, enc = self.cfg.mask_stride, self.cfg.encoder
        if self.cfg.decoder.conditional == Conditioning.NONE:
            tokens = images.new_zeros(b, (h // 16) * (w // 16), enc.tf_dim)
            return Encoded(tokens, images.new_zeros(b, enc.fuse_dim, h // s, w // s))
        tokens, fused = self.encoder(images, fuse=self.use_cat)
        if fused is None:
            fused = tokens.new_zeros(b, enc.fuse_dim, h // s, w // s)
        return Encoded(tokens, fused)

    def cond_bits(self, cond_masks: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """Video conditioning (B, cond_frames, 2, Hm, Wm) -> (B, 16·cond_frames, Hm, Wm);
        None means every frame is missing (all bits −b). `like`: any (B, ·, Hm, Wm) tensor."""
        frames = self.cfg.decoder.cond_frames
        b, _, h, w = like.shape
        if cond_masks is None:
            cond_masks = torch.zeros(b, frames, 2, h, w, dtype=torch.long, device=like.device)
        return int_to_analog_bits(cond_masks, self.b_scale).to(like.dtype)

    def denoise(
        self,
        x_t: torch.Tensor,
        gamma: torch.Tensor,
        encoded: Encoded,
        cond: torch.Tensor,
        x0_prev: torch.Tensor,
    ) -> torch.Tensor:
        """One decoder call. x_t (B, 16, Hm, Wm), gamma (B,), cond (B, 16·cond_frames, Hm, Wm),
        x0_prev (B, 16, Hm, Wm) (ignored unless self_cond) -> channels-last decoder output."""
        return self.decoder(*self.decoder_inputs(x_t, gamma, encoded, cond, x0_prev))

    def decoder_inputs(
        self,
        x_t: torch.Tensor,
        gamma: torch.Tensor,
        encoded: Encoded,
        cond: torch.Tensor,
        x0_prev: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`denoise`'s arguments -> the decoder's (input (B, in_channels, Hm, Wm), gamma,
        cross-attention memory or None)."""
        parts = [x_t, encoded.fused.to(x_t.dtype), cond]
        if self.cfg.decoder.self_cond:
            parts.append(x0_prev)
        memory = encoded.tokens if self.use_attn else None
        return torch.cat(parts, dim=1), gamma, memory

    def x0_step(
        self,
        x_t: torch.Tensor,
        gamma: torch.Tensor,
        tokens: torch.Tensor,
        fused: torch.Tensor,
        cond: torch.Tensor,
        x0_prev: torch.Tensor,
    ) -> torch.Tensor:
        """One sampler step's x̂_0 (B, 16, Hm, Wm): `denoise` and `x0_estimate` on plain
        tensors (what compile_sampler compiles; ddim_sample casts and clips the result)."""
        return self.x0_estimate(self.denoise(x_t, gamma, Encoded(tokens, fused), cond, x0_prev))

    def final_step(
        self,
        x_t: torch.Tensor,
        gamma: torch.Tensor,
        tokens: torch.Tensor,
        fused: torch.Tensor,
        cond: torch.Tensor,
        x0_prev: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampler's last step: (x̂_0 (B, 16, Hm, Wm) clipped to [−b, b] as
        `ddim_sample_final` clips it, so the class read here is the one returned;
        `class_prob` (B, Hm, Wm))."""
        out = self.denoise(x_t, gamma, Encoded(tokens, fused), cond, x0_prev)
        x0 = self.x0_estimate(out).float().clamp(-self.b_scale, self.b_scale)
        return x0, self.class_prob(out, x0)

    def x0_estimate(self, out: torch.Tensor) -> torch.Tensor:
        """Channels-last decoder output (B, Hm, Wm, C) -> x̂_0 analog bits (B, 16, Hm, Wm)."""
        kind = self.loss_cfg.kind
        if kind == LossKind.SOFTMAX_CE:
            return expected_analog_bits(
                out.unflatten(-1, (self.cfg.decoder.softmax_groups, -1)), self.b_scale
            )
        out = out.float().permute(0, 3, 1, 2)
        if kind == LossKind.SIGMOID_CE:
            return (2 * torch.sigmoid(out) - 1) * self.b_scale
        return out.clamp(-self.b_scale, self.b_scale)

    def loss(
        self, images: torch.Tensor, masks: torch.Tensor, cond_masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Algorithm 1: t ~ U(0, 1) per example, x_t = √γ·x_0 + √(1−γ)·ε, weighted x_0 loss."""
        encoded = self.encode(images)
        x0 = int_to_analog_bits(masks, self.b_scale)
        weights = instance_weights(masks[:, 1], self.loss_cfg.p, self.cfg.max_instances)
        gamma = gamma_cosine(torch.rand(x0.shape[0], device=x0.device))
        x_t = corrupt(x0, gamma, torch.randn_like(x0))
        if cond_masks is not None and self.training:
            dec = self.cfg.decoder
            cond_masks = drop_frames(cond_masks, dec.frame_dropout, all_rate=dec.history_dropout)
        cond = self.cond_bits(cond_masks, x0)
        x0_prev = torch.zeros_like(x0)
        if self.cfg.decoder.self_cond:
            with torch.no_grad():
                estimate = self.x0_estimate(self.denoise(x_t, gamma, encoded, cond, x0_prev))
            keep = torch.rand(x0.shape[0], 1, 1, 1, device=x0.device) < SELF_COND_RATE
            x0_prev = estimate * keep
        groups = self.cfg.decoder.softmax_groups
        if self.loss_cfg.fused and self.loss_cfg.kind == LossKind.SOFTMAX_CE:
            head = self.decoder.conv_out
            features = self.decoder.features(
                *self.decoder_inputs(x_t, gamma, encoded, cond, x0_prev)
            )
            return fused_softmax_ce(features, head.weight, head.bias, masks, weights, groups)
        out = self.denoise(x_t, gamma, encoded, cond, x0_prev)
        return mask_loss(self.loss_cfg.kind, out, masks, x0, weights, self.b_scale, groups)

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor, cond_masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.loss(images, masks, cond_masks)

    @torch.no_grad()
    def sample(
        self,
        images: torch.Tensor,
        steps: int,
        td: float,
        cond_masks: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_probs: bool = False,
        stop: StopFn | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 2: images (B, 3, H, W) -> int64 (B, 2, Hm, Wm). The encoder runs once.

        return_probs: also return float (B, Hm, Wm), the probability of each pixel's returned
        class at the last step (`class_prob`); stop: an adaptive rule (`ddim_sample_final`)."""
        return self.sample_from_encoded(
            self.encode(images), steps, td, cond_masks, generator, return_probs, stop
        )

    @torch.no_grad()
    def sample_from_encoded(
        self,
        encoded: Encoded,
        steps: int,
        td: float,
        cond_masks: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_probs: bool = False,
        stop: StopFn | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """DDIM over `steps` with time difference td on cached encoder features.

        Returns int64 (B, 2, Hm, Wm); reuse one `encoded` for many (steps, td) settings.
        With return_probs, returns (that, class probabilities (B, Hm, Wm)), which the last
        step (`final_step`) computes besides x̂_0.
        """
        b, _, h, w = encoded.fused.shape
        like = encoded.fused.new_zeros(b, MASK_BITS, h, w, dtype=torch.float32)
        cond = self.cond_bits(cond_masks, like)

        step = self._compiled_x0_step or self.x0_step
        last = self._compiled_final_step or self.final_step

        def denoise_fn(
            x_t: torch.Tensor, gamma: torch.Tensor, x0_prev: torch.Tensor
        ) -> torch.Tensor:
            return step(x_t, gamma, encoded.tokens, encoded.fused, cond, x0_prev)

        def final_fn(
            x_t: torch.Tensor, gamma: torch.Tensor, x0_prev: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return last(x_t, gamma, encoded.tokens, encoded.fused, cond, x0_prev)

        x0_hat, probs = ddim_sample_final(
            denoise_fn,
            final_fn if return_probs else None,
            tuple(like.shape),
            steps,
            td,
            self.b_scale,
            generator,
            like.device,
            stop,
        )
        masks = analog_bits_to_int(x0_hat, self.cfg.num_classes, self.cfg.max_instances)
        if not return_probs:
            return masks
        if probs is None:  # steps = 0 (nothing was estimated) or an early stop
            probs = torch.zeros(b, h, w, device=like.device)
        return masks, probs

    def class_prob(self, out: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
        """Probability of the class `analog_bits_to_int` reads from x̂_0, per pixel.

        out: channels-last decoder output (B, Hm, Wm, C) of a step; x0_hat (B, 16, Hm, Wm) its
        clipped x̂_0 estimate. Returns float (B, Hm, Wm) in [0, 1] for the returned class c:
        - softmax_ce: the softmax probability of c's bits in each class-channel group,
          multiplied over those groups (one group of 256 values for the paper's G = 2);
        - sigmoid_ce: Π_k σ(±out_k) over the 8 class bits, the sign that of c's bit k;
        - l2: Π_k (1 ± x̂_0,k / b) / 2, the bit probabilities x̂_0 would stand for if it
          were an expectation, as it is under the two cross-entropy losses.
        Only the returned class's value is kept: the full distribution would be G·256 floats
        per pixel.
        """
        cls = analog_bits_to_int(x0_hat, self.cfg.num_classes, self.cfg.max_instances)[:, 0]
        kind = self.loss_cfg.kind
        if kind == LossKind.SOFTMAX_CE:
            groups = self.cfg.decoder.softmax_groups
            logits = out.unflatten(-1, (groups, -1))[..., : groups // 2, :].float()
            values = group_values(torch.stack([cls, torch.zeros_like(cls)], 1), groups)
            picked = logits.gather(-1, values[..., : groups // 2, None]).squeeze(-1)
            return (picked - logits.logsumexp(-1)).sum(-1).exp()
        shifts = torch.arange(N_BITS, device=cls.device).view(1, N_BITS, 1, 1)
        sign = 2.0 * ((cls[:, None] >> shifts) & 1).float() - 1.0  # (B, 8, Hm, Wm)
        if kind == LossKind.SIGMOID_CE:
            logp = F.logsigmoid(sign * out.float().permute(0, 3, 1, 2)[:, :N_BITS])
            return logp.sum(1).exp()
        return ((1.0 + sign * x0_hat[:, :N_BITS].float() / self.b_scale) / 2).prod(1)

    def load_video_from_image(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Initialise this (video) model from an image-model state dict (docs/model.md, "Video").

        All weights are copied; `decoder.conv_in.weight` is adapted by
        `weight_transfer.video_conv_in`: the channels both models share copied, the new video
        conditioning channels zero, so the video model initially ignores them.
        """
        check_head(state_dict, self.cfg, self.loss_cfg)
        key = "decoder.conv_in.weight"
        layout = ConvInLayout(
            MASK_BITS + self.cfg.encoder.fuse_dim, MASK_BITS if self.cfg.decoder.self_cond else 0
        )
        weight = video_conv_in(self.state_dict()[key], state_dict[key], layout)
        self.load_state_dict({**state_dict, key: weight})


def check_head(
    state_dict: dict[str, torch.Tensor],
    model: ModelConfig,
    loss: LossConfig,
    source: str = "the state dict",
) -> None:
    """ValueError when `state_dict`'s output head is not the width of the model of
    (`model`, `loss`) (another decoder.softmax_groups or loss.kind), before load_state_dict's
    size-mismatch error."""
    own, src = Pix2SeqD.head_channels(model, loss), state_dict.get("decoder.conv_out.weight")
    if src is not None and src.shape[0] != own:
        raise ValueError(
            f"{source}: its output head has {src.shape[0]} channels per mask pixel, this "
            f"model's {own} (model.decoder.softmax_groups={model.decoder.softmax_groups}, "
            f"loss.kind={loss.kind.value}); set both to the checkpoint's values"
        )
