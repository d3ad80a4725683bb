"""C kernels for a CPU decode step, in fp32, built on first use (c_kernels.py)."""
