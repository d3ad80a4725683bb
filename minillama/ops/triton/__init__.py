"""Triton kernels for CUDA; importing a module here imports triton."""
