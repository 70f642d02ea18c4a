"""The benchmark script runs (no timing assertions: speed is measured in benchmarks/, not in tests)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_runs(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--rounds", "1", "--steps", "2",
                        "--batch-size", "16", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert set(res["samples_per_s"]) == {"plain", "cached", "live", "teacher_forward"}
    assert res["cached_over_plain"] > 0 and res["live_over_ideal"] > 0


def test_precision_benchmark_runs(tmp_path):
    out = tmp_path / "prec.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "precision.py"), "--rounds", "1", "--steps", "1",
                        "--batch-size", "8", "--threads", "1", "--json", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"resnet20", "small_cnn"}
    assert res["resnet20"]["fp32_vs_fp32"] == 1.0 and res["small_cnn"]["bf16+channels_last_samples_per_s"] > 0
