"""`python -m mpimat plan|calibrate` and `--strategy dot|auto`, as users run them (real mpiexec)."""

import json

import numpy as np
import pytest

from launch import run_mpimat
from mpimat import model
from mpimat.calibration import load as load_calibration
from mpimat.partition import Grid

TIMEOUT = 120


def run(args, ranks=None, env=None, timeout=TIMEOUT):
    return run_mpimat(args, n=ranks, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "calibration.json"
    res = run(["calibrate", "--quick", "--save", str(path)], ranks=2)
    assert res.returncode == 0, res.stderr
    assert "saved to" in res.stdout
    return path


def test_calibrate_saves_positive_figures(calibration):
    doc = json.loads(calibration.read_text())
    mach = doc["machine"]
    for key in ("latency", "bandwidth", "gflops", "gflops_noblas", "dot_call", "dot_gflops"):
        assert mach[key] > 0, key
    assert mach["latency"] < 1e-2 and mach["bandwidth"] > 1e6 and mach["cores"] >= 1
    # SUMMA's two figures are measured too (calibrate.gemm_half_width, summa_step), and plan uses them.
    assert 0 <= mach["gemm_half_width"] <= 4096 and 0 <= mach["summa_step"] < 0.1
    assert load_calibration(str(calibration)).summa_step == mach["summa_step"]


def test_half_width_fit_and_step_recover_the_models_figures():
    from mpimat.cli import calibrate

    # Times as the model's rate G w / (w + h) gives them, G = 40 GFLOP/s, h = 24.
    widths = (16, 32, 64, 128, 256, 1024)
    seconds = [2 * 1024 * 1024 * w / (40e9 * w / (w + 24)) for w in widths]
    assert calibrate.fit_half_width(1024, 1024, widths, seconds) == pytest.approx(24)
    # The step recovered from a time the model predicts with summa_step = 35 us.
    machine = {"latency": 3e-6, "bandwidth": 5e9, "gflops": 20.0, "cores": 2, "gemm_half_width": 24.0}
    shape = (16, 4096, 16)
    t = model.summa_time(*shape, Grid(2, 1), model.Machine(**machine, summa_step=35e-6), calibrate.SUMMA_WIDTH)
    assert calibrate.summa_step(machine, shape, t.seconds) == pytest.approx(35e-6)


def test_calibrate_with_one_rank_says_why_and_exits_2(tmp_path):
    res = run(["calibrate", "--save", str(tmp_path / "c.json")], ranks=1)
    assert res.returncode == 2
    assert "mpimat: error: calibrate measures latency and bandwidth between two ranks" in res.stderr
    assert "-n 2" in res.stderr
    assert not (tmp_path / "c.json").exists()


def test_plan_with_explicit_machine_shows_phases_bound_and_recommendation():
    res = run(["plan", "--shape", "100000", "100000", "100000", "--ranks", "1024",
               "--latency", "2us", "--bandwidth", "100Gb/s", "--gflops", "40"])
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "where the time goes" in out and "tiles 32x32" in out and "dot K=1" in out
    assert "12.5 GB/s" in out  # 100 Gb/s in bytes
    # 2 * 1e10 words * 8 bytes / 12.5e9 B/s = 12.8 s, whatever the rank count.
    assert "160 GB out of rank 0" in out and "12.8 s" in out
    assert "blog's scenario" in out
    assert "recommendation: --strategy tiles --grid 32x32" in out


def test_plan_json_is_consistent():
    res = run(["plan", "--size", "4096", "--ranks", "16", "--latency", "1e-6", "--bandwidth", "1e9",
               "--gflops", "10", "--json"])
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    best = plan["recommendation"]
    assert best["strategy"] == "tiles"
    totals = [p["total"] for p in plan["predictions"]]
    assert best["seconds"] == pytest.approx(min(totals))
    assert all(t >= plan["lower_bound"]["seconds"] * 0.999 for t in totals)
    assert plan["blog_scenario"]["ranks"] == 4096 ** 2


def test_plan_without_parameters_uses_the_saved_calibration(calibration):
    res = run(["plan", "--size", "512", "--ranks", "2"], env={"MPIMAT_CALIBRATION": str(calibration)})
    assert res.returncode == 0, res.stderr
    assert f"calibration {calibration}" in res.stdout
    res = run(["plan", "--size", "512", "--ranks", "2"],
              env={"MPIMAT_CALIBRATION": str(calibration.parent / "missing.json")})
    assert res.returncode == 0 and "defaults (no calibration saved" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["plan"], "plan needs --shape M K N or --size N"),
    (["plan", "--size", "10", "--bandwidth", "fast"], "bandwidth must look like"),
    (["plan", "--size", "10", "--latency", "-1"], "latency"),
    (["plan", "--size", "10", "--ranks", "0"], "--ranks"),
    (["plan", "--size", "10", "--calibration", "/nonexistent/cal.json"], "no calibration file"),
])
def test_plan_bad_input_is_one_line_and_exit_2(args, message):
    res = run(args, ranks=2)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpimat: error:") and message in lines[0]


def test_corrupt_calibration_is_an_input_error(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text("{not json")
    res = run(["plan", "--size", "64"], env={"MPIMAT_CALIBRATION": str(bad)})
    assert res.returncode == 2 and "not a valid mpimat calibration" in res.stderr


def test_dot_strategy_end_to_end_report(tmp_path):
    a, b, out, rep = (tmp_path / f for f in ("a.npy", "b.npy", "c.npy", "r.json"))
    rng = np.random.default_rng(0)
    A = rng.integers(-128, 127, (13, 9), dtype=np.int8)
    B = rng.integers(-128, 127, (9, 11), dtype=np.int8)
    np.save(a, A)
    np.save(b, B)
    res = run(["--a", str(a), "--b", str(b), "--out", str(out), "--strategy", "dot", "--tasks-per-message", "4",
               "--keep-blocks", "--report", str(rep), "--quiet"], ranks=3)
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(np.load(out), A @ B)
    r = json.loads(rep.read_text())
    assert r["strategy"] == "dot" and r["verification"]["passed"]
    assert r["tasks"] == 13 * 11 and r["tasks_per_message"] == 4 and r["keep_blocks"] is True
    batches = -(-143 // 4)
    assert r["messages"] == 2 * batches + 2 * r["window"]
    assert r["dot_products_per_second"] > 0
    assert sum(p["tasks_computed"] for p in r["per_rank"]) == 143
    assert r["rows_sent"] + r["rows_reused"] == 143
    assert all(p["bytes_sent"] > 0 for p in r["per_rank"])


def test_auto_strategy_follows_the_model(tmp_path, calibration):
    rep = tmp_path / "r.json"
    res = run(["--shape", "400", "30", "20", "--strategy", "auto", "--report", str(rep), "--quiet"], ranks=2,
              env={"MPIMAT_CALIBRATION": str(calibration)})
    assert res.returncode == 0, res.stderr
    r = json.loads(rep.read_text())
    assert r["verification"]["passed"]
    # Random inputs can stay in blocks, so summa competes (issue 12); with --verify exact (which
    # gathers everything on rank 0) only the root-scatter strategies do.
    mach = load_calibration(str(calibration))
    best = model.recommend(400, 30, 20, 2, mach, "float64", distributed=True)["best"]
    assert r["auto"]["strategy"] == best.strategy and r["auto"]["grid"] == [int(x) for x in best.grid.split("x")]
    assert r["grid"] == best.grid and r["auto"]["machine"] == f"calibration {calibration}"
    res = run(["--shape", "400", "30", "20", "--strategy", "auto", "--verify", "exact", "--report", str(rep),
               "--quiet"], ranks=2, env={"MPIMAT_CALIBRATION": str(calibration)})
    assert res.returncode == 0, res.stderr
    r = json.loads(rep.read_text())
    assert r["auto"]["strategy"] == "tiles" and r["auto"]["grid"] == [2, 1]
    assert r["grid"] == "2x1" and r["auto"]["machine"] == f"calibration {calibration}"


def test_plan_two_levels_flags_in_the_header_and_the_root_node_link_in_the_phases():
    base = ["plan", "--size", "2048", "--ranks", "4", "--latency", "20us", "--bandwidth", "12MB/s",
            "--gflops", "30", "--json"]
    one = json.loads(run(base).stdout)
    res = run(base[:-1] + ["--ranks-per-node", "2", "--intra-latency", "1us", "--intra-bandwidth", "10GB/s"])
    assert res.returncode == 0, res.stderr
    header = res.stdout.splitlines()[1]
    assert "2 ranks per node (2 nodes)" in header
    assert "between nodes: latency 20 us, bandwidth 12 MB/s per node" in header
    assert "within a node: latency 1 us, bandwidth 10 GB/s" in header
    assert "--ranks-per-node, --intra-latency, --intra-bandwidth" in header
    two = json.loads(run(base + ["--ranks-per-node", "2", "--intra-bandwidth", "10GB/s"]).stdout)
    assert two["machine"]["ranks_per_node"] == 2 and two["machine"]["bandwidth_intra"] == 1e10
    tiles = {p["grid"]: p for p in two["predictions"] if p["strategy"] == "tiles"}
    # 2x2: three 1024x2048 blocks leave node 0 one after the other at 12 MB/s.
    assert tiles["2x2"]["phases"]["distribute"] == pytest.approx(3 * (20e-6 + 1024 * 2048 * 8 / 12e6))
    flat = {p["grid"]: p for p in one["predictions"] if p["strategy"] == "tiles"}
    assert flat["2x2"]["phases"] != tiles["2x2"]["phases"]


@pytest.mark.parametrize("flag,value", [("--ranks-per-node", "0"), ("--intra-bandwidth", "fast"),
                                        ("--intra-latency", "-1")])
def test_plan_two_level_bad_flags_are_one_line_exit_2(flag, value):
    res = run(["plan", "--size", "10", flag, value], ranks=2)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpimat: error:") and flag.lstrip("-").split("-")[-1] in lines[0]


def test_old_calibration_files_load_with_one_level(tmp_path):
    # A file from before two-level calibration: no intra keys, no ranks_per_node.
    old = {"machine": {"latency": 2e-6, "bandwidth": 5e9, "gflops": 30.0, "gflops_noblas": 1.0,
                       "dot_gflops": 2.0, "dot_call": 1e-6, "dispatch_batch": 4e-6, "dispatch_task": 1e-6,
                       "dispatch_element": 0.0, "blas_setup": 0.0, "cores": 2}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    res = run(["plan", "--size", "512", "--ranks", "2", "--calibration", str(path), "--json"])
    assert res.returncode == 0, res.stderr
    mach = json.loads(res.stdout)["machine"]
    assert mach["ranks_per_node"] is None and mach["latency_intra"] is None and mach["bandwidth"] == 5e9
    # Null intra figures (a calibration with one rank per node) load too; a bad count does not.
    path.write_text(json.dumps({"machine": {**old["machine"], "latency_intra": None, "bandwidth_intra": None,
                                            "ranks_per_node": 1}}))
    assert run(["plan", "--size", "512", "--calibration", str(path)]).returncode == 0
    path.write_text(json.dumps({"machine": {**old["machine"], "ranks_per_node": 0}}))
    res = run(["plan", "--size", "512", "--calibration", str(path)])
    assert res.returncode == 2 and "ranks_per_node must be a whole number" in res.stderr
    path.write_text(json.dumps({"machine": {**old["machine"], "bandwidth_intra": 0}}))
    res = run(["plan", "--size", "512", "--calibration", str(path)])
    assert res.returncode == 2 and "bandwidth_intra must be positive" in res.stderr


def test_calibrate_picks_a_kernel_per_dtype_and_auto_follows_it(tmp_path, calibration):
    pytest.importorskip("torch")
    doc = json.loads(calibration.read_text())
    assert set(doc["kernels"]) == {"float32", "float64", "complex64", "complex128"}
    assert set(doc["kernels"].values()) <= {"numpy", "torch"}
    rep = tmp_path / "r.json"
    res = run(["--size", "300", "--kernel", "auto", "--report", str(rep), "--quiet"], ranks=2,
              env={"MPIMAT_CALIBRATION": str(calibration)})
    assert res.returncode == 0, res.stderr
    report = json.loads(rep.read_text())
    assert report["kernel"] == doc["kernels"]["float64"]
    # Every rank's import of the kernel's library (kernels.preload) is timed in its load phase.
    assert all("load" in r["phases"] for r in report["per_rank"])
    res = run(["--size", "300", "--dtype", "int32", "--kernel", "auto", "--report", str(rep), "--quiet"], ranks=2,
              env={"MPIMAT_CALIBRATION": str(calibration)})
    assert res.returncode == 0 and json.loads(rep.read_text())["kernel"] == "numpy"  # torch's ints are not numpy's


def test_plan_shows_summa_bytes_next_to_the_communication_lower_bound():
    res = run(["plan", "--size", "8192", "--ranks", "16", "--latency", "2us", "--bandwidth", "10GB/s",
               "--gflops", "40", "--json"])
    assert res.returncode == 0, res.stderr
    sm = json.loads(res.stdout)["summa"]
    # A near-square grid (the flops hide the rest); each rank receives the parts of its row block
    # of A and of its column block of B that the others own.
    assert sm["grid"] in ("4x4", "2x8", "8x2")
    pr, pc = map(int, sm["grid"].split("x"))
    want = 8192 // pr * 8192 * 8 * (pc - 1) / pc + 8192 * (8192 // pc) * 8 * (pr - 1) / pr
    assert sm["received_bytes"] == pytest.approx(want)
    assert 0 <= sm["bound_bytes"] < sm["received_bytes"]  # here the memory is large: the bound is weak
    big = run(["plan", "--size", "100000", "--ranks", "1024", "--latency", "2us", "--bandwidth", "10GB/s",
               "--gflops", "40", "--json"])
    sm = json.loads(big.stdout)["summa"]
    assert 0 < sm["bound_bytes"] < sm["received_bytes"]
    text = run(["plan", "--size", "8192", "--ranks", "16", "--latency", "2us", "--bandwidth", "10GB/s",
                "--gflops", "40"]).stdout
    assert "--strategy summa" in text and "Irony, Toledo, Tiskin 2004" in text


def test_plan_shows_the_panel_width_the_model_picks_for_summa():
    flags = ["--latency", "2us", "--bandwidth", "10GB/s", "--gflops", "40"]
    res = run(["plan", "--size", "8192", "--ranks", "16", *flags, "--json"])
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    sm = plan["summa"]
    mach = model.Machine.from_dict(plan["machine"])
    grid = Grid(*map(int, sm["grid"].split("x")))
    # The width dist.matmul would use (the model's), and its panels: what predict_summa costed.
    want = model.predict_summa(8192, 8192, 8192, grid, mach).options
    assert (sm["panel_width"], sm["panels"]) == (want["panel_width"], want["panels"])
    assert 128 <= sm["panel_width"] <= 8192 and sm["panels"] >= 8192 // sm["panel_width"]
    text = run(["plan", "--size", "8192", "--ranks", "16", *flags]).stdout
    assert f"panel width {sm['panel_width']}: {sm['panels']} panels of at most {sm['panel_width']}" in text
    # A slower network (more latency per message) never makes the panels narrower.
    slow = run(["plan", "--shape", "512", "65536", "512", "--ranks", "16", "--latency", "1ms", "--json"])
    fast = run(["plan", "--shape", "512", "65536", "512", "--ranks", "16", "--latency", "0.1us", "--json"])
    assert json.loads(slow.stdout)["summa"]["panel_width"] > json.loads(fast.stdout)["summa"]["panel_width"]


def test_plan_charges_summa_contention_per_host_and_adds_broadcasts_between_hosts():
    # Issue 12's cluster: 4 hosts x 1 rank, one core per host.  One rank per core: no
    # slowdown (summa used to be charged 4x, as if the four ranks shared one host), and the
    # broadcasts between hosts add to the products (no asynchronous progress over TCP).
    flags = ["--size", "4096", "--ranks", "4", "--latency", "15us", "--bandwidth", "114MB/s", "--gflops", "50",
             "--ranks-per-node", "1", "--json"]
    plan = json.loads(run(["plan", *flags, "--cores", "1"]).stdout)
    one_core = plan["summa"]
    many = json.loads(run(["plan", *flags, "--cores", "8"]).stdout)["summa"]
    assert one_core["seconds"] == pytest.approx(many["seconds"])
    mach = model.Machine.from_dict(plan["machine"])
    assert (mach.ranks_per_node, mach.cores) == (1, 1)
    grid = Grid(*map(int, one_core["grid"].split("x")))
    t = model.summa_time(4096, 4096, 4096, grid, mach, one_core["panel_width"])
    assert t.network > 0 and t.broadcasts == 0
    assert one_core["seconds"] == pytest.approx(t.products + t.steps + t.network + mach.blas_setup, rel=1e-6)
