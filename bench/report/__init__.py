"""The report pipeline (`python -m bench.report`, `python -m bench.plots`):

1. `plots.py`     read and check a results.csv, one line per model spec, the sweep's own figures;
2. `analysis.py`  slopes and crossovers of the measured curves;
3. `figures.py`   the RecGRELA paper's figures and tables from many runs' CSVs;
4. `report.py`    the command: figures + index.md from the CSVs of several sweeps.
"""
