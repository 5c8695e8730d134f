"""A picture of the run: --trace (Chrome trace events) and `mpimat report --timeline` from a real run."""

import json

from launch import one_error_line, run_mpimat


def read_run(proc, tmp_path, ranks):
    """A finished run's report, trace and trace spans; the trace has one named track per rank."""
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "run.json").read_text())
    trace = json.loads((tmp_path / "trace.json").read_text())
    events = trace["traceEvents"]
    tracks = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert sorted(tracks) == list(range(ranks))
    assert all(name.startswith(f"rank {pid}") for pid, name in tracks.items())
    return rep, trace, [e for e in events if e["ph"] == "X"]


def redraw(tmp_path, trace):
    """`mpimat report` draws the timeline PNG from the report and writes the same trace again."""
    proc = run_mpimat(["report", "run.json", "--timeline", "t.png", "--trace", "again.json"], n=None, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    png = (tmp_path / "t.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    assert json.loads((tmp_path / "again.json").read_text()) == trace


def test_trace_and_timeline_from_a_real_run(tmp_path):
    proc = run_mpimat(["--size", 600, "--report", "run.json", "--trace", "trace.json", "--quiet"], n=3,
                      cwd=tmp_path)
    rep, trace, spans = read_run(proc, tmp_path, ranks=3)
    for rank in range(3):
        mine = {e["name"] for e in spans if e["pid"] == rank}
        assert {"distribute", "compute", "gather", "panel"} <= mine, (rank, mine)
        assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans if e["pid"] == rank)
    # The events are the report's, in microseconds.
    first = rep["per_rank"][1]["events"][0]
    assert any(e["pid"] == 1 and e["name"] == first[0] and abs(e["ts"] - first[1] * 1e6) < 1 for e in spans)
    # Panels carry the bytes of C they computed: together, all of C.
    panel_bytes = sum(e["args"].get("bytes", 0) for e in spans if e["name"] == "panel")
    assert panel_bytes == 600 * 600 * 8

    redraw(tmp_path, trace)


def test_trace_and_timeline_of_summa(tmp_path):
    proc = run_mpimat(["--strategy", "summa", "--shape", 300, 260, 280, "--report", "run.json", "--trace",
                       "trace.json", "--quiet"], n=3, cwd=tmp_path)
    rep, trace, spans = read_run(proc, tmp_path, ranks=3)
    for rank, r in enumerate(rep["per_rank"]):
        mine = [e for e in spans if e["pid"] == rank]
        panels = [e for e in mine if e["name"] == "panel"]
        # One panel event per panel of k, each carrying the bytes of the rank's block of C it updates.
        assert len(panels) == r["panels"] >= 1, (rank, r["panels"])
        assert len({e["args"]["bytes"] for e in panels}) == 1 and panels[0]["args"]["bytes"] > 0
        assert {"compute", "panel", "wait"} <= {e["name"] for e in mine}, rank
        compute = next(e for e in mine if e["name"] == "compute")
        for e in mine:
            assert e["dur"] >= 0 and e["ts"] >= 0
            if e["name"] in ("panel", "wait"):  # inside SUMMA, on the second row
                assert e["tid"] == 1 and compute["ts"] - 1 <= e["ts"] <= e["ts"] + e["dur"] <= \
                    compute["ts"] + compute["dur"] + 1
        # The waits are the ones wait_seconds adds up.
        waits = sum(e[2] - e[1] for e in r["events"] if e[0] == "wait")
        assert abs(waits - r["wait_seconds"]) < 1e-3
    # Together, the blocks of C: the first panel's bytes over the ranks are all of C.
    assert sum(next(e for e in spans if e["pid"] == rank and e["name"] == "panel")["args"]["bytes"]
               for rank in range(3)) == 300 * 280 * 8

    redraw(tmp_path, trace)


def test_report_subcommand_errors_are_one_line(tmp_path):
    (tmp_path / "bad.json").write_text('{"per_rank": [{}]}')
    proc = run_mpimat(["report", "bad.json", "--timeline", "t.png"], n=None, cwd=tmp_path)
    assert proc.returncode == 2 and "not an mpimat report with events" in one_error_line(proc)
    proc = run_mpimat(["report", "bad.json"], n=None, cwd=tmp_path)
    assert proc.returncode == 2 and "--timeline" in one_error_line(proc)
    assert not (tmp_path / "t.png").exists()


def test_trace_may_not_be_the_report(tmp_path):
    proc = run_mpimat(["--size", 8, "--report", "r.json", "--trace", "r.json"], n=2, cwd=tmp_path)
    assert proc.returncode == 2 and "the same file" in one_error_line(proc)


def test_trace_and_timeline_with_checked_panels(tmp_path):
    proc = run_mpimat(["--size", 600, "--check-panels", "--report", "run.json", "--trace", "trace.json", "--quiet"],
                      n=2, cwd=tmp_path)
    rep, trace, spans = read_run(proc, tmp_path, ranks=2)
    for rank, r in enumerate(rep["per_rank"]):
        checks = [e for e in spans if e["pid"] == rank and e["name"] == "check"]
        assert len(checks) == r["panels_checked"] >= 1, rank
    redraw(tmp_path, trace)
