"""Reports: a run's settings, summary and verdict rendered for people and tools (terminal, JSON,
MLPerf-style summary text). Rendering is pure; only the writers touch files."""
