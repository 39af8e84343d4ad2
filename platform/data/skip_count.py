"""`data/skipped`: the examples a training stream skipped because they failed to decode
(`data.skip_bad`), counted across the Ray Data worker processes that decode them.

The decoders (`pipeline.TrainDecoder`, `video_pipeline.ClipDecoder`) run in short-lived Ray
Data task processes, so the count lives in a small named actor, `SkipCounter`: a decoder
that skips examples sends their keys in one call per map batch (nothing when it skips
none), and rank 0 reads the count once per `train.log_every` steps. A count column carried
in the batches would need no actor but would not be correct: a map batch whose examples
were all skipped has no row to carry it, each rank sees only its own rows (an all-reduce
per logged step), and rows left over at the end of the stream are dropped.

The keys are (epoch, example), so an example decoded again counts once: a restarted worker
group replays the stream from its checkpoint, and a second run of the same config in one
Ray job finds the first one's actor and reads the same stream. The actor exists only with
`data.skip_bad` (without it a bad example
stops the run), is named after the config (`counter_name`: two runs in one Ray job, such as
sweep trials, have different configs) and belongs to the process that builds the training
dataset: the driver, so that it outlives worker-group restarts; with `data.exact_order` each
worker builds its own dataset and a restarted group starts a new count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from pix2seqd.platform.config import Config, flatten

METRIC = "data/skipped"


class SkipCounter:
    """The distinct keys of the skipped examples of one run (run as a Ray actor of no CPU)."""

    def __init__(self):
        self.keys: set[str] = set()

    def add(self, keys: list[str]) -> int:
        self.keys.update(keys)
        return len(self.keys)

    def count(self) -> int:
        return len(self.keys)


class SkipRecorder:
    """What a decoder calls with the keys of the examples it skipped (picklable: it travels
    with the decoder into Ray Data tasks). The call waits for the actor, so a count is in
    before the batch that left the examples out reaches training."""

    def __init__(self, actor):
        self.actor = actor

    def __call__(self, keys: Iterable[str]) -> None:
        # lazy: the decoders' modules import this one and are used without Ray (unit tests)
        import ray

        ray.get(self.actor.add.remote(list(keys)))


def counter_name(cfg: Config) -> str:
    """The actor's name: the same in the driver, the data tasks and the training workers,
    which all hold the run's config."""
    text = json.dumps(flatten(cfg), sort_keys=True, default=str)
    return "pix2seqd-data-skipped-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def skip_recorder(cfg: Config) -> SkipRecorder | None:
    """The run's recorder, its actor created by the first caller (None without
    `data.skip_bad`: nothing is skipped then)."""
    if not cfg.data.skip_bad:
        return None
    # lazy: the decoders' modules import this one and are used without Ray (unit tests)
    import ray

    counter = ray.remote(num_cpus=0)(SkipCounter)
    return SkipRecorder(counter.options(name=counter_name(cfg), get_if_exists=True).remote())


def skipped_metrics(cfg: Config) -> dict[str, float]:
    """{'data/skipped': examples skipped so far} for rank 0's train metrics; {} without
    `data.skip_bad` or before the training dataset was built."""
    if not cfg.data.skip_bad:
        return {}
    # lazy: the decoders' modules import this one and are used without Ray (unit tests)
    import ray

    try:
        actor = ray.get_actor(counter_name(cfg))
    except ValueError:
        return {}
    return {METRIC: float(ray.get(actor.count.remote()))}
