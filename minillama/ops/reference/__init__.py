"""The readable PyTorch definition of every op: what the fast kernels are tested against."""
