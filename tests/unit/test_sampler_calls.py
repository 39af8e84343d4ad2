"""The sampler runs the encoder (and fuser) once per image whatever the number of steps."""

import pytest
import torch
from helpers_model import TINY, tiny, toy_batch

from pix2seqd.models.config import DiffusionConfig, LossConfig
from pix2seqd.models.pix2seq_d import Pix2SeqD


class Counter:
    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        module.register_forward_hook(self.hook)

    def hook(self, *_):
        self.calls += 1


@pytest.mark.parametrize("steps", [1, 5, 20])
@pytest.mark.parametrize("self_cond", [False, True])
def test_encoder_once_decoder_once_per_step(steps, self_cond):
    model = Pix2SeqD(tiny(self_cond=self_cond), DiffusionConfig(), LossConfig()).eval()
    resnet, fuser = Counter(model.encoder.backbone), Counter(model.encoder.fuser)
    decoder = Counter(model.decoder)
    images, _ = toy_batch()
    model.sample(images, steps, 2.0, generator=torch.Generator().manual_seed(0))
    assert (resnet.calls, fuser.calls, decoder.calls) == (1, 1, steps)


def test_training_step_runs_encoder_once():
    model = Pix2SeqD(TINY, DiffusionConfig(), LossConfig())
    resnet, decoder = Counter(model.encoder.backbone), Counter(model.decoder)
    images, masks = toy_batch()
    model.loss(images, masks).backward()
    assert (resnet.calls, decoder.calls) == (1, 1)
