"""PruneSec Bench: what pruning does to a model's security, one Hydra cell at a time.

`from benchmark import evaluate, prune` (benchmark/api.py) loads torch, ART and MLflow when first asked for, so
`import benchmark` stays light (the config checks import it before any heavy library)."""

__all__ = ["evaluate", "prune"]


def __getattr__(name: str):
    if name in __all__:
        from benchmark import api

        return getattr(api, name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
