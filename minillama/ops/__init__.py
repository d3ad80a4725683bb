"""The model's compute behind one table (table.py), chosen once per engine (select.py).

reference/ holds the readable PyTorch definition of every op; cpu/ (C, fp32) and triton/ (CUDA)
hold faster kernels that compute the same thing, each tested against its reference.
"""
