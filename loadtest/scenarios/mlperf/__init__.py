"""The MLPerf scenarios: how each is played (play.py), judged (interpret.py) and read (registry.py),
and the checks beside a run: --check-outputs (accuracy.py) and --same-sample (cache_probe.py)."""
