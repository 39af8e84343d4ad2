"""jobs/benchmark.py gpu: the whole code path on CPU with the tiny preset (no ray, mlflow or
pyarrow imported), the peak-FLOP/s table, the kernel table, and incremental JSON writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pix2seqd.jobs import benchmark
from pix2seqd.platform.benchmarks import gpu_bench
from pix2seqd.platform.benchmarks.gpu_bench import kernel_table, mfu, peak_flops

ROOT = Path(__file__).resolve().parents[2]

# The real benchmark in a fresh interpreter (the job module imported too), failing if ray,
# mlflow or pyarrow got imported (the GPU machine has torch only). Backend 'eager' traces the loss path with dynamo (graph breaks and
# tracing errors show up) without code generation, which takes minutes on a 2-core CPU. One
# thread: the figures do not matter here and a busy CI machine then slows it least.
RUN = """
import json, sys
import torch
torch.set_num_threads(1)
from pix2seqd.jobs import benchmark
from pix2seqd.platform.benchmarks.gpu_bench import GpuBenchSettings, run_gpu_benchmark
from pix2seqd.platform.log import configure_logging
from pix2seqd.platform.data.size_report import with_canvas
from pix2seqd.platform.presets import get_preset
configure_logging()
settings = GpuBenchSettings(quick=True, compile_backend="eager", batch=2, sample_batches=(1, 2),
                            train_reps=(1, 3), sample_reps=(1, 1), profile_steps=1)
result = run_gpu_benchmark(with_canvas(get_preset("tiny")), "tiny", "cpu", settings)
bad = sorted({k.split(".")[0] for k in sys.modules} & {"ray", "mlflow", "pyarrow"})
assert not bad, f"imported: {bad}"
with open(sys.argv[1], "w") as f:
    json.dump(result, f)
"""


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stderr


def test_cpu_run_keys_and_values(cpu_run):
    result, log = cpu_run
    assert "errors" not in result, result["errors"]
    for key in (
        "train_img_s",
        "mfu",
        "peak_tflops",
        "peak_mem_gb",
        "max_batch",
        "sample20_ms",
        "gflops_per_train_image",
        "top_kernels",
        "train_img_s_eager",
        "train_img_s_compiled",
        "compile_s",
        "train_img_s_eager_other_layout",
        "fused_loss",
        "grad_checkpoint",
        "sample_bf16",
        "kernel_categories",
        "top_kernels_compiled",
        "kernel_categories_compiled",
    ):
        assert key in result, key
    assert result["batch"] == 2 and result["preset_batch"] == 8  # tiny: 16 over 2 workers
    assert result["train_img_s_eager"] > 0 and result["train_img_s_compiled"] > 0
    assert result["train_img_s"] == result["train_img_s_compiled"]
    assert result["gflops_per_train_image"] == pytest.approx(
        0.204439552, rel=1e-6
    )  # 2 groups: 0.2154496
    # no peak FLOP/s for a CPU and none given: no MFU; CUDA-only figures are None
    assert result["peak_tflops"] is None and result["mfu"] is None and result["mfu_eager"] is None
    assert result["peak_mem_gb"] is None and result["max_batch"] is None
    samples = result["sample20_ms"]["tiny"]
    assert set(samples) == {"1", "2"} and all(ms > 0 for ms in samples.values())
    kernels = result["top_kernels"]
    assert 1 <= len(kernels) <= 10 and all(len(k["name"]) <= 80 for k in kernels)
    assert all(k["ms"] >= 0 and 0 <= k["pct"] <= 100 for k in kernels)
    assert "[gpu" in log and "train_compiled:" in log  # progress lines, logged to stderr


def test_peak_flops_table_and_override():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA GeForce RTX 4090") is None
    assert peak_flops("") is None
    assert peak_flops("NVIDIA H100 PCIe", override_tflops=100.0) == 100e12
    assert peak_flops("unknown card", override_tflops=2.5) == 2.5e12


def test_mfu():
    assert mfu(100.0, 1000.0, 1e15) == pytest.approx(0.1)  # 100 img/s x 1 TFLOP / 1 PFLOP/s
    assert mfu(100.0, 1000.0, None) is None
    assert mfu(None, 1000.0, 1e15) is None and mfu(100.0, None, 1e15) is None


def _event(key: str, kind: str, us: float) -> SimpleNamespace:
    return SimpleNamespace(
        key=key,
        device_type=SimpleNamespace(name=kind),
        self_device_time_total=us,
        self_cpu_time_total=us,
    )


def test_kernel_categories_of_real_kernel_names_and_their_shares():
    names = {
        "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64": "attention",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "matmul",
        "nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN": "matmul",
        "aten::mm": "matmul",
        "void at::native::cunn_SoftMaxBackward<8, float, float, float>": "loss",
        "triton_red_fused__log_softmax_nll_loss_forward_3": "loss",
        "triton_red_fused_native_group_norm_silu_7": "norm",
        "void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda": "copies",
        "void at::native::vectorized_elementwise_kernel<8, at::native::bfloat16_copy_kern": "copies",
        "void at::native::reduce_kernel<128, 4, at::native::ReduceOp<c10::BFloat16>": "reduction",
        "triton_poi_fused_add_mul_silu_12": "elementwise",
        "void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast": "elementwise",
        "aten::add_": "elementwise",
        "Memcpy HtoD (Pageable -> Device)": "copies",
        "ncclKernel_AllReduce_RING_LL_Sum_float": "communication",
        "void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>": "optimizer",
        "some_custom_kernel": "other",
    }
    assert {n: gpu_bench.kernel_category(n) for n in names} == names
    events = [
        _event("sm90_xmma_gemm_bf16", "CUDA", 600.0),
        _event("triton_poi_fused_add_1", "CUDA", 300.0),
        _event("triton_poi_fused_mul_2", "CUDA", 100.0),
        _event("aten::mm", "CPU", 5000.0),
    ]
    shares = gpu_bench.category_table(events, cuda=True)
    assert shares == {"matmul": 60.0, "elementwise": 40.0}
    assert list(shares) == ["matmul", "elementwise"]
    assert gpu_bench.category_table(events, cuda=False) == {"matmul": 100.0}


def test_kernel_table_keeps_cuda_kernels_sorted_and_truncated():
    events = [
        _event("small", "CUDA", 100.0),
        _event("k" * 120, "CUDA", 300.0),
        _event("aten::mm", "CPU", 5000.0),
    ]
    rows = kernel_table(events, cuda=True, steps=2)
    assert [r["name"] for r in rows] == ["k" * 80, "small"]
    assert rows[0]["ms"] == pytest.approx(0.15) and rows[0]["pct"] == pytest.approx(75.0)
    assert kernel_table(events, cuda=False, steps=1)[0]["name"] == "aten::mm"


def test_json_is_written_after_each_section_and_errors_do_not_stop_the_run(tmp_path, monkeypatch):
    out = tmp_path / "gpu.json"
    seen = []

    def first(ctx, result):
        return {"train_img_s": 1.5}

    def broken(ctx, result):
        seen.append(json.loads(out.read_text()))  # what a timeout here would leave behind
        raise RuntimeError("boom")

    def last(ctx, result):
        return {"max_batch": 4}

    monkeypatch.setattr(gpu_bench, "sections", lambda settings: [first, broken, last])
    result = benchmark.main(["gpu", "--device", "cpu", "--json", str(out)])
    assert seen[0]["train_img_s"] == 1.5 and "device" in seen[0] and "max_batch" not in seen[0]
    assert result["errors"] == {"broken": "RuntimeError: boom"}
    assert result["max_batch"] == 4
    assert json.loads(out.read_text()) == result
    assert result["device"].startswith("cpu") and {"torch", "cuda", "cudnn"} <= set(
        result["versions"]
    )


def test_gpu_defaults_to_cuda_device():
    args = benchmark.parse_args(["gpu"])
    assert args.device == "cuda" and args.batch == 0 and args.peak_tflops == 0.0
    assert benchmark.parse_args(["model"]).device == "cpu"
