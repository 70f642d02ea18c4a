"""The benchmark scripts run and report self-consistent numbers (no speed targets: speed is measured in
benchmarks/, not in tests). Every derived number is recomputed here from the raw rates it is made of."""

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _rate(x) -> float:
    assert isinstance(x, float) and math.isfinite(x) and x > 0, x
    return x


def test_throughput_benchmark_runs(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--rounds", "1", "--steps", "2",
                        "--batch-size", "16", "--threads", "1", "--json", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    rates = {k: _rate(v) for k, v in res["samples_per_s"].items()}
    assert set(rates) == {"plain", "cached", "live", "teacher_forward"}
    st = res["settings"]
    assert (st["batch_size"], st["steps"], st["rounds"], st["threads"]) == (16, 2, 1, 1)
    # the ideal live rate is the harmonic combination of a student step and a teacher forward: below both
    ideal = 1.0 / (1.0 / rates["plain"] + 1.0 / rates["teacher_forward"])
    assert res["live_ideal_samples_per_s"] == pytest.approx(ideal, rel=1e-12)
    assert ideal < min(rates["plain"], rates["teacher_forward"])
    assert res["cached_over_plain"] == pytest.approx(rates["cached"] / rates["plain"], rel=1e-12)
    assert res["live_over_ideal"] == pytest.approx(rates["live"] / ideal, rel=1e-12)
    ideal_b = 1.0 / (1.0 / rates["cached"] + 1.0 / rates["teacher_forward"])
    assert res["live_over_ideal_from_cached_step"] == pytest.approx(rates["live"] / ideal_b, rel=1e-12)
    assert f"(b)/(a) = {res['cached_over_plain']:.3f}" in r.stdout


def test_precision_benchmark_runs(tmp_path):
    out = tmp_path / "prec.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "precision.py"), "--rounds", "1", "--steps", "1",
                        "--batch-size", "8", "--threads", "1", "--json", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert (rec["batch_size"], rec["steps"], rec["rounds"]) == (8, 1, 1)
    res = rec["results"]
    assert set(res) == {"resnet20", "small_cnn"}
    variants = ("fp32", "fp32+channels_last", "bf16", "bf16+channels_last")
    for model, m in res.items():
        assert set(m) == {f"{v}_samples_per_s" for v in variants} | {f"{v}_vs_fp32" for v in variants}, model
        base = _rate(m["fp32_samples_per_s"])
        for v in variants:
            assert m[f"{v}_vs_fp32"] == pytest.approx(_rate(m[f"{v}_samples_per_s"]) / base, rel=1e-12), (model, v)
            assert f"{model:10s} {v:20s} {m[f'{v}_samples_per_s']:8.0f} samples/s" in r.stdout, (model, v)


def test_mnist_teacher_benchmark_runs(tmp_path):
    out = tmp_path / "teacher.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "mnist_teacher.py"), "--rounds", "1", "--steps", "2",
                        "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert (rec["steps"], rec["rounds"], rec["threads"]) == (2, 1, 1)
    res = rec["results"]
    assert set(res) == {"fp32", "bf16", "fp32_noshift", "fp32_batch256", "bf16_batch256"}
    assert rec["variants"]["bf16_batch256"] == {"bf16": True, "shift": 2, "batch_size": 256}
    base = _rate(res["fp32"]["samples_per_s"])
    for v, m in res.items():
        assert m["samples_per_s"] == pytest.approx(statistics.median(m["rounds"]), rel=1e-12), v
        assert m["vs_fp32"] == pytest.approx(_rate(m["samples_per_s"]) / base, rel=1e-12), v
        assert f"{v:14s} {m['samples_per_s']:8.0f} samples/s  x{m['vs_fp32']:.2f} vs fp32" in r.stdout, v
    assert f"{300 * 55_000 / base / 60:.0f} min for the 300-epoch teacher" in r.stdout


@pytest.mark.slow  # end-to-end tier: pools, torchrun and Ray
def test_scale_benchmark_runs(tmp_path):
    out = tmp_path / "scale.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--quick", "--no-ray", "--out",
                        str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    walls = {k: _rate(v) for k, v in res["local_wall_s"].items()}
    assert res["local_speedup_2_workers"] == pytest.approx(walls["1_worker"] / walls["2_workers"], rel=1e-12)
    rates = {k: _rate(v) for k, v in res["ddp_samples_per_s"].items()}
    assert res["ddp_2proc_over_1proc"] == pytest.approx(rates["2_proc"] / rates["1_proc"], rel=1e-12)
    assert "ray_overhead_s_per_job" not in res and res["settings"]["quick"] is True
    assert f"local_speedup_2_workers = {res['local_speedup_2_workers']:.3f}" in r.stdout


def test_engine_overhead_benchmark_runs(tmp_path):
    out = tmp_path / "overhead.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "engine_overhead.py"), "--rounds", "2", "--epochs", "1",
                        "--train", "256", "--val", "64", "--test", "128", "--synthetic", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    st = res["settings"]
    assert (st["epochs"], st["train"], st["val"], st["test"], st["rounds"], st["threads"], st["data"]) == \
        (1, 256, 64, 128, 2, 1, "synthetic")
    for k in ("engine", "plain"):
        assert len(res["seconds"][k]) == len(res["steps_seconds"][k]) == 2
        assert res["median_s"][k] == pytest.approx(statistics.median(map(_rate, res["seconds"][k])), rel=1e-12)
        assert res["median_steps_s"][k] == pytest.approx(statistics.median(res["steps_seconds"][k]), rel=1e-12)
        assert res["fixed_s"][k] == pytest.approx(res["median_s"][k] - res["median_steps_s"][k], rel=1e-12)
        assert all(0 < s < t for s, t in zip(res["steps_seconds"][k], res["seconds"][k]))
    assert res["ratio"] == pytest.approx(res["median_s"]["plain"] / res["median_s"]["engine"], rel=1e-12)
    assert res["round_ratios"] == pytest.approx([p / e for p, e in zip(res["seconds"]["plain"],
                                                                       res["seconds"]["engine"])], rel=1e-12)
    assert res["steps_ratio"] == pytest.approx(res["median_steps_s"]["plain"] / res["median_steps_s"]["engine"],
                                               rel=1e-12)
    assert f"ratio plain/engine = {res['ratio']:.3f}" in r.stdout
