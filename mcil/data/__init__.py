"""Data layer: synthetic dataset, manifests, real-dataset preparers, tensor cache, scenarios."""
