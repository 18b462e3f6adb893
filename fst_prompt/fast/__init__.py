"""Fast weights: a population of instructions evolved by GEPA on the live policy."""
