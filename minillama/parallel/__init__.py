"""Tensor parallelism: every layer split across processes (shard.py says how and why)."""
