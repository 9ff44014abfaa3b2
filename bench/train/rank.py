"""Numerical rank of the last layer's feature matrix of trained checkpoints (RecGRELA Fig. 9).

Examples:
  python -m bench.rank --checkpoints reports/_scratch/train/ml-1m-linrec/checkpoint.pt \\
      reports/_scratch/train/ml-1m-recgrela-local_shortcut-false/checkpoint.pt \\
      reports/_scratch/train/ml-1m-recgrela/checkpoint.pt --data ../shared/data/ml-1m/ml-1m.txt
  python -m bench.rank --checkpoints A/checkpoint.pt B/checkpoint.pt --data DATA --users 0 --out reports/x
  python -m bench.rank --checkpoints A/checkpoint.pt --data DATA --rtol 1e-3   # a coarser, "effective" rank

Feature matrix: H = model(item_seq)[b] ([L, d], the last layer's hidden states, eval mode) where
item_seq is user b's TEST input (items s_0 .. s_{n-2}, the last L kept, right padded): what the
model reads when it ranks the test item. Two views:
- per_user: the real slots only, H[:n_real] with n_real = min(n - 1, L) rows; max_rank =
  min(n_real, d). One row per evaluation user: a fixed random subset (--users, --seed) of the
  data's users, the same for every checkpoint.
- single_sequence: the paper's picture, all L rows of ONE sequence: the first evaluation user (in
  data order) whose test input fills all L slots, so no row is padding (if no user has that many
  items, the longest one, padding rows included). Its matrix is stored in the CSV (`features`)
  and drawn as the heatmap.
Rank: singular values s_1 >= s_2 >= ... of H (an SVD in float64 of the float32 features); rank =
#{s_i > tol} with tol = s_1 * max(rows, d) * eps_float32 (eps = 1.19e-7), the default of
torch.linalg.matrix_rank and numpy.linalg.matrix_rank for a float32 matrix. `--rtol R` sets
tol = s_1 * R instead. Every row records its absolute tolerance and all singular values.

Refused before any feature is computed (one line, exit 2, nothing written): a checkpoint that is
missing, a folder, named twice, empty, truncated, a file of pickled objects (never unpickled), not
written by bench.train or whose weights do not fit its model; data the loader refuses; data with
another catalogue than a checkpoint was trained on (another item count, or for checkpoints that
record it, other item ids); an --out that is a file, under a file or unwritable; --device cuda
without CUDA.

Outputs in OUT (default reports/_scratch/rank): ranks.csv (one row per checkpoint and user,
per_user rows then the single_sequence row), rank_summary.csv (mean, median, min, max per
checkpoint and view) and rank_fig9.png (one heatmap panel per checkpoint, side by side, drawn from
ranks.csv alone by `plot_rank_figure`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from bench import cli
from bench.cli import UsageError, non_negative_int, positive_int, relative_tolerance
from bench.results import csv_text, read_csv, write_text_atomic
from bench.train import data as seqdata
from bench.train.train import CheckpointError, load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
RANK_COLUMNS = ["model", "model_spec", "checkpoint", "view", "user", "n_real", "rank", "max_rank", "tolerance",
                "sigma_max", "rows", "d_model", "max_len", "dataset", "epoch", "singular_values", "features"]
SUMMARY_COLUMNS = ["model", "model_spec", "checkpoint", "view", "users", "rank_mean", "rank_median", "rank_min",
                   "rank_p10", "rank_p90", "rank_max", "max_rank_mean", "full_rank_share", "tolerance_rule",
                   "d_model", "max_len", "dataset", "epoch"]
FLOAT32_EPS = torch.finfo(torch.float32).eps
# display names of the paper's three Fig. 9 panels; any other spec is shown as written
PAPER_NAMES = {"linrec": "LinRec", "recgrela:local_shortcut=false": "GRELA w/o Local Shortcut", "recgrela": "GRELA"}


def numerical_rank(matrix: torch.Tensor, rtol: float | None = None) -> tuple[int, float, torch.Tensor]:
    """(rank, absolute tolerance, singular values) of one [rows, d] matrix; see the module docstring."""
    singular = torch.linalg.svdvals(matrix.detach().double())
    rows, d = matrix.shape
    relative = rtol if rtol is not None else max(rows, d) * FLOAT32_EPS
    tol = float(singular[0]) * relative if singular.numel() else 0.0
    return int((singular > tol).sum()), tol, singular


def feature_ranks(hidden: torch.Tensor, n_real: torch.Tensor, rtol: float | None = None) -> list[dict]:
    """Per sequence b, the rank of hidden[b, :n_real[b]]: [B, L, d], [B] -> rank, tolerance, spectrum."""
    out = []
    for b in range(hidden.shape[0]):
        rank, tol, singular = numerical_rank(hidden[b, :int(n_real[b])], rtol)
        out.append({"rank": rank, "tolerance": tol, "singular_values": singular,
                    "max_rank": min(int(n_real[b]), hidden.shape[-1])})
    return out


def last_hidden(model, dataset: seqdata.SequenceDataset, users: torch.Tensor, max_len: int,
                batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """model(test input) for `users`: ([U, L, d] float32 on the CPU, n_real [U])."""
    samples = seqdata.split_samples(dataset, "test", users)
    hidden, n_real = [], []
    model.eval()
    with torch.inference_mode():
        for first in range(0, len(samples), batch_size):
            batch = samples.subset(torch.arange(first, min(first + batch_size, len(samples))))
            item_seq, _ = seqdata.padded_inputs(dataset, batch, max_len)
            hidden.append(model(item_seq.to(device)).float().cpu())
            n_real.append((item_seq != 0).sum(1))
    return torch.cat(hidden), torch.cat(n_real)


def _spectrum(singular: torch.Tensor) -> str:
    return " ".join(f"{v:.6g}" for v in singular.tolist())


def check_checkpoint_data(path: Path, header: dict, dataset: seqdata.SequenceDataset) -> None:
    """Refuse (UsageError) data the checkpoint was not trained on: another number of item ids, or
    (for checkpoints that record it) another catalogue of the same size, whose ids would index other
    rows of the item table."""
    n_items = int(header["config"]["n_items"])
    if n_items != dataset.n_items:
        raise UsageError(f"{path} was trained on {n_items} item ids, {dataset.source} has "
                         f"{dataset.n_items}; pass the data it was trained on")
    recorded = header.get("item_fingerprint")
    if recorded is not None and recorded != seqdata.item_fingerprint(dataset.item_ids):
        raise UsageError(f"{path} was trained on other item ids than {dataset.source} holds (same count, "
                         f"{n_items - 1}; catalogue fingerprint {recorded} vs "
                         f"{seqdata.item_fingerprint(dataset.item_ids)}); pass the data it was trained on")


def checkpoint_rows(path: Path, dataset: seqdata.SequenceDataset, users: torch.Tensor, rtol: float | None,
                    batch_size: int, device, log=print, loaded: tuple | None = None) -> list[dict]:
    """ranks.csv rows of one checkpoint: one per_user row per user, then the single_sequence row.
    `loaded` is (model, header) when the caller has read and checked the checkpoint already."""
    if loaded is None:
        loaded = load_checkpoint(path, device)
        check_checkpoint_data(path, loaded[1], dataset)
    model, header = loaded
    config = header["config"]
    L, d = int(config["max_len"]), int(config["d_model"])
    hidden, n_real = last_hidden(model, dataset, users, L, batch_size, device)
    base = {"model": header["model"], "model_spec": header["model_spec"], "checkpoint": str(path),
            "d_model": d, "max_len": L, "dataset": dataset.name, "epoch": header.get("epoch")}
    rows = []
    for b, result in enumerate(feature_ranks(hidden, n_real, rtol)):
        rows.append({**base, "view": "per_user", "user": dataset.users[int(users[b])], "n_real": int(n_real[b]),
                     "rank": result["rank"], "max_rank": result["max_rank"], "tolerance": f"{result['tolerance']:.6g}",
                     "sigma_max": f"{float(result['singular_values'][0]):.6g}", "rows": int(n_real[b]),
                     "singular_values": _spectrum(result["singular_values"])})
    full = (n_real >= L).nonzero()
    pick = int(full[0]) if full.numel() else int(n_real.argmax())  # first full window, else the longest
    rank, tol, singular = numerical_rank(hidden[pick], rtol)  # all L rows
    rows.append({**base, "view": "single_sequence", "user": dataset.users[int(users[pick])],
                 "n_real": int(n_real[pick]), "rank": rank, "max_rank": min(L, d), "tolerance": f"{tol:.6g}",
                 "sigma_max": f"{float(singular[0]):.6g}", "rows": L, "singular_values": _spectrum(singular),
                 "features": " ".join(f"{v:.5g}" for v in hidden[pick].flatten().tolist())})
    per_user = [row["rank"] for row in rows[:-1]]
    log(f"{header['model_spec']} ({path}): single sequence rank {rank}/{min(L, d)} (user {rows[-1]['user']}); "
        f"per user mean {statistics.fmean(per_user):.2f}, median {statistics.median(per_user):g}, "
        f"min {min(per_user)}, max {max(per_user)} over {len(per_user)} users")
    return rows


def summarise(rows: list[dict], tolerance_rule: str) -> list[dict]:
    """rank_summary.csv rows: per (checkpoint, view) the mean, median, min, 10th/90th percentile
    (linear interpolation) and max rank, and the share of users at their maximum rank."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["checkpoint"], row["view"]), []).append(row)
    out = []
    for (checkpoint, view), group in groups.items():
        ranks = [int(row["rank"]) for row in group]
        max_ranks = [int(row["max_rank"]) for row in group]
        first = group[0]
        out.append({"model": first["model"], "model_spec": first["model_spec"], "checkpoint": checkpoint,
                    "view": view, "users": len(group), "rank_mean": round(statistics.fmean(ranks), 3),
                    "rank_median": statistics.median(ranks), "rank_min": min(ranks), "rank_max": max(ranks),
                    **{f"rank_p{q}": round(float(torch.quantile(torch.tensor(ranks, dtype=torch.float64), q / 100)), 2)
                       for q in (10, 90)},
                    "max_rank_mean": round(statistics.fmean(max_ranks), 3),
                    "full_rank_share": round(sum(r == m for r, m in zip(ranks, max_ranks)) / len(group), 4),
                    "tolerance_rule": tolerance_rule, "d_model": first["d_model"], "max_len": first["max_len"],
                    "dataset": first["dataset"], "epoch": first["epoch"]})
    return out


def plot_rank_figure(rank_csv_path, png_path) -> Path:
    """Fig. 9 from ranks.csv alone: per checkpoint, the single-sequence feature matrix (L x d) as a
    heatmap, panels side by side in CSV order, the rank (and the per-user spread) in each title."""
    import matplotlib.pyplot as plt

    from bench.report.plots import save_figure  # imports matplotlib with the Agg backend first

    rows = read_csv(rank_csv_path)
    panels = [row for row in rows if row["view"] == "single_sequence"]
    if not panels:
        raise ValueError(f"{rank_csv_path} has no single_sequence rows to draw")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 6.0), squeeze=False)
    for ax, row in zip(axes[0], panels):
        L, d = int(row["rows"]), int(row["d_model"])
        values = torch.tensor([float(v) for v in row["features"].split()]).view(L, d)
        low, high = torch.quantile(values.flatten(), torch.tensor([0.01, 0.99])).tolist()
        image = ax.imshow(values.numpy(), aspect="auto", cmap="viridis", vmin=low, vmax=high,
                          interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
        per_user = [int(r["rank"]) for r in rows if r["view"] == "per_user" and r["checkpoint"] == row["checkpoint"]]
        spread = (f"\nper user: mean {statistics.fmean(per_user):.1f}, range {min(per_user)}..{max(per_user)} "
                  f"({len(per_user)} users)" if per_user else "")
        name = PAPER_NAMES.get(row["model_spec"], row["model_spec"])
        ax.set_title(f"{name}\nrank {row['rank']} of {row['max_rank']}{spread}", fontsize=10)
        ax.set_xlabel(f"feature (d = {d})")
        ax.set_ylabel(f"sequence slot (L = {L}; user {row['user']}, {row['n_real']} real)")
    fig.suptitle(f"Last-layer feature matrix of one sequence and its numerical rank ({panels[0]['dataset']})",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png_path, dpi=120, bbox_inches=None)


# --- command line --------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = cli.parser("bench.rank", __doc__)
    p.add_argument("--checkpoints", nargs="+", required=True, help="checkpoint.pt files written by bench.train")
    p.add_argument("--data", required=True, help="the data file the checkpoints were trained on")
    p.add_argument("--format", choices=seqdata.FORMATS, default="auto")
    p.add_argument("--users", type=non_negative_int, default=1000,
                   help="evaluation users, a fixed random subset; 0 = every user (default %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the user subset (default %(default)s)")
    p.add_argument("--rtol", type=relative_tolerance,
                   help="relative tolerance (tol = sigma_max x RTOL); default sigma_max x max(rows, d) x eps_fp32")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default %(default)s)")
    p.add_argument("--out", help="output folder (default reports/_scratch/rank); its ranks.csv, rank_summary.csv, "
                   "rank_command.json and rank_fig9.png are replaced atomically")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.rank`: the flags, --out (`cli.output_dir`), every checkpoint (readable,
    weights only, a bench.train header, weights that fit) and the data (the loader's checks, and the
    catalogue each checkpoint was trained on) are checked before any feature is computed; bad input
    is one line, exit 2, nothing written."""
    from bench.measure.device import resolve_device

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
        try:
            device = resolve_device(args.device, ("cpu", "cuda"))
        except ValueError as err:
            raise UsageError(f"--device {args.device}: {str(err).rstrip('.')}") from None
        out = cli.output_dir(Path(args.out) if args.out is not None else REPO_ROOT / "reports" / "_scratch" / "rank",
                             "--out")
        seen: dict = {}
        for path in args.checkpoints:
            key = Path(path).resolve() if path else Path(path)
            if key in seen:
                raise UsageError(f"--checkpoints names {Path(path).name} twice ({seen[key]} and {path}); each "
                                 f"checkpoint is one panel and one set of rows")
            seen[key] = path
        for path in args.checkpoints:
            if not path or not Path(path).exists():
                raise UsageError(f"--checkpoints {path!r}: no such file" if not path else f"--checkpoints {path}: no such file")
            if Path(path).is_dir():
                raise UsageError(f"--checkpoints {path} is a folder; pass the checkpoint.pt inside it")
        dataset = seqdata.load_dataset(args.data, args.format)
        loaded = []
        for path in args.checkpoints:
            model, header = load_checkpoint(path, device)
            check_checkpoint_data(Path(path), header, dataset)
            loaded.append((model, header))
        users = seqdata.choose_users(dataset, args.users, args.seed)
        rows = []
        for path, pair in zip(args.checkpoints, loaded):
            rows += checkpoint_rows(Path(path), dataset, users, args.rtol, args.batch_size, device,
                                    log=lambda line: print(line, flush=True), loaded=pair)
    except (UsageError, seqdata.DataError, CheckpointError) as err:
        return cli.report_usage_error("bench.rank", err)
    except KeyboardInterrupt:
        print("bench.rank: interrupted; nothing written", file=sys.stderr)
        return 130
    rule = (f"sigma_max x {args.rtol:g}" if args.rtol is not None
            else f"sigma_max x max(rows, d) x eps_fp32 ({FLOAT32_EPS:.3g})")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "ranks.csv", csv_text(RANK_COLUMNS, rows))
    write_text_atomic(out / "rank_summary.csv", csv_text(SUMMARY_COLUMNS, summarise(rows, rule)))
    write_text_atomic(out / "rank_command.json", json.dumps({"argv": argv, "users": len(users), "seed": args.seed,
                                                        "tolerance_rule": rule}, indent=2) + "\n")
    png = plot_rank_figure(out / "ranks.csv", out / "rank_fig9.png")
    for path in (out / "ranks.csv", out / "rank_summary.csv", png):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
