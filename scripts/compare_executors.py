"""The same CPU sweep through both executors, and the two kill tests, at full size (issue 16's figures).

    python scripts/compare_executors.py OUT [--values 50,100,200,400] [--models ...] [--threads 1]

Runs, one after another (nothing else should run on the machine meanwhile):
1. the sweep with `--executor local`, then with `--executor ray` (a local Ray instance, all CPUs):
   wall time of each, and the cells that differ outside results.RUN_VARYING_COLUMNS;
2. the sweep on Ray with the first Ray worker seen running a point killed (SIGKILL): its rows;
3. the sweep on Ray with the driver killed (SIGKILL) after its first rows, then `--resume`: rows
   before and after, points lost and duplicated.
Writes OUT/{local,ray,kill-worker,kill-driver}/ (each a sweep folder) and OUT/summary.json, and
prints the summary. Every figure is read back from the CSVs and the clocks of this run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import results  # noqa: E402


def sweep(argv: list[str], out: Path) -> subprocess.Popen:
    log = open(out.with_suffix(".log"), "w")
    return subprocess.Popen([sys.executable, "-m", "bench.sweep", *argv, "--out", str(out)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)


def timed(argv: list[str], out: Path) -> float:
    began = time.monotonic()
    code = sweep(argv, out).wait()
    if code != 0:
        raise SystemExit(f"{out.name}: the sweep exited {code}; see {out.with_suffix('.log')}")
    return round(time.monotonic() - began, 1)


def kill_first_worker(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a sweep point (`ray::sweep_point`); its pid goes
    into `killed`. Polls /proc every 50 ms until then or until `stop` is set."""
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if cmdline.read_bytes().startswith(b"ray::sweep_point"):
                    os.kill(int(cmdline.parent.name), signal.SIGKILL)
                    killed.append(int(cmdline.parent.name))
                    return
            except (OSError, ValueError):
                continue
        time.sleep(0.05)


def statuses(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--values", default="50,100,200,400")
    p.add_argument("--models", default="sasrec,linrec,recgrela,mamba4rec,lrurec")
    p.add_argument("--threads", default="1")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = ["--axis", "seqlen", "--values", args.values, "--models", args.models, "--threads", args.threads]
    n_points = len(args.values.split(",")) * len(args.models.split(","))
    summary: dict = {"command": f"python -m bench.sweep {' '.join(base)} [--executor ray]", "points": n_points}

    # 1. both executors
    summary["wall_s_local"] = timed(base, args.out / "local")
    summary["wall_s_ray"] = timed(base + ["--executor", "ray"], args.out / "ray")
    local, ray = (results.read_rows(args.out / run / "results.csv") for run in ("local", "ray"))
    differing, compared = results.differing_cells(local, ray)
    summary.update(cells_compared=compared, cells_differing=sum(differing.values()), differing_by_column=differing,
                   statuses_local=statuses(local), statuses_ray=statuses(ray))
    by_key = {results.row_key(r): r for r in local}
    ratios = [float(r["time_median_ms"]) / float(by_key[results.row_key(r)]["time_median_ms"])
              for r in ray if r["status"] == "ok" and by_key[results.row_key(r)]["status"] == "ok"]
    summary["step_time_ratio_ray_over_local_median"] = round(statistics.median(ratios), 3) if ratios else None

    # 2. a worker killed mid-sweep
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=kill_first_worker, args=(killed, stop), daemon=True)
    killer.start()
    code = sweep(base + ["--executor", "ray"], args.out / "kill-worker").wait()
    stop.set()
    killer.join()
    rows = results.read_rows(args.out / "kill-worker" / "results.csv")
    summary["kill_worker"] = {"exit_code": code, "workers_killed": len(killed), "rows": len(rows),
                              "statuses": statuses(rows),
                              "error_reasons": [r["reason"] for r in rows if r["status"] == "error"]}

    # 3. the driver killed, then resumed
    out = args.out / "kill-driver"
    csv_path = out / "results.csv"
    driver = sweep(base + ["--executor", "ray"], out)
    while driver.poll() is None and not (csv_path.exists() and len(results.read_rows(csv_path)) >= 3):
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    before = {results.row_key(r): r for r in results.read_rows(csv_path)}
    code = sweep(base + ["--executor", "ray", "--resume"], out).wait()
    after_rows = results.read_rows(csv_path)
    after = {results.row_key(r): r for r in after_rows}
    summary["kill_driver"] = {"rows_before_kill": len(before), "resume_exit_code": code, "rows_after_resume": len(after_rows),
                              "points_lost": n_points - len(after), "points_duplicated": len(after_rows) - len(after),
                              "rows_before_changed": sum(after.get(k) != r for k, r in before.items()),
                              "statuses": statuses(after_rows)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
