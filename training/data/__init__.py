"""Datasets: uploads parsed within their limits, stored, and read back for training."""
