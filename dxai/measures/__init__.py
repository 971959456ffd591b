"""Scores of explanations: plain functions and accumulators over tensors, no training, no files.

Used by training (validation metrics), the evaluation report and the tests alike.
"""
