"""Evaluation: scoring.py (the ranking engine), metrics.py, question_types.py (metrics per question
type), report.py, validation.py (val metrics, used by training too), evalai.py (the test-server
files), score_files.py (-save_scores files and their ensembles), model_config.py (the model config
checked against the data), run.py (what evaluate.py and scripts/ensemble.py run), ranker.py
(`DialogRanker`: answers to your own questions about your own images), explain.py (the image
regions behind an answer, from the co-attention) and pointing.py (whether they are the relevant ones)."""
from utils.evaluation.explain import ExplainedAnswer, RegionWeight
from utils.evaluation.ranker import DialogRanker, RankingQuery

__all__ = ["DialogRanker", "ExplainedAnswer", "RankingQuery", "RegionWeight"]
