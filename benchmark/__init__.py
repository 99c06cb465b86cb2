"""PruneSec Bench: what pruning does to a model's security, one Hydra cell at a time."""
