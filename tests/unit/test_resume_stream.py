"""Where a resumed run's split training stream starts (platform/train/fit.py).

A driver killed between a checkpoint's upload and its registration with Ray Train leaves a
`checkpoint/<step>` tag of a checkpoint that Ray Train does not restore; the workers
continue from an older one. The stream must then still last to `train.steps`: it starts at
the oldest kept checkpoint, not the newest tag."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pix2seqd.platform.config import override
from pix2seqd.platform.presets import tiny
from pix2seqd.platform.train import fit
from pix2seqd.platform.train.fit import FitInputs
from pix2seqd.platform.train.options import RunOptions


class _Stream:
    """Records the stream position each `dataset` call starts at."""

    def __init__(self):
        self.starts: list[int] = []

    def dataset(self, cfg, rank, world, start):
        self.starts.append(start)
        return start


class _Client:
    def __init__(self, tags):
        self.tags = tags

    def get_run(self, run_id):
        return SimpleNamespace(data=SimpleNamespace(tags=self.tags))


@pytest.mark.parametrize(
    ("tags", "resume", "step"),
    [
        # the newest tag (15) names a checkpoint the killed driver never registered
        ({"checkpoint/10": "/s/a", "checkpoint/15": "/s/b", "best_checkpoint": "/s/b"}, "r", 10),
        ({"checkpoint/40": "/s/c"}, "r", 40),
        ({}, "r", 0),  # no checkpoint recorded: from the start
        ({"checkpoint/10": "/s/a"}, "", 0),  # a new run
    ],
)
def test_a_resumed_stream_starts_at_the_oldest_kept_checkpoint(monkeypatch, tags, resume, step):
    cfg = override(tiny(), {"train.batch_size": 4})
    stream = _Stream()
    monkeypatch.setattr(fit.tracking, "client", lambda uri: _Client(tags))
    fit._split_stream(cfg, FitInputs(stream, 8), RunOptions(resume=resume), "r", "http://x")
    assert stream.starts == [step * 4]
