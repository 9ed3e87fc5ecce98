"""`make gpu-check` in its CPU mode, from a data pack, as CI runs it: the GPU check cannot break silently again."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_datapack_loads_and_the_gpu_check_runs_on_the_cpu(tmp_path, data_dir):
    pack = tmp_path / "pack"
    env = {**os.environ, "LADNN_DATA_DIR": str(data_dir), "TQDM_DISABLE": "1"}
    r = subprocess.run([sys.executable, "benchmarks/make_datapack.py", str(pack)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    assert "746 images" in r.stdout and "loads as D0" in r.stdout
    assert (pack / "covid-ct" / "NonCOVID-CT-MetaInfo.csv").is_file()  # the file 4d8f8d4's pack lacked

    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu", "--out", str(tmp_path / "check")],
                       cwd=ROOT, env={**env, "LADNN_DATA_DIR": str(pack)}, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.startswith("gpu check (CPU mode); device: cpu")
    assert "one gpu-profile run (tf_efficientnet_lite0, baseline, full, 1 epochs, 8 test images)" in out
    for phase in ("data and cache loading", "training steps", "validation", "test scoring", "writing"):
        assert f"  {phase}" in out
    assert '"dtype": "float32", "tf32": false' in out
    assert '"max_abs_diff_gpu_cpu": 0.0, "decisions_changed_gpu_cpu": 0' in out  # the CPU against itself
    assert '"decisions_changed_gpu_vs_predictions_csv": 0' in out  # scoring reproduces the run's predictions
    assert "reduced gpu book planned: 3 runs" in out
