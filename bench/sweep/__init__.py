"""The sweep pipeline, in the order a point travels (`python -m bench.sweep`):

1. `sweep.py`   the command: flags -> the grid (bench.grid: presets, model specs, Point) ->
                one isolated process per point -> rows appended to results.csv -> figures;
2. `runner.py`  runs one point in its own process (limits, timeout, OOM and crash rows);
3. `point.py`   what that process measures: build, FLOP counters, attention kernels, time,
                tracked memory (bench.measure), and the row it writes (bench.results).
"""
