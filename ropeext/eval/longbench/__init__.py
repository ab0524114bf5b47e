"""LongBench and LongBench-E with the benchmark's protocol and metrics, plus an embedded
LongBench-E-style code-completion task built from held-out code.

Modules: ``metrics`` (per-sample scores, ``score``), ``protocol`` (tasks, prompt assets, middle
truncation), ``data`` (reading the JSONL files), ``predict`` (the resumable prediction loop),
``results`` (per-bucket scores, Avg / Avg>4k, ``table1`` for the report), ``embedded`` (the
task builder).
"""
