"""Evaluation (docs/code.md). The public names are imported on first use, so that importing metrics.py
alone does not load the models."""
_PUBLIC = {"DialogRanker": "ranker", "RankingQuery": "ranker", "ExplainedAnswer": "explain",
           "RegionWeight": "explain"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(f"utils.evaluation.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
