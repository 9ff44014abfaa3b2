"""RecBole's own data pipeline and evaluator against ours (bench.data, bench.metrics), sample for sample.

    python -m bench.adapters.recbole_protocol --data ../shared/data/ml-100k/ml-100k.inter --max-len 50

RecBole side (the `recbole` package, 1.2.1, unedited): `Config(model="SASRec", dataset=NAME,
config_dict=...)` as in ../shared/peers/README.md (CE, no negative sampling, leave-one-out
`valid_and_test`, time order, full ranking, MAX_ITEM_LIST_LENGTH = --max-len, columns user_id,
item_id, timestamp), then `create_dataset` + `data_preparation`. The file must sit where RecBole
looks for it: DATA_PATH/NAME/NAME.inter. Its augmented samples (`SequentialDataset.data_augmentation`:
every prefix, last MAX_ITEM_LIST_LENGTH items kept) are split per user, the last two going to valid
and test (`Dataset.leave_one_out`). Its evaluation is `Trainer._full_sort_batch_eval` (padding column
set to -inf, seen items kept for sequential models) then `Collector.eval_batch_collect` (torch.topk)
and `Evaluator.evaluate` (Hit, NDCG, MRR; 12 decimals instead of the default 4).

Our side: `bench.train.data.load_dataset`, `train_samples` / `split_samples` + `padded_inputs`, and
`bench.train.metrics.target_ranks` + `ranking_metrics`.

Compared: each split's samples as (user token, input item tokens oldest first, target token), as
multisets; and HR/NDCG/MRR@5/10 of valid and test for one score matrix indexed by our ids
([n_users, n_items], rows in `dataset.users` order, column = our dense item id, 0 = padding),
whose columns are mapped to RecBole's internal item ids through the original tokens.

Event order (the one difference in the split): RecBole sorts each user's events by the timestamp
it keeps, a float32 tensor (after min-max normalisation, which its ml-100k.yaml turns on), so
timestamps closer than float32's step (up to 1.1 s over ML-100K's 18.6e6 s range: events 1 s
apart merge) tie and keep file order; bench.data sorts by the exact timestamps. `recbole_event_order` loads the file into our
SequenceDataset with RecBole's key, isolating that difference from the rest of the protocol. The
command compares both loadings against RecBole and counts the users whose order differs.

Ties: ours counts every tied item as above the target (bench.metrics). RecBole takes the
target's position in `torch.topk`'s output, whose order among equal scores is the kernel's own
(neither first nor last); `tie_example()` measures both on a small matrix.

Shims, process-local only: numpy 2 removed `np.float_`, `np.complex_`, `np.unicode_`, which
RecBole's import uses; they are restored as aliases before importing it. Pandas 3 turns RecBole's
`feat[field].fillna(..., inplace=True)` into a no-op with a ChainedAssignmentError warning; it
only fills missing values, and the tests assume none (ML-100K has none). RecBole's Config sets
$CUDA_VISIBLE_DEVICES; it is restored afterwards. Nothing is written: RecBole's checkpoint dir (where
`save_dataset` / `save_dataloaders` would go, and where a cached dataset would be read from) is a
temporary folder removed afterwards; no logger is initialised, so no log folder.

Exit codes: 0 when bench.data's own loading agrees with RecBole in every count, every sample and
every metric (|diff| < 1e-6), 1 when not, 2 on bad input (one line).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from bench import cli
from bench.train import data as seqdata
from bench.train import metrics as ourmetrics

SPLITS = ("train", "valid", "test")
TOLERANCE = 1e-6
_NUMPY2_REMOVED = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
_RECBOLE_NAMES = {"hit": "hr", "ndcg": "ndcg", "mrr": "mrr"}  # RecBole metric -> ours


def import_recbole():
    """Restore the numpy aliases RecBole 1.2.1 imports (numpy 2 removed them), then import it."""
    for name, alias in _NUMPY2_REMOVED.items():
        if not hasattr(np, name):
            setattr(np, name, alias)
    import recbole.config
    import recbole.data
    import recbole.evaluator

    return recbole


@contextlib.contextmanager
def _recbole_quietly():
    """RecBole's Config reads `--key=value` from sys.argv (ours, or pytest's) and writes
    $CUDA_VISIBLE_DEVICES; pandas 3 and torch warn inside its loader. Hide argv, restore the rest."""
    argv, cuda = sys.argv, os.environ.get("CUDA_VISIBLE_DEVICES")
    sys.argv = argv[:1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.argv = argv
        if cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda


def recbole_config(data_path, dataset: str, max_len: int, checkpoint_dir):
    """RecBole's Config of ../shared/peers/README.md, evaluator keys for HR/NDCG/MRR@5/10."""
    recbole = import_recbole()
    config = {"data_path": str(data_path), "device": "cpu", "loss_type": "CE", "train_neg_sample_args": None,
              "MAX_ITEM_LIST_LENGTH": max_len, "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
              "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full",
                            "group_by": "user"},
              "metrics": ["Hit", "NDCG", "MRR"], "topk": list(ourmetrics.KS), "metric_decimal_place": 12,
              "checkpoint_dir": str(checkpoint_dir), "save_dataset": False, "save_dataloaders": False,
              "show_progress": False}
    with _recbole_quietly():
        config = recbole.config.Config(model="SASRec", dataset=dataset, config_dict=config)
    config["device"] = torch.device("cpu")
    return config


def recbole_split(inter_path, max_len: int):
    """RecBole's pipeline on DATA_PATH/NAME/NAME.inter -> (config, dataset, {split: data}).

    `train` is the training dataset (its `inter_feat` holds the samples), `valid` and `test`
    the FullSortEvalDataLoaders (their `.dataset.inter_feat` too). Raises ValueError when the
    file is not laid out as RecBole reads it.
    """
    inter_path = Path(inter_path)
    name = inter_path.name.removesuffix(".inter")
    if inter_path.suffix != ".inter" or inter_path.parent.name != name or not inter_path.is_file():
        raise ValueError(f"{inter_path}: RecBole reads DATA_PATH/NAME/NAME.inter; pass such a file")
    recbole = import_recbole()
    with tempfile.TemporaryDirectory(prefix="recbole-") as scratch:
        config = recbole_config(inter_path.parent.parent, name, max_len, scratch)
        with _recbole_quietly():
            dataset = recbole.data.create_dataset(config)
            train, valid, test = recbole.data.data_preparation(config, dataset)
    return config, dataset, {"train": train.dataset, "valid": valid, "test": test}


def recbole_samples(dataset, split_data: dict) -> dict:
    """{split: [(user token, (input item tokens, oldest first), target token)]} of RecBole's split."""
    users, items = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    out = {}
    for split in SPLITS:
        inter = getattr(split_data[split], "dataset", split_data[split]).inter_feat
        seqs, lengths = inter["item_id_list"].tolist(), inter["item_length"].tolist()
        out[split] = [(users[u], tuple(items[seq[:n]]), items[t]) for u, seq, n, t in
                      zip(inter["user_id"].tolist(), seqs, lengths, inter["item_id"].tolist())]
    return out


def our_samples(dataset: seqdata.SequenceDataset, max_len: int) -> dict:
    """{split: [(user token, (input item tokens, oldest first), target token)]} of bench.data."""
    tokens = np.array(["[PAD]"] + dataset.item_ids, dtype=object)
    out = {}
    for split in SPLITS:
        samples = (seqdata.train_samples(dataset) if split == "train"
                   else seqdata.split_samples(dataset, split))
        item_seq, target = seqdata.padded_inputs(dataset, samples, max_len)
        lengths = samples.end.clamp(max=max_len)  # real slots; the rest is right padding
        out[split] = [(dataset.users[u], tuple(tokens[seq[:n]]), tokens[t]) for u, seq, n, t in
                      zip(samples.user.tolist(), item_seq.tolist(), lengths.tolist(), target.tolist())]
    return out


def recbole_event_order(inter_path, config) -> seqdata.SequenceDataset:
    """Our dataset (bench.train.data.from_sequences) with each user's events in RecBole's order.

    RecBole sorts (stably: SequentialDataset.data_augmentation, Interaction.sort) by the timestamp it
    keeps: a float32 tensor (Dataset._dataframe_to_interaction), after min-max normalisation in
    float64 when `normalize_all` is set (its ml-100k.yaml sets it; Dataset._normalize). float32
    merges close timestamps, which then keep file order; bench.data sorts by the exact ones.
    """
    with open(inter_path, encoding="utf-8") as handle:
        rows = [line.rstrip("\r\n").split("\t") for line in handle if line.strip()]
    header = [column.split(":", 1)[0] for column in rows[0]]
    user, item, time = (header.index(name) for name in ("user_id", "item_id", "timestamp"))
    stamps = np.array([float(row[time]) for row in rows[1:]])
    if config["normalize_all"] and stamps.max() > stamps.min():
        stamps = (stamps - stamps.min()) / (stamps.max() - stamps.min())
    per_user: dict = {}
    for row, key in zip(rows[1:], stamps.astype(np.float32)):
        per_user.setdefault(row[user], []).append((key, row[item]))
    per_user = {u: [i for _, i in sorted(events, key=lambda event: event[0])]
                for u, events in per_user.items()}
    return seqdata.from_sequences(per_user, name=Path(inter_path).stem, source=str(inter_path),
                                  fmt="inter")


def reordered_users(a: seqdata.SequenceDataset, b: seqdata.SequenceDataset) -> list:
    """Users (tokens) whose item sequences differ between two loadings of the same file."""
    if a.item_ids != b.item_ids:
        raise ValueError("catalogues differ")
    b_index = {user: index for index, user in enumerate(b.users)}
    return [user for index, user in enumerate(a.users) if a.sequence(index) != b.sequence(b_index[user])]


def compare_samples(ours: dict, theirs: dict) -> dict:
    """{split: {"ours": count, "recbole": count, "mismatches": samples of either side lacking an
    identical one on the other (multisets; 0 = the same samples)}}."""
    out = {}
    for split in SPLITS:
        a, b = Counter(ours[split]), Counter(theirs[split])
        out[split] = {"ours": len(ours[split]), "recbole": len(theirs[split]),
                      "mismatches": sum((a - b).values()) + sum((b - a).values())}
    return out


def item_column_map(dataset, ours: seqdata.SequenceDataset) -> torch.Tensor:
    """[RecBole's n_items] -> our dense id of each RecBole internal item id (0 -> 0, padding)."""
    dense = {token: index for index, token in enumerate(ours.item_ids, 1)}
    tokens = dataset.field2id_token["item_id"]
    missing = [token for token in tokens[1:] if token not in dense]
    if missing or len(tokens) != ours.n_items:
        raise ValueError(f"catalogues differ: RecBole {len(tokens) - 1} items, ours {ours.n_items - 1}")
    return torch.tensor([0] + [dense[token] for token in tokens[1:]])


def recbole_evaluate(config, batches) -> dict:
    """RecBole's full-sort evaluation of (scores [B, N] over RecBole item ids, positive_u [B],
    positive_i [B]) batches -> {"hr@5": ..., "ndcg@10": ...} (Trainer._full_sort_batch_eval,
    Collector.eval_batch_collect, Evaluator.evaluate)."""
    recbole = import_recbole()
    collector, evaluator = recbole.evaluator.Collector(config), recbole.evaluator.Evaluator(config)
    for scores, positive_u, positive_i in batches:
        scores = scores.clone()
        scores[:, 0] = -np.inf  # Trainer._full_sort_batch_eval; no history mask for sequential models
        collector.eval_batch_collect(scores, None, positive_u, positive_i)
    result = evaluator.evaluate(collector.get_data_struct())
    return {f"{_RECBOLE_NAMES[key.split('@')[0]]}@{key.split('@')[1]}": float(value)
            for key, value in result.items()}


def recbole_metrics(config, dataset, loader, ours: seqdata.SequenceDataset, scores: torch.Tensor) -> dict:
    """RecBole's HR/NDCG/MRR@5/10 over its eval loader for our score matrix [n_users, n_items]."""
    row = {user: index for index, user in enumerate(ours.users)}
    user_rows = torch.tensor([row[token] for token in dataset.field2id_token["user_id"][1:]])
    user_rows = torch.cat([torch.tensor([-1]), user_rows])  # RecBole user 0 is padding
    columns = item_column_map(dataset, ours)
    batches = ((scores[user_rows[interaction["user_id"]]][:, columns], positive_u, positive_i)
               for interaction, _history, positive_u, positive_i in loader)
    return recbole_evaluate(config, batches)


def our_metrics(ours: seqdata.SequenceDataset, split: str, scores: torch.Tensor) -> dict:
    """bench.metrics on our split for the score matrix [n_users, n_items] (rows = our users)."""
    samples = seqdata.split_samples(ours, split)
    _, target = seqdata.padded_inputs(ours, samples, 1)
    return ourmetrics.ranking_metrics(ourmetrics.target_ranks(scores[samples.user], target))


def tie_example(n_items: int = 12) -> dict:
    """Both rules on a small score matrix with ties at the target ([4, n_items], item 0 padding):
    row 0 no tie (target 3rd), row 1 target tied with 3 others at the top, row 2 all items equal
    (a constant scorer), row 3 target tied with 9 others at the top.
    Returns scores, target, our 0-based ranks, RecBole's (position in torch.topk's top-10 output,
    -1 = not in it) and both metric dicts."""
    scores = torch.zeros(4, n_items, dtype=torch.float64)
    scores[0, 1:] = torch.arange(n_items - 1, 0, -1, dtype=torch.float64)  # item 1 best; target 3 -> rank 2
    scores[1, [2, 5, 7, 9]] = 1.0
    scores[3, 1:11] = 1.0
    target = torch.tensor([3, 7, 5, 10])
    with tempfile.TemporaryDirectory(prefix="recbole-") as scratch:
        config = recbole_config(scratch, "ties", max(ourmetrics.KS), scratch)
    theirs = recbole_evaluate(config, [(scores, torch.arange(4), target)])
    masked = scores.clone()
    masked[:, 0] = -np.inf
    top = torch.topk(masked, max(ourmetrics.KS), dim=-1).indices
    hits = top == target[:, None]
    recbole_rank = torch.where(hits.any(1), hits.int().argmax(1), -1)
    ranks = ourmetrics.target_ranks(scores, target)
    return {"scores": scores, "target": target, "our_rank": ranks, "recbole_rank": recbole_rank,
            "ours": ourmetrics.ranking_metrics(ranks), "recbole": theirs}


def parser():
    p = cli.parser("bench.adapters.recbole_protocol", __doc__)
    p.add_argument("--data", required=True, help="a RecBole atomic file DATA_PATH/NAME/NAME.inter")
    p.add_argument("--max-len", type=cli.positive_int, default=50, help="MAX_ITEM_LIST_LENGTH (default 50)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0, help="seed of the random score matrix")
    return p


def main(argv: list[str] | None = None) -> int:
    prog = "bench.adapters.recbole_protocol"
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
        exact = seqdata.load_dataset(args.data, "inter")
        seqdata.check_trainable(exact)  # RecBole's evaluator fails on a split without training samples
        config, dataset, split_data = recbole_split(args.data, args.max_len)
    except (cli.UsageError, seqdata.DataError, ValueError) as err:
        return cli.report_usage_error(prog, err)
    ordered = recbole_event_order(args.data, config)
    n_users, n_items = dataset.user_num - 1, dataset.item_num - 1
    print(f"{exact.name}, max_len {args.max_len}: users ours {exact.n_users} recbole {n_users}, "
          f"items ours {exact.n_items - 1} recbole {n_items}")
    equal = (exact.n_users, exact.n_items - 1) == (n_users, n_items)
    theirs = recbole_samples(dataset, split_data)
    generator = torch.Generator().manual_seed(args.seed)
    scores = torch.rand(exact.n_users, exact.n_items, generator=generator, dtype=torch.float64)
    for label, ours in (("bench.data (exact timestamps)", exact),
                        ("bench.data on RecBole's event order (its float32 timestamps)", ordered)):
        print(f"{label}:")
        same_split = True
        for split, row in compare_samples(our_samples(ours, args.max_len), theirs).items():
            print(f"  {split:5} samples ours {row['ours']} recbole {row['recbole']}, "
                  f"mismatches {row['mismatches']}")
            same_split &= row["ours"] == row["recbole"] and row["mismatches"] == 0
        print(f"  metrics on one random score matrix (seed {args.seed}), ours (|ours - recbole|):")
        worst = 0.0
        for split in ("valid", "test"):
            a = our_metrics(ours, split, scores)
            b = recbole_metrics(config, dataset, split_data[split], ours, scores)
            diff = {key: abs(a[key] - b[key]) for key in ourmetrics.METRICS}
            worst = max(worst, *diff.values())
            print(f"  {split:5} " + "  ".join(f"{key} {a[key]:.4f} ({diff[key]:.0e})"
                                              for key in ourmetrics.METRICS))
        if ours is exact:
            equal &= same_split and worst < TOLERANCE
    print(f"users whose event order differs between exact and RecBole's timestamps: "
          f"{len(reordered_users(exact, ordered))} of {exact.n_users}")
    print("equal" if equal else "DIFFERENT (bench.data's split or metrics differ from RecBole's)")
    return 0 if equal else 1


if __name__ == "__main__":
    cli.run(main)
