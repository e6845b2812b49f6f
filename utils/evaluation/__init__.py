"""Evaluation: scoring.py (the ranking engine), metrics.py, report.py, validation.py (val metrics,
used by training too), evalai.py (the test-server files), run.py (what evaluate.py runs) and
ranker.py (`DialogRanker`: answers to your own questions about your own images)."""
from utils.evaluation.ranker import DialogRanker, RankingQuery

__all__ = ["DialogRanker", "RankingQuery"]
