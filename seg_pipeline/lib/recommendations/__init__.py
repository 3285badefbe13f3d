"""Recommenders, their evaluation and the reasons attached to each recommendation."""
