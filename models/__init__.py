"""PyTorch networks of Henson et al. 2024 (training side). Filled in by the models work."""
