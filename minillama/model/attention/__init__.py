"""What the attention layers read about a batch (metadata.py). The attention implementations are
in minillama/ops."""
