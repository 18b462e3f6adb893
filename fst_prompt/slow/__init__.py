"""Slow weights: GRPO (TRL) with the population mixed inside each group, and a KL-to-base probe."""
