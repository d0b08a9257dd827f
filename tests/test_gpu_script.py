"""The prepared GPU run (benchmarks/gpu_check.py) exercised end to end on this machine's CPU (--dry-run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_fills_every_table(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["dry_run"] and not result["failed"] and result["device"]
    (backend,) = result["backends"]
    assert {(r["policy"], r["tile"]) for r in backend["raw"]} == {
        (p, t) for p in ("float32", "mixed_bfloat16") for t in (64, 128)}
    assert all(r["mpx_per_s"] > 0 for r in backend["raw"]) and backend["train"]["samples_per_s"] > 0
    assert [e["image"] for e in backend["e2e"]] == [[300, 400], [512, 512]]
    assert all(e["mpx_per_s"] > 0 and 0 < e["share_of_raw"] for e in backend["e2e"])
    assert "raw network" in (tmp_path / "gpu.md").read_text()
