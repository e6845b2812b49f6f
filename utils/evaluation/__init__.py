"""Evaluation: scoring.py (the ranking engine), metrics.py, question_types.py (metrics per question
type), report.py, validation.py (val metrics, used by training too), evalai.py (the test-server
files), score_files.py (-save_scores files and their ensembles), run.py (what evaluate.py and
scripts/ensemble.py run), ranker.py (`DialogRanker`: answers to your own questions about your own
images), explain.py (the image regions behind an answer, from the co-attention) and pointing.py
(whether they are the relevant ones).

`from utils.evaluation import DialogRanker` loads the ranker (and with it the models) only when it
is asked for: importing metrics.py alone does not load them.
"""
_PUBLIC = {"DialogRanker": "ranker", "RankingQuery": "ranker", "ExplainedAnswer": "explain",
           "RegionWeight": "explain"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """The public names, imported from their module on first use."""
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(f"utils.evaluation.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
