"""`benchmark.py gpu`: training throughput, MFU, memory, largest batch, sampling latency and
the top kernels of a preset on one accelerator.

Pure torch (no ray / mlflow import, checked by tests/unit/test_gpu_bench.py), so it runs on a
bare GPU machine after `pip install --no-deps --ignore-requires-python -e .`. The training step is the training loop's
(loss, backward, grad clipping, AdamW — fused on CUDA) without data loading and EMA; on CUDA
it runs under bf16 autocast with channels_last images and weights, and every timed region is
synchronised at its ends only. On CPU the same code runs in fp32 and the CUDA-only figures
(memory, largest batch) are None, so CI exercises every path with the tiny preset.

Sections run in order and each one's result is handed to `save` at once, so a run cut off by
a timeout still leaves the figures measured so far; a section that raises is recorded under
`errors` and the next one runs. Key glossary (docs/cli.md `gpu`):

    batch                    training batch of the timed steps (the preset's per-GPU batch,
                             halved until it fits in memory)
    train_img_s              images/s of the compiled step when measured, else the eager one
    mfu                      train_img_s x FLOP/image / peak_tflops (fraction; None: no peak)
    peak_mem_gb              torch.cuda.max_memory_allocated at `batch`, GiB (eager step)
    max_batch                largest batch (doubling from `batch`, capped) that trains
    max_batch_remat          the same with model.grad_checkpoint (train_img_s_remat: its
                             images/s at `batch`; full runs only)
    sample20_ms              {preset: {"<batch>": ms per image of a 20-step model.sample}}
    top_kernels              [{name, ms (per step), pct (of all kernel time)}], 10 rows
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.platform.benchmarks.model_bench import (
    SAMPLE_STEPS,
    dummy_batch,
    timed_ms,
    train_gflops_per_image,
)
from pix2seqd.platform.config import Config
from pix2seqd.platform.presets import get_preset
from pix2seqd.platform.train.step import build_model, make_optimizer

log = logging.getLogger(__name__)

GPU_SAMPLE_PRESETS = ("r50_ablation", "coco_highres")
TOP_KERNELS = 10
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class GpuBenchSettings:
    """What to run. `batch` 0: the preset's per-GPU batch. `sample_presets` (): r50_ablation
    and coco_highres on CUDA, the benchmarked preset on CPU. `compile_backend` is passed to
    torch.compile (tests use 'eager': dynamo tracing without code generation).
    `train_reps` (warm-up, timed) steps and `sample_reps` (warm-up, timed) calls default by
    `quick`: (3, 10) / (1, 2), else (10, 50) / (2, 10). `profile_steps`: steps profiled."""

    quick: bool = False
    compile: bool = True
    compile_backend: str = "inductor"
    peak_tflops: float = 0.0
    batch: int = 0
    max_batch_cap: int = 256
    sample_presets: tuple[str, ...] = ()
    sample_batches: tuple[int, ...] = (1, 8)
    train_reps: tuple[int, int] = ()
    sample_reps: tuple[int, int] = ()
    profile_steps: int = 3

    def __post_init__(self) -> None:
        if not self.train_reps:
            object.__setattr__(self, "train_reps", (3, 10) if self.quick else (10, 50))
        if not self.sample_reps:
            object.__setattr__(self, "sample_reps", (1, 2) if self.quick else (2, 10))


@dataclass
class Context:
    cfg: Config
    preset: str
    device: torch.device
    settings: GpuBenchSettings
    started: float


# ---------------------------------------------------------------- pure helpers


def peak_flops(card: str, override_tflops: float = 0.0) -> float | None:
    """Dense bf16 peak FLOP/s of a card from its torch.cuda.get_device_name, or the override
    (in TFLOP/s) when > 0; None for an unknown card or a CPU."""
    if override_tflops > 0:
        return override_tflops * 1e12
    name = card.lower()
    if "h100" in name:
        return 756e12 if "pcie" in name else 989e12  # PCIe vs SXM (and other H100 parts)
    if "h200" in name:
        return 989e12
    if "a100" in name:
        return 312e12
    return None


def mfu(img_s: float | None, gflops_per_image: float | None, peak: float | None) -> float | None:
    """Model FLOPs utilisation: img/s x FLOP/image / peak FLOP/s; None without a peak."""
    if not peak or not img_s or gflops_per_image is None:
        return None
    return img_s * gflops_per_image * 1e9 / peak


def per_gpu_batch(cfg: Config) -> int:
    """The preset's batch per worker and micro-step: global batch / (workers x accum)."""
    return max(1, cfg.train.batch_size // (cfg.train.num_workers * cfg.train.accum))


def kernel_table(
    events: list[Any], cuda: bool, steps: int, top: int = TOP_KERNELS
) -> list[dict[str, Any]]:
    """profiler key_averages() -> the `top` rows by self time: {name (<= 80 chars), ms per
    step, pct of the summed self time}. cuda: CUDA kernels; else CPU operators."""
    kind = "CUDA" if cuda else "CPU"
    rows = [(e.key, _self_us(e, cuda)) for e in events if e.device_type.name == kind]
    total = sum(us for _, us in rows) or 1.0
    rows.sort(key=lambda row: -row[1])
    return [
        {"name": name[:80], "ms": us / 1e3 / steps, "pct": 100.0 * us / total}
        for name, us in rows[:top]
    ]


def _self_us(event: Any, cuda: bool) -> float:
    if not cuda:
        return float(event.self_cpu_time_total)
    us = getattr(event, "self_device_time_total", None)  # torch >= 2.4
    return float(us if us is not None else event.self_cuda_time_total)


# ---------------------------------------------------------------- device helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the training loop with train.bf16); fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_mem_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def channels_last(device: torch.device) -> bool:
    """channels_last images and weights on CUDA (tensor-core friendly); NCHW on CPU."""
    return device.type == "cuda"


# ---------------------------------------------------------------- training step


def build_trainer(
    cfg: Config, device: torch.device, nhwc: bool
) -> tuple[Pix2SeqD, torch.optim.Optimizer]:
    """A fresh model (seed 0, train mode, channels_last weights when nhwc) and its AdamW."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    return model, make_optimizer(model, cfg, device)


def train_inputs(cfg: Config, batch: int, device: torch.device, nhwc: bool) -> Batch:
    """dummy_batch: images (B, 3, H, W) (channels_last when nhwc), masks (B, 2, Hm, Wm),
    video conditioning (B, frames, 2, Hm, Wm) or None."""
    images, masks, cond = dummy_batch(cfg, batch, device)
    if nhwc:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, masks, cond


def make_step(
    loss_fn: Callable[..., torch.Tensor],
    model: Pix2SeqD,
    opt: torch.optim.Optimizer,
    inputs: Batch,
    clip_norm: float,
    device: torch.device,
) -> Callable[[], None]:
    """One optimizer step on fixed inputs, as platform/train/loop.py does it (no host sync):
    zero grads, loss_fn(images, masks, cond) under amp, backward, clip, AdamW step."""

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp(device):
            loss = loss_fn(*inputs)
        loss.backward()
        if clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        opt.step()

    return step


def throughput(
    step: Callable[[], None], batch: int, device: torch.device, warmup: int, steps: int
) -> float:
    """Images/s over `steps` calls after `warmup`; synchronised before and after only."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def runs_at(
    cfg: Config, model: Pix2SeqD, opt: torch.optim.Optimizer, device: torch.device, batch: int
) -> bool:
    """True when two eager training steps at `batch` fit in memory. A CUDA OOM gives False;
    gradients and cached blocks are freed either way (outside the except block, whose
    traceback would otherwise keep the failed step's tensors alive)."""
    try:
        step = make_step(
            model,
            model,
            opt,
            train_inputs(cfg, batch, device, channels_last(device)),
            cfg.optim.clip_norm,
            device,
        )
        step()
        step()
        sync(device)
        fits = True
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not _is_oom(err):
            raise
        fits = False
    step = None
    opt.zero_grad(set_to_none=True)
    free_memory(device)
    return fits


def _is_oom(err: BaseException) -> bool:
    """CUDA OOM, or a cuBLAS / cuDNN failure to allocate its workspace near the limit."""
    text = str(err)
    return isinstance(err, torch.cuda.OutOfMemoryError) or any(
        s in text for s in ("out of memory", "ALLOC_FAILED", "CUDNN_STATUS_NOT_SUPPORTED")
    )


def fit_batch(
    cfg: Config, model: Pix2SeqD, opt: torch.optim.Optimizer, device: torch.device, start: int
) -> int:
    """`start`, halved until a training step fits (0: not even batch 1). CPU: `start`."""
    if device.type != "cuda":
        return start
    batch = start
    while batch >= 1 and not runs_at(cfg, model, opt, device, batch):
        batch //= 2
    return batch


def largest_batch(cfg: Config, device: torch.device, start: int, cap: int) -> int | None:
    """Largest of start·2^k <= cap whose training step fits (a fresh model; None on CPU)."""
    if device.type != "cuda" or start < 1:
        return None
    model, opt = build_trainer(cfg, device, channels_last(device))
    batch = start
    while batch * 2 <= cap and runs_at(cfg, model, opt, device, batch * 2):
        batch *= 2
    return batch


# ---------------------------------------------------------------- sections


def section_setup(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Peak FLOP/s, numerics and the FLOPs of one training image (fp32, batch 1)."""
    card = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else ""
    peak = peak_flops(card, ctx.settings.peak_tflops)
    if peak is None:
        _log(ctx, f"mfu: no peak FLOP/s known for {card or 'a CPU'!r}; pass --peak-tflops X")
    model, _ = build_trainer(ctx.cfg, ctx.device, nhwc=False)
    return {
        "card": card or None,
        "peak_tflops": None if peak is None else peak / 1e12,
        "bf16_autocast": ctx.device.type == "cuda",
        "channels_last": channels_last(ctx.device),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,  # as the training loop: off
        "preset_batch": per_gpu_batch(ctx.cfg),
        "gflops_per_train_image": train_gflops_per_image(model, ctx.cfg, ctx.device),
    }


def section_train_eager(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Eager training images/s, MFU and peak memory at the largest batch <= the preset's."""
    model, opt = build_trainer(ctx.cfg, ctx.device, channels_last(ctx.device))
    batch = fit_batch(ctx.cfg, model, opt, ctx.device, ctx.settings.batch or per_gpu_batch(ctx.cfg))
    out = {"batch": batch}
    if batch < 1:
        return {**out, "train_img_s_eager": None, "peak_mem_gb": None}
    img_s, mem = _measure(ctx, model, model, opt, batch, channels_last(ctx.device))
    eager_mfu = mfu(img_s, result.get("gflops_per_train_image"), _peak(result))
    return {
        **out,
        "train_img_s_eager": img_s,
        "mfu_eager": eager_mfu,
        "peak_mem_gb": mem,
        "train_img_s": img_s,
        "mfu": eager_mfu,
    }


def section_sampling(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """{"sample20_ms": {preset: {"<batch>": ms per image}}}, eager."""
    return {"sample20_ms": _sampling_table(ctx, backend=None)}


def section_kernels(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Top kernels (CPU: operators) by self time over `profile_steps` eager training steps."""
    batch = _batch(ctx, result)
    model, opt = build_trainer(ctx.cfg, ctx.device, channels_last(ctx.device))
    inputs = train_inputs(ctx.cfg, batch, ctx.device, channels_last(ctx.device))
    step = make_step(model, model, opt, inputs, ctx.cfg.optim.clip_norm, ctx.device)
    return {"top_kernels": top_kernels(step, ctx.device, ctx.settings.profile_steps)}


def section_train_compiled(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """torch.compile of the loss path (forward + backward graphs); AdamW stays fused eager.
    compile_s: wall time of the first step, which includes the compilation."""
    batch = _batch(ctx, result)
    model, opt = build_trainer(ctx.cfg, ctx.device, channels_last(ctx.device))
    loss_fn = torch.compile(model, backend=ctx.settings.compile_backend, dynamic=False)
    step = make_step(
        loss_fn,
        model,
        opt,
        train_inputs(ctx.cfg, batch, ctx.device, channels_last(ctx.device)),
        ctx.cfg.optim.clip_norm,
        ctx.device,
    )
    start = time.perf_counter()
    step()
    sync(ctx.device)
    compile_s = time.perf_counter() - start
    reset_peak(ctx.device)
    img_s = throughput(step, batch, ctx.device, *ctx.settings.train_reps)
    compiled_mfu = mfu(img_s, result.get("gflops_per_train_image"), _peak(result))
    return {
        "compile_s": compile_s,
        "train_img_s_compiled": img_s,
        "mfu_compiled": compiled_mfu,
        "peak_mem_gb_compiled": peak_mem_gib(ctx.device),
        "train_img_s": img_s,
        "mfu": compiled_mfu,
    }


def section_train_nchw(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Eager step without channels_last (CUDA only): is channels_last worth it here?"""
    if ctx.device.type != "cuda":
        return {"train_img_s_eager_nchw": None}
    batch = _batch(ctx, result)
    model, opt = build_trainer(ctx.cfg, ctx.device, nhwc=False)
    img_s, _ = _measure(ctx, model, model, opt, batch, nhwc=False)
    return {"train_img_s_eager_nchw": img_s}


def section_max_batch(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Largest eager training batch, doubling from `batch` up to max_batch_cap."""
    cap = ctx.settings.max_batch_cap
    return {
        "max_batch": largest_batch(ctx.cfg, ctx.device, _batch(ctx, result), cap),
        "max_batch_cap": cap,
    }


def section_grad_checkpoint(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """With `model.grad_checkpoint`: images/s at `batch` and the largest batch (CUDA only:
    the option trades compute for memory, which only the GPU figures show)."""
    if ctx.device.type != "cuda":
        return {"train_img_s_remat": None, "max_batch_remat": None}
    cfg = replace(ctx.cfg, model=replace(ctx.cfg.model, grad_checkpoint=True))
    batch, cap = _batch(ctx, result), ctx.settings.max_batch_cap
    model, opt = build_trainer(cfg, ctx.device, channels_last(ctx.device))
    img_s, mem = _measure(
        replace(ctx, cfg=cfg), model, model, opt, batch, channels_last(ctx.device)
    )
    del model, opt
    free_memory(ctx.device)
    return {
        "train_img_s_remat": img_s,
        "peak_mem_gb_remat": mem,
        "max_batch_remat": largest_batch(cfg, ctx.device, batch, cap),
    }


def section_sampling_compiled(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """As section_sampling with the decoder compiled (one graph per batch size)."""
    return {"sample20_ms_compiled": _sampling_table(ctx, backend=ctx.settings.compile_backend)}


def sections(settings: GpuBenchSettings) -> list[Callable[[Context, dict], dict]]:
    """Eager parts first and compilation (minutes, the likeliest to fail) last, so a timeout
    or a compiler error loses the least."""
    chosen = [
        section_setup,
        section_train_eager,
        section_sampling,
        section_kernels,
        section_train_nchw,
        section_max_batch,
    ]
    if not settings.quick:
        chosen.append(section_grad_checkpoint)
    if settings.compile:
        chosen.append(section_train_compiled)
    if settings.compile and not settings.quick:
        chosen.append(section_sampling_compiled)
    return chosen


# ---------------------------------------------------------------- measurements


def _measure(
    ctx: Context,
    loss_fn: Callable[..., torch.Tensor],
    model: Pix2SeqD,
    opt: torch.optim.Optimizer,
    batch: int,
    nhwc: bool,
) -> tuple[float, float | None]:
    """(images/s, peak GiB or None) of the training step at `batch`."""
    inputs = train_inputs(ctx.cfg, batch, ctx.device, nhwc)
    step = make_step(loss_fn, model, opt, inputs, ctx.cfg.optim.clip_norm, ctx.device)
    reset_peak(ctx.device)
    img_s = throughput(step, batch, ctx.device, *ctx.settings.train_reps)
    return img_s, peak_mem_gib(ctx.device)


def sample_ms(
    model: Pix2SeqD, cfg: Config, device: torch.device, batch: int, reps: tuple[int, int]
) -> float:
    """Median ms per image of model.sample(images (batch, 3, H, W), 20 steps, cfg td) under
    inference_mode and amp; returns int64 masks (batch, 2, Hm, Wm) that are discarded."""
    images, _, cond = train_inputs(cfg, batch, device, channels_last(device))
    with torch.inference_mode(), amp(device):
        ms = timed_ms(
            lambda: model.sample(images, SAMPLE_STEPS, cfg.sample.td, cond), device, *reps
        )
    return ms / batch


def _sampling_table(ctx: Context, backend: str | None) -> dict[str, dict[str, float]]:
    """{preset: {"<batch>": ms per image}}; one eval model per preset (decoder compiled with
    `backend` unless None)."""
    table: dict[str, dict[str, float]] = {}
    for name in _sample_presets(ctx):
        cfg = ctx.cfg if name == ctx.preset else get_preset(name)
        torch.manual_seed(0)
        model = build_model(cfg).to(ctx.device).eval()
        if channels_last(ctx.device):
            model = model.to(memory_format=torch.channels_last)
        if backend:  # the prediction actors' path (SampleConfig.compile)
            model.compile_sampler(backend=backend)
        table[name] = {
            str(b): _sample_ms_or_oom(model, cfg, ctx, b) for b in ctx.settings.sample_batches
        }
        _log(ctx, f"sample20 {name}{' compiled' if backend else ''}: {table[name]} ms/image")
        del model
        free_memory(ctx.device)
    return table


def _sample_ms_or_oom(model: Pix2SeqD, cfg: Config, ctx: Context, batch: int) -> float | None:
    """sample_ms, or None (logged) when the batch does not fit in memory."""
    try:
        return sample_ms(model, cfg, ctx.device, batch, ctx.settings.sample_reps)
    except torch.cuda.OutOfMemoryError:
        pass  # freed below, once the traceback (holding the tensors) is gone
    free_memory(ctx.device)
    _log(ctx, f"sample20 at batch {batch}: out of memory")
    return None


def top_kernels(
    step: Callable[[], None], device: torch.device, steps: int = 3
) -> list[dict[str, Any]]:
    """Profile `steps` calls of step() (after one unprofiled call) -> kernel_table rows."""

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step()
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    return kernel_table(list(prof.key_averages()), cuda, steps)


# ---------------------------------------------------------------- driver


def run_gpu_benchmark(
    cfg: Config,
    preset: str,
    device: str,
    settings: GpuBenchSettings,
    save: Callable[[dict[str, Any]], None] = lambda result: None,
) -> dict[str, Any]:
    """The `gpu` keys of the benchmark JSON (docs/cli.md); `save(result so far)` after each
    section. A failing section is logged, recorded in result["errors"] and skipped."""
    ctx = Context(cfg, preset, torch.device(device), settings, time.perf_counter())
    result: dict[str, Any] = {}
    for section in sections(settings):
        name = section.__name__.removeprefix("section_")
        _log(ctx, f"{name} ...")
        try:
            part = section(ctx, result)
        except Exception as err:  # noqa: BLE001 - one failing part must not lose the others
            log.exception("%s failed; the other parts go on", name)
            part = {
                "errors": {**result.get("errors", {}), name: f"{type(err).__name__}: {err}"[:500]}
            }
        result.update(part)
        free_memory(ctx.device)
        _log(ctx, f"{name}: {_brief(part)}")
        save(dict(result))
    return result


def _batch(ctx: Context, result: dict[str, Any]) -> int:
    """The batch section_train_eager settled on, else the requested one."""
    return result.get("batch") or ctx.settings.batch or per_gpu_batch(ctx.cfg)


def _peak(result: dict[str, Any]) -> float | None:
    tflops = result.get("peak_tflops")
    return None if tflops is None else tflops * 1e12


def _sample_presets(ctx: Context) -> tuple[str, ...]:
    if ctx.settings.sample_presets:
        return ctx.settings.sample_presets
    return GPU_SAMPLE_PRESETS if ctx.device.type == "cuda" else (ctx.preset,)


def _brief(part: dict[str, Any]) -> str:
    shown = {
        k: (f"{v:.4g}" if isinstance(v, float) else v)
        for k, v in part.items()
        if k not in ("top_kernels", "sample20_ms", "sample20_ms_compiled")
    }
    if "top_kernels" in part:
        shown["top_kernels"] = [row["name"][:40] for row in part["top_kernels"][:3]]
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _log(ctx: Context, message: str) -> None:
    log.info("[gpu %6.1fs] %s", time.perf_counter() - ctx.started, message)
