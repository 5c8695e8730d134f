"""The run report: every key, what it means and who writes it, in one place.

Each rank measures into a stats.Stats; strategies and api.py add their
figures with `Stats.record(name=value)`, which accepts only the names in
FIELDS below.  The CLI gathers every rank's Stats.as_dict() and calls
build() on rank 0 for the JSON report (`--report`) and human() for the text
on stdout.  Pure: no MPI.

Top-level keys of the JSON report (build()):
  shape [m, k, n]; dtype (of C), dtype_a, dtype_b; inputs ("files" or
  "random"); seed (random inputs) ; ranks; grid ("PRxPC"); strategy (as
  asked: "auto" stays "auto", see `auto`); blas_threads; phases (PHASES ->
  seconds on rank 0); matmul_seconds (distribute + compute + gather);
  flops (2 m n k); gflops; verification (verify.Verdict.as_dict());
  exit_code; bytes (A, B, C sizes and sent_total, the payload all ranks
  sent); per_rank (each rank's Stats.as_dict(): phases, bytes_sent,
  bytes_received, messages_sent, max_rss_bytes, peak_traced_bytes, its
  recorded FIELDS, and events: [name, start, end, bytes] spans in seconds
  from the job's start (a barrier): the phases, and for tiles and summa each
  "panel" computed (bytes of C it wrote: tiles' panel of C, summa's step
  updating the rank's block of C), each "wait" for a panel's inputs
  (summa: its broadcasts) and, with tiles' check_panels, each panel's
  "check"); versions;
  out (the --out path, when written).
  Plus rank 0's recorded FIELDS at the top level (e.g. tasks for dot).
"""

from __future__ import annotations

from typing import Dict, List, Optional

# Phases, in order; "load" is shown as "generate" for random inputs.
PHASES = ("load", "distribute", "compute", "gather", "write", "verify")

# What Stats.record accepts: name -> (who writes it, meaning).
FIELDS: Dict[str, str] = {
    "grid": "api, summa: the process grid used, 'PRxPC' ('1x1' when tiles computed the product alone)",
    "alone": "tiles: the product was below alone_flops, so the root computed it alone (no messages)",
    "blas_threads": "api: BLAS threads per rank (null: BLAS's own default)",
    "kernel": "api, summa: the local kernel that ran ('numpy' or 'torch'; kernels.py)",
    "shared": "api: every rank read A and B from memory shared with the root (shared=True, one node), "
              "so no input data was sent",
    "auto": "api (strategy=auto): the model's choice: strategy, grid, options, predicted_seconds, "
            "predicted_phases, machine (the calibration's source)",
    "panels": "tiles: result panels this rank computed of its own tile; summa: panels of k",
    "panels_checked": "tiles (check_panels): result panels this rank computed and checked (Freivalds)",
    "panel_width": "summa: the widest panel (columns of A, rows of B)",
    "wait_seconds": "summa: time this rank waited for a panel's broadcasts",
    "panels_taken_over": "tiles (root): tail pieces of late ranks' tiles the root computed",
    "tasks_per_message": "dot: tasks (dot products) per message, K",
    "keep_blocks": "dot: whether workers kept rows/columns (--keep-blocks)",
    "window": "dot: batches in flight per worker",
    "tasks": "dot (root): tasks dispatched (m n)",
    "messages": "dot (root): messages sent and received by the dispatcher",
    "dispatch_seconds": "dot (root): wall time of the dispatch loop",
    "dot_products_per_second": "dot (root): tasks / dispatch_seconds",
    "tasks_computed": "dot: tasks this rank computed",
    "rows_sent": "dot (root): rows of A sent", "cols_sent": "dot (root): columns of B sent",
    "rows_reused": "dot (root): rows a worker already held (keep_blocks)",
    "cols_reused": "dot (root): columns a worker already held (keep_blocks)",
    "keep_cache_slots": "dot (root, keep_blocks): cache slots per worker {rows, cols}",
    "host": "cli: the rank's host (MPI_Get_processor_name)",
    "memory_budget_bytes": "cli: what this rank could still allocate at the start (memory.available: "
                           "MemAvailable, the cgroup's memory.max, RLIMIT_AS)",
    "tracemalloc_paused": "stats: tracing was paused in a hot loop; peak_traced_bytes is an upper bound",
}


def build(*, shape, dtype_a: str, dtype_b: str, dtype_c: str, inputs: str, seed: Optional[int],
          ranks: int, strategy: str, phases: Dict[str, float], recorded: Dict[str, object],
          per_rank: List[dict], verification: dict, exit_code: int, sizes: Dict[str, int],
          versions: dict, out: Optional[str]) -> dict:
    """The JSON report (see the module docstring for every key)."""
    m, k, n = shape
    matmul_seconds = sum(phases.get(p, 0.0) for p in ("distribute", "compute", "gather"))
    flops = 2 * m * n * k
    rep = {
        "shape": [m, k, n],
        "dtype": dtype_c, "dtype_a": dtype_a, "dtype_b": dtype_b,
        "inputs": inputs, "seed": seed,
        "ranks": ranks,
        "grid": recorded.get("grid"),
        "strategy": strategy,
        "blas_threads": recorded.get("blas_threads"),
        "phases": {p: round(phases.get(p, 0.0), 6) for p in PHASES},
        "matmul_seconds": round(matmul_seconds, 6),
        "flops": flops,
        "gflops": round(flops / matmul_seconds / 1e9, 3) if matmul_seconds > 0 else 0.0,
        "verification": verification,
        "exit_code": exit_code,
        "bytes": {**sizes, "sent_total": sum(r["bytes_sent"] for r in per_rank)},
        "per_rank": per_rank,
        "versions": versions,
        "out": out,
    }
    # Rank 0's strategy figures (FIELDS) at the top level.
    rep.update({key: value for key, value in recorded.items() if key not in rep})
    return rep


def human(rep: dict) -> str:
    """The text report printed on rank 0."""
    m, k, n = rep["shape"]
    lines = [
        f"mpimat: C = A @ B with A {m}x{k}, B {k}x{n}, {rep['dtype']}, "
        f"{rep['ranks']} ranks, grid {rep['grid']}, strategy {rep['strategy']}"
        + (", A and B shared on the node (nothing distributed)" if rep.get("shared") else ""),
    ]
    for name in PHASES:
        label = "generate" if name == "load" and rep.get("inputs") == "random" else name
        lines.append(f"  {label:<11}{rep['phases'][name]:10.4f} s")
    lines.append(f"  {'GFLOP/s':<11}{rep['gflops']:10.2f}   (distribute + compute + gather: "
                 f"{rep['matmul_seconds']:.4f} s)")
    if rep.get("tasks") is not None:  # --strategy dot
        lines.append(f"  tasks      {rep['tasks']:,} in {rep['messages']:,} messages, "
                     f"{rep['dot_products_per_second']:,.0f} dot products/s")
    checked = sum(r.get("panels_checked", 0) for r in rep["per_rank"])
    if checked:  # --check-panels
        lines.append(f"  panels     {checked} result panels checked by the ranks that computed them")
    v = rep["verification"]
    verdict = "skipped" if v["method"] == "none" else ("PASSED" if v["passed"] else "FAILED")
    lines.append(f"  verify     {v['method']}: {verdict} ({v['detail']})")
    return "\n".join(lines)


def chrome_trace(rep: dict) -> dict:
    """The report's events in Chrome's trace-event format (Perfetto, chrome://tracing): one track per rank."""
    events = []
    for rank, r in enumerate(rep["per_rank"]):
        events.append({"name": "process_name", "ph": "M", "pid": rank, "tid": 0,
                       "args": {"name": f"rank {rank}" + (f" ({r['host']})" if r.get("host") else "")}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0, "args": {"sort_index": rank}})
        for name, start, end, nbytes in r.get("events", []):
            # Phases on one row, panels and waits (inside compute) on a second.
            events.append({"name": name, "cat": "phase" if name in PHASES else "panel", "ph": "X",
                           "pid": rank, "tid": 0 if name in PHASES else 1,
                           "ts": round(start * 1e6, 3), "dur": round(max(end - start, 0.0) * 1e6, 3),
                           "args": {"bytes": nbytes} if nbytes else {}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"shape": rep["shape"], "dtype": rep["dtype"], "strategy": rep["strategy"],
                          "grid": rep["grid"]}}
