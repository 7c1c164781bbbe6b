"""What-if sweeps: grids of migrations over session fields, run on Dask distributed.

grid (field paths, value lists and ranges, the points and their validation), point (one
point's run and its row, what a Dask worker executes), cluster (how many workers fit and the
Dask client), runner (submit, collect, cancel), rows (CSV/JSON output and resume).
"""
