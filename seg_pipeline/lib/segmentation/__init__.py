"""Behavioural customer segmentation: features, model selection, naming and profiles."""
