"""Scores of explanations: beta-AUC, class-agnosticism, ground-truth agreement, reports."""
