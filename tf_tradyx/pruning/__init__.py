"""Pruning at initialization: PX and its baselines."""
