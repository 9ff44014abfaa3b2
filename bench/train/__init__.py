"""The training pipeline (`python -m bench.train`, `python -m bench.rank`):

1. `data.py`     a dataset file -> per-user sequences, RecBole's leave-one-out split, padded batches;
2. `metrics.py`  full-ranking metrics (Recall, NDCG, MRR @K) from target ranks;
3. `train.py`    the command: train one model with early stopping on validation NDCG@10, keep the
                 best checkpoint, evaluate it on the test split;
4. `rank.py`     feature-matrix ranks of trained checkpoints (the RecGRELA paper's Fig. 9).
"""
