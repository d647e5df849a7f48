"""The searches, each a pure strategy beside the driver that plays its probes: the peak search
(peak_search.py, peak_run.py; a mix's in mix_peak_run.py) and the configuration sweep
(sweep_*.py)."""
