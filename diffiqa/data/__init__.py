"""Datasets: image IO, adapters to the index contract, splits, distortions, demo data."""
