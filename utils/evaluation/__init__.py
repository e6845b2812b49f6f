"""Evaluation: scoring.py (the ranking engine), metrics.py, question_types.py (metrics per question
type), report.py, validation.py (val metrics, used by training too), evalai.py (the test-server
files), score_files.py (-save_scores files and their ensembles), model_config.py (the model config
checked against the data), run.py (what evaluate.py and scripts/ensemble.py run) and ranker.py
(`DialogRanker`: answers to your own questions about your own images)."""
from utils.evaluation.ranker import DialogRanker, RankingQuery

__all__ = ["DialogRanker", "RankingQuery"]
