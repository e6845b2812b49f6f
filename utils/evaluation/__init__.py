"""Evaluation: scoring.py (the ranking engine), metrics.py, question_types.py (metrics per question
type), report.py, validation.py (val metrics, used by training too), evalai.py (the test-server
files), score_files.py (-save_scores files and their ensembles), run.py (what evaluate.py and
scripts/ensemble.py run) and ranker.py (`DialogRanker`: answers to your own questions about your
own images).

`from utils.evaluation import DialogRanker` loads the ranker (and with it the models) only when it
is asked for: importing metrics.py alone does not load them.
"""
__all__ = ["DialogRanker", "RankingQuery"]


def __getattr__(name: str):
    """DialogRanker, RankingQuery: imported from ranker.py on first use."""
    if name in __all__:
        from utils.evaluation import ranker
        return getattr(ranker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
