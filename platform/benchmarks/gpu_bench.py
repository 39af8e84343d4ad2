"""`benchmark.py gpu`: training throughput, MFU, memory, largest batch, sampling latency and
the top kernels of a preset on one accelerator.

Pure torch (no ray / mlflow / pyarrow import, checked by tests/unit/test_gpu_bench.py), so it
runs on a bare GPU machine after `pip install --no-deps --ignore-requires-python -e .`.

The training step is the Ray Train loop's own, `step.optimizer_step` (Ray batches through
`to_model_inputs`, autocast, loss, backward, clipping, AdamW, the EMA update) on a state
built by the loop's `state.build_state` (one process: no DDP wrapper, as Ray Train with one
worker), so `train.*` and `model.*` keys act here as in training: `train.bf16`,
`train.channels_last`, `train.compile` / `train.compile_backend`, `model.grad_checkpoint`,
`loss.fused`. The sampler is the prediction jobs' (`sampling.sample_images`, with
`sample.compile` and `sample.bf16`). Every timed region is synchronised at its ends only. On
CPU the same code runs (in float32) and the CUDA-only figures (memory, largest batch) are
None, so CI exercises every path with the tiny preset.

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
    train_img_s_eager_other_layout
                             eager images/s with train.channels_last flipped (CUDA only)
    sample20_ms              {preset: {"<batch>": ms per image of a 20-step sampling}}
    top_kernels              [{name, ms (per step), pct (of all kernel time)}], 10 rows,
                             of the eager step (top_kernels_compiled: the compiled one)
    kernel_categories        {category: pct of kernel time} (KERNEL_CATEGORIES), eager
                             step (kernel_categories_compiled: the compiled one)
"""

from __future__ import annotations

import gc
import itertools
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
    make_batches,
    timed_ms,
    train_gflops_per_image,
)
from pix2seqd.platform.config import Config
from pix2seqd.platform.evaluation.sampling import prepare_sampler, sample_images
from pix2seqd.platform.presets import get_preset
from pix2seqd.platform.train.progress import Meter
from pix2seqd.platform.train.state import TrainState, build_state
from pix2seqd.platform.train.step import build_model, channels_last, optimizer_step

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


# Kernel (CPU: operator) name fragments per category, lower case; the first category with a
# fragment in the name wins, so DDP's all-reduce is not a reduction, attention (cuDNN's SDPA kernels are wgmma GEMMs too) comes
# before matmul, and the loss's softmax before the reductions.
KERNEL_CATEGORIES = (
    ("communication", ("nccl", "allreduce", "all_reduce", "gloo")),
    ("attention", ("flash", "fmha", "sdpa", "attention", "mem_eff")),
    ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "conv", "aten::mm", "aten::bmm")),
    ("loss", ("cross_entropy", "softmax", "nll_loss", "logsumexp")),
    ("norm", ("norm", "welford")),
    ("optimizer", ("adam", "optimizer", "multi_tensor")),
    ("copies", ("copy", "memcpy", "memset", "cat", "transpose", "clone", "contiguous")),
    ("reduction", ("reduce", "triton_red", "triton_per", "aten::sum", "aten::mean")),
    ("elementwise", ("elementwise", "triton_poi", "aten::")),
)


def kernel_category(name: str) -> str:
    """The KERNEL_CATEGORIES category of a kernel or operator name, else 'other'."""
    low = name.lower()
    for category, fragments in KERNEL_CATEGORIES:
        if any(f in low for f in fragments):
            return category
    return "other"


def category_table(events: list[Any], cuda: bool) -> dict[str, float]:
    """profiler key_averages() -> {category: pct of the summed self time} (kernel_category
    of the full names; CUDA kernels when cuda, else CPU operators), largest first."""
    kind = "CUDA" if cuda else "CPU"
    totals: dict[str, float] = {}
    for e in events:
        if e.device_type.name == kind:
            cat = kernel_category(e.key)
            totals[cat] = totals.get(cat, 0.0) + _self_us(e, cuda)
    whole = sum(totals.values()) or 1.0
    return {k: 100.0 * v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def _self_us(event: Any, cuda: bool) -> float:
    if not cuda:
        return float(event.self_cpu_time_total)
    us = getattr(event, "self_device_time_total", None)  # torch >= 2.4
    return float(us if us is not None else event.self_cuda_time_total)


# ---------------------------------------------------------------- device helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


# ---------------------------------------------------------------- training step


def with_train(cfg: Config, **changes: Any) -> Config:
    """`cfg` with `train.*` fields replaced."""
    return replace(cfg, train=replace(cfg.train, **changes))


def single_process(module: torch.nn.Module, kwargs: dict[str, Any]) -> torch.nn.Module:
    """The loop's DDP wrapping for one worker: Ray Train's `prepare_model` wraps nothing."""
    return module


def build_trainer(cfg: Config, device: torch.device) -> TrainState:
    """The training loop's state (`build_state`: model, EMA, the maybe-compiled loss module,
    AdamW) for one worker, from seed 0."""
    torch.manual_seed(0)
    return build_state(cfg, device, 1, single_process)


def make_step(state: TrainState, cfg: Config, batch: int, device: torch.device) -> Callable:
    """The loop's `optimizer_step` on one fixed Ray batch of `batch` examples
    (`make_batches`), read from host memory each step as the loop reads its batches."""
    batches = itertools.repeat(make_batches(cfg, batch, 1, seed=0)[0])
    meter = Meter()

    def step() -> None:
        optimizer_step(state, cfg, batches, device, meter)

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


def runs_at(cfg: Config, state: TrainState, device: torch.device, batch: int) -> bool:
    """True when two training steps at `batch` fit in memory. A CUDA OOM gives False;
    gradients and cached blocks are freed either way (outside the except block, whose
    traceback would otherwise keep the failed step's tensors alive)."""
    try:
        step = make_step(state, cfg, batch, device)
        step()
        step()
        sync(device)
        fits = True
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not _is_oom(err):
            raise
        fits = False
    step = None
    state.optimizer.zero_grad(set_to_none=True)
    free_memory(device)
    return fits


def _is_oom(err: BaseException) -> bool:
    """CUDA OOM, or a cuBLAS / cuDNN failure to allocate its workspace near the limit."""
    text = str(err)
    return isinstance(err, torch.cuda.OutOfMemoryError) or any(
        s in text for s in ("out of memory", "ALLOC_FAILED", "CUDNN_STATUS_NOT_SUPPORTED")
    )


def fit_batch(cfg: Config, state: TrainState, device: torch.device, start: int) -> int:
    """`start`, halved until a training step fits (0: not even batch 1). CPU: `start`."""
    if device.type != "cuda":
        return start
    batch = start
    while batch >= 1 and not runs_at(cfg, state, device, batch):
        batch //= 2
    return batch


def largest_batch(cfg: Config, device: torch.device, start: int, cap: int) -> int | None:
    """Largest of start·2^k <= cap whose training step fits (a fresh state; None on CPU)."""
    if device.type != "cuda" or start < 1:
        return None
    state = build_trainer(cfg, device)
    batch = start
    while batch * 2 <= cap and runs_at(cfg, state, device, batch * 2):
        batch *= 2
    return batch


# ---------------------------------------------------------------- sections


def section_setup(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Peak FLOP/s, the options the step runs with and the FLOPs of one training image
    (fp32, batch 1)."""
    card = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else ""
    peak = peak_flops(card, ctx.settings.peak_tflops)
    if peak is None:
        _log(ctx, f"mfu: no peak FLOP/s known for {card or 'a CPU'!r}; pass --peak-tflops X")
    torch.manual_seed(0)
    model = build_model(ctx.cfg).to(ctx.device).train()
    cfg = ctx.cfg
    return {
        "card": card or None,
        "peak_tflops": None if peak is None else peak / 1e12,
        "bf16_autocast": ctx.device.type == "cuda" and cfg.train.bf16,
        "channels_last": channels_last(cfg, ctx.device),
        "fused_loss": cfg.loss.fused,
        "grad_checkpoint": cfg.model.grad_checkpoint,
        "sample_bf16": ctx.device.type == "cuda" and cfg.sample.bf16,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,  # as the training loop: off
        "preset_batch": per_gpu_batch(cfg),
        "gflops_per_train_image": train_gflops_per_image(model, cfg, ctx.device),
    }


def section_train_eager(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Eager training images/s, MFU and peak memory at the largest batch <= the preset's."""
    cfg = with_train(ctx.cfg, compile=False)
    state = build_trainer(cfg, ctx.device)
    batch = fit_batch(cfg, state, ctx.device, ctx.settings.batch or per_gpu_batch(cfg))
    out = {"batch": batch}
    if batch < 1:
        return {**out, "train_img_s_eager": None, "peak_mem_gb": None}
    img_s, mem = _measure(ctx, cfg, state, batch)
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
    """{"sample20_ms": {preset: {"<batch>": ms per image}}}, the sampler not compiled."""
    return {"sample20_ms": _sampling_table(ctx, compiled=False)}


def section_kernels(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Top kernels (CPU: operators) by self time over `profile_steps` eager training steps."""
    cfg = with_train(ctx.cfg, compile=False)
    step = make_step(build_trainer(cfg, ctx.device), cfg, _batch(ctx, result), ctx.device)
    table, categories = top_kernels(step, ctx.device, ctx.settings.profile_steps)
    return {"top_kernels": table, "kernel_categories": categories}


def section_train_compiled(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """The step with `train.compile` (the loss module's forward and backward graphs; AdamW
    stays fused eager). compile_s: wall time of the first step, compilation included."""
    batch = _batch(ctx, result)
    cfg = with_train(ctx.cfg, compile=True, compile_backend=ctx.settings.compile_backend)
    state = build_trainer(cfg, ctx.device)
    step = make_step(state, cfg, batch, ctx.device)
    start = time.perf_counter()
    step()
    sync(ctx.device)
    compile_s = time.perf_counter() - start
    reset_peak(ctx.device)
    img_s = throughput(step, batch, ctx.device, *ctx.settings.train_reps)
    compiled_mfu = mfu(img_s, result.get("gflops_per_train_image"), _peak(result))
    peak_gb = peak_mem_gib(ctx.device)
    table, categories = top_kernels(step, ctx.device, ctx.settings.profile_steps)
    return {
        "compile_s": compile_s,
        "train_img_s_compiled": img_s,
        "mfu_compiled": compiled_mfu,
        "peak_mem_gb_compiled": peak_gb,
        "train_img_s": img_s,
        "mfu": compiled_mfu,
        "top_kernels_compiled": table,
        "kernel_categories_compiled": categories,
    }


def section_train_other_layout(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Eager step with `train.channels_last` flipped (CUDA only, where the option acts)."""
    if ctx.device.type != "cuda":
        return {"train_img_s_eager_other_layout": None}
    cfg = with_train(ctx.cfg, compile=False, channels_last=not ctx.cfg.train.channels_last)
    img_s, _ = _measure(ctx, cfg, build_trainer(cfg, ctx.device), _batch(ctx, result))
    return {"train_img_s_eager_other_layout": img_s}


def section_max_batch(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Largest eager training batch, doubling from `batch` up to max_batch_cap."""
    cap = ctx.settings.max_batch_cap
    cfg = with_train(ctx.cfg, compile=False)
    return {
        "max_batch": largest_batch(cfg, ctx.device, _batch(ctx, result), cap),
        "max_batch_cap": cap,
    }


def section_grad_checkpoint(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """With `model.grad_checkpoint`: images/s at `batch` and the largest batch (CUDA only:
    the option trades compute for memory, which only the GPU figures show)."""
    if ctx.device.type != "cuda":
        return {"train_img_s_remat": None, "max_batch_remat": None}
    cfg = with_train(ctx.cfg, compile=False)
    cfg = replace(cfg, model=replace(cfg.model, grad_checkpoint=True))
    batch, cap = _batch(ctx, result), ctx.settings.max_batch_cap
    state = build_trainer(cfg, ctx.device)
    img_s, mem = _measure(ctx, cfg, state, batch)
    del state
    free_memory(ctx.device)
    return {
        "train_img_s_remat": img_s,
        "peak_mem_gb_remat": mem,
        "max_batch_remat": largest_batch(cfg, ctx.device, batch, cap),
    }


def section_sampling_compiled(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """As section_sampling with `sample.compile` (one graph per batch size)."""
    return {"sample20_ms_compiled": _sampling_table(ctx, compiled=True)}


def sections(settings: GpuBenchSettings) -> list[Callable[[Context, dict], dict]]:
    """Eager parts first and compilation (minutes, the likeliest to fail) last, so a timeout
    or a compiler error loses the least."""
    chosen = [
        section_setup,
        section_train_eager,
        section_sampling,
        section_kernels,
        section_train_other_layout,
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
    ctx: Context, cfg: Config, state: TrainState, batch: int
) -> tuple[float, float | None]:
    """(images/s, peak GiB or None) of the training step at `batch`."""
    step = make_step(state, cfg, batch, ctx.device)
    reset_peak(ctx.device)
    img_s = throughput(step, batch, ctx.device, *ctx.settings.train_reps)
    return img_s, peak_mem_gib(ctx.device)


def sample_ms(
    model: Pix2SeqD,
    cfg: Config,
    device: torch.device,
    batch: int,
    reps: tuple[int, int],
    steps: int = SAMPLE_STEPS,
) -> float:
    """Median ms per image of `sample_images` of `batch` random images at the canvas,
    `steps` steps (default 20), `sample.td`, as eval_coco samples them (class probabilities
    included); the results are discarded."""
    images, _, cond = dummy_batch(cfg, batch, device)
    gen = torch.Generator(device=device).manual_seed(0)
    ms = timed_ms(
        lambda: sample_images(model, cfg, images, steps, cfg.sample.td, gen, True, cond),
        device,
        *reps,
    )
    return ms / batch


def _sampling_table(ctx: Context, compiled: bool) -> dict[str, dict[str, float]]:
    """{preset: {"<batch>": ms per image}}; one eval model per preset, prepared as the
    prediction jobs prepare it (`prepare_sampler`) with `sample.compile` = `compiled`."""
    table: dict[str, dict[str, float]] = {}
    for name in _sample_presets(ctx):
        cfg = ctx.cfg if name == ctx.preset else get_preset(name)
        cfg = replace(cfg, sample=replace(cfg.sample, compile=compiled, bf16=ctx.cfg.sample.bf16))
        torch.manual_seed(0)
        model = prepare_sampler(
            build_model(cfg).to(ctx.device), cfg, backend=ctx.settings.compile_backend
        )
        table[name] = {
            str(b): _sample_ms_or_oom(model, cfg, ctx, b) for b in ctx.settings.sample_batches
        }
        _log(ctx, f"sample20 {name}{' compiled' if compiled else ''}: {table[name]} ms/image")
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
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Profile `steps` calls of step() (after one unprofiled call) -> (kernel_table rows,
    category_table)."""

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step()
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    events = list(prof.key_averages())
    return kernel_table(events, cuda, steps), category_table(events, cuda)


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
        if k not in ("top_kernels", "top_kernels_compiled", "sample20_ms", "sample20_ms_compiled")
    }
    if "top_kernels" in part:
        shown["top_kernels"] = [row["name"][:40] for row in part["top_kernels"][:3]]
    for key in ("kernel_categories", "kernel_categories_compiled"):
        if key in part:
            shown[key] = {k: round(v, 1) for k, v in part[key].items()}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _log(ctx: Context, message: str) -> None:
    log.info("[gpu %6.1fs] %s", time.perf_counter() - ctx.started, message)
