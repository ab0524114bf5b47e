"""The parts of benchmarks/gpu_check.py: plan, runtime, correctness, timing, output."""
