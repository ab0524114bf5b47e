"""Evaluations: perplexity by length, passkey, LongBench, Open LLM tasks (lm-eval), RULER."""
