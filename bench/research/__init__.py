"""Experiments behind design choices (docs/RESEARCH.md), not benchmarks of the product's targets."""
