"""slurm/collect.py on real report files, with and without matplotlib."""

import json
import subprocess
import sys

from launch import ROOT

COLLECT = ROOT / "slurm" / "collect.py"


def write_reports(directory):
    for ranks, seconds in ((1, 2.0), (2, 1.1), (4, 0.6)):
        report = {"shape": [64, 64, 64], "dtype": "float64", "strategy": "tiles", "ranks": ranks,
                  "grid": f"{ranks}x1", "matmul_seconds": seconds, "gflops": 1.0, "exit_code": 0,
                  "phases": {"distribute": 0.1, "compute": seconds - 0.2, "gather": 0.1}}
        (directory / f"report-{ranks}.json").write_text(json.dumps(report))


def test_collect_writes_table_csv_and_plot(tmp_path):
    write_reports(tmp_path)
    proc = subprocess.run([sys.executable, str(COLLECT), str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert "| 4 | 4x1 |" in (tmp_path / "scaling.md").read_text()


def test_collect_without_matplotlib_completes_with_the_table_and_a_warning(tmp_path):
    write_reports(tmp_path)
    # matplotlib made unimportable in the child only (a None entry in sys.modules).
    code = ("import sys, runpy; sys.modules['matplotlib'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, str(COLLECT), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warning: no plot" in proc.stderr
    assert (tmp_path / "scaling.md").exists() and (tmp_path / "scaling.csv").exists()
    assert not (tmp_path / "scaling.png").exists()
    assert proc.stdout.count("| 2 | 2x1 |") == 1
