"""jobs/benchmark.py model: keys of docs/cli.md, pinned parameter / FLOP counts."""

import json

import pytest

from pix2seqd.jobs import benchmark


def test_model_benchmark_tiny_keys_and_pinned_counts(tmp_path):
    out = tmp_path / "model.json"
    result = benchmark.main(["model", "--preset", "tiny", "--quick", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    for key in (
        "device",
        "versions",
        "params",
        "gflops_per_train_image",
        "encoder_ms",
        "decoder_step_ms",
        "sampling_ratio",
    ):
        assert key in result
    assert result["device"].startswith("cpu")
    assert result["params"] == 1_183_048  # 1,190,664 with the paper's 2 softmax groups
    # torch's flop counter: convolutions and matmuls of one forward + backward at 64 px
    assert result["gflops_per_train_image"] == pytest.approx(
        0.204439552, rel=1e-6
    )  # 2 groups: 0.2154496
    assert result["encoder_ms"] > 0 and result["decoder_step_ms"] > 0
    # a ratio of wall times: only its definition is checked here (timings vary with load)
    expected = result["sample20_ms"] / (result["encoder_ms"] + 20 * result["decoder_step_ms"])
    assert result["sampling_ratio"] == pytest.approx(expected, rel=1e-9)


def test_cuda_requested_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        benchmark.main(["model", "--device", "cuda"])
