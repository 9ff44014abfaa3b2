"""Train one model with the RecBole protocol; evaluate it by full ranking; keep the best checkpoint.

Examples:
  python -m bench.train --model recgrela --data ../shared/data/ml-1m/ml-1m.txt
  python -m bench.train --model recgrela:local_shortcut=false --data ../shared/data/ml-1m/ml-1m.txt --out reports/_scratch/grela-nols
  python -m bench.train --model linrec --data ../shared/data/ml-1m/ml-1m.txt --d-model 64 --layers 4 --heads 4
  python -m bench.train --model sasrec --data ../shared/data/ml-100k/ml-100k.inter --max-len 50 --epochs 20 --device cuda
  # a CPU budget: 4 sampled prefixes per user per epoch, at most 8 epochs or 12 minutes, 1 thread
  python -m bench.train --model recgrela --data ../shared/data/ml-1m/ml-1m.txt --prefixes-per-user 4 \\
      --epochs 8 --max-minutes 12 --valid-users 1000 --batch-size 128 --threads 1

Protocol (RecGRELA's, from RecBole): leave-one-out split (last item test, second-to-last
validation); every prefix of the training part is a sample (the last --max-len items, right
padded, the last real slot scored); softmax cross-entropy over all item ids; Adam (lr 1e-3);
full-ranking evaluation without removing seen items (padding id excluded; ties count against the
target, see bench/train/metrics.py); HR, NDCG and MRR at 5 and 10. After every epoch the validation
NDCG@10 is measured; the best epoch's weights are kept in OUT/checkpoint.pt and training stops
after --patience epochs without a strict improvement. The test row evaluates that checkpoint
on every user.

Budget (for a CPU; all recorded in every row): --prefixes-per-user K trains on K prefixes per
user per epoch, drawn afresh each epoch (0 = every prefix, the paper's protocol); --epochs caps
the epochs; --max-minutes stops training between steps once that much wall time has passed (the
cut epoch is validated and recorded with its sample count; the run's first step is always taken,
so every run ends with a checkpoint and a test row); --valid-users U validates on a fixed random
subset of U users (0 = all; the test always uses every user).

Refused before anything is written (one line, exit 2): bad flags, a --device without CUDA, an
--out that is a file, under a file, unwritable or holding a finished run, a data file the loader
refuses (bench/train/data.py lists what), data without a training prefix (every user has exactly 3
items) or with fewer than 11 distinct items (every metric at 10 would be 1.0), and an item table
(16 bytes x items x d_model to train) larger than the machine's memory.

Outputs in OUT (default reports/_scratch/train/<dataset>-<model spec>, which git ignores):
config.json (written first), metrics.csv (one row per epoch, split=valid, then one split=test
row), checkpoint.pt (the best epoch: a state dict and a JSON-able header, read back with
torch.load(weights_only=True)) and test_metrics.json. Every file is replaced atomically, so
Ctrl-C keeps every completed epoch. Checkpoints trained on MovieLens derive from data that may
not be redistributed: never commit them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout

import models
from bench import cli
from bench.cli import UsageError, clock, non_negative_float, non_negative_int, positive_float, positive_int
from bench.grid import ModelSpec, parse_model_spec
from bench.results import append_csv_row, read_csv, write_text_atomic
from bench.train import data as seqdata
from bench.train.metrics import METRICS, ranking_metrics, target_ranks

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_FORMAT = "seqrec-bench-checkpoint/1"
METRIC_COLUMNS = [
    # what and when
    "model", "model_spec", "variant", "epoch", "split",
    # the split's own CE over all ids (valid or test targets) and the epoch's mean training loss
    "loss", "train_loss", *METRICS,
    # wall time in seconds: this epoch (train + validation) or the test evaluation; since start
    "seconds", "train_seconds", "eval_seconds", "elapsed_seconds",
    "train_samples", "train_steps", "eval_users", "best_epoch", "stop_reason",
    # budget
    "max_epochs", "prefixes_per_user", "valid_users", "max_minutes", "batch_size", "lr", "patience",
    # model and data
    "seed", "max_len", "d_model", "n_layers", "n_heads", "n_items", "params_total",
    "dataset", "dataset_users", "dataset_interactions",
    # environment
    "device", "device_name", "threads", "torch_version", "python_version", "git_commit",
    "timestamp_utc", "config_json",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back; the message is one line naming the file."""


# --- small shared pieces (also used by bench.rank) -------------------------------------------------

def safe_name(text: str) -> str:
    """A folder-friendly form of a model spec: recgrela:local_shortcut=false -> recgrela-local_shortcut-false."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def environment(device: torch.device) -> dict:
    from bench import results
    from bench.measure.device import device_name

    return {"device": str(device), "device_name": device_name(str(device), device.type == "cuda"), "threads": torch.get_num_threads(),
            "torch_version": str(torch.__version__), "python_version": platform.python_version(),
            "git_commit": results.git_commit()}


# --- model, checkpoint --------------------------------------------------------------------------

def build_model(spec: ModelSpec, n_items: int, max_len: int, d_model: int | None = None,
                n_layers: int | None = None, n_heads: int | None = None) -> models.SequentialRecommender:
    """The spec's model at this catalogue and length; unset sizes keep the model's official defaults."""
    sizes = {k: v for k, v in (("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads)) if v}
    return models.build(spec.name, n_items=n_items, max_len=max_len, **sizes, **dict(spec.overrides))


def save_checkpoint(path: Path, model: models.SequentialRecommender, header: dict) -> None:
    """{'header': JSON-able dict, 'state_dict': tensors}, saved atomically (a temporary sibling, then
    a rename; an interrupted save leaves the old checkpoint and no temporary); weights_only-loadable."""
    from bench.results import atomic_output

    header = json.loads(json.dumps(header))  # plain JSON types only (a str subclass would not load)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    with atomic_output(path, "wb") as handle:
        torch.save({"header": header, "state_dict": state}, handle)


def _load_error(path: Path, err: BaseException) -> CheckpointError:
    """One line for what torch.load(weights_only=True) refused, without torch's advice to unpickle."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    if "Weights only load failed" in text or "weights_only" in text:
        return CheckpointError(f"{path}: not a readable checkpoint: it holds pickled Python objects (a whole model, "
                               f"numpy arrays, ...), which are never unpickled here (that can run code); pass a "
                               f"checkpoint.pt written by bench.train")
    if "zip archive" in text or "central directory" in text or isinstance(err, OSError):
        return CheckpointError(f"{path}: not a readable checkpoint: a truncated or corrupt torch file "
                               f"({text.splitlines()[0][:120] if text else type(err).__name__})")
    first = text.splitlines()[0] if text else type(err).__name__
    return CheckpointError(f"{path}: not a readable checkpoint ({first[:160]})")


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[models.SequentialRecommender, dict]:
    """Rebuild the model from the header and load its weights (torch.load with weights_only=True).
    Raises CheckpointError (one line naming the file) for a missing file, a folder, an empty,
    truncated or non-torch file, a file of pickled objects (never unpickled), a file without a
    bench.train header, and weights that do not fit the model the header names."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the checkpoint.pt inside it")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: not a readable checkpoint: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # torch warns on stderr about a plain pickle's protocol
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise _load_error(path, err) from None
    header = blob.get("header") if isinstance(blob, dict) else None
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT or "state_dict" not in blob:
        raise CheckpointError(f"{path}: not a bench.train checkpoint (no {CHECKPOINT_FORMAT!r} header)")
    try:
        model = models.build(header["model"], **header["config"])
        model.load_state_dict(blob["state_dict"], strict=True)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: does not fit model {header.get('model')!r} ({first[:160]})") from None
    return model.to(device).eval(), header


# --- evaluation and one epoch ---------------------------------------------------------------------

def evaluate(model: models.SequentialRecommender, dataset: seqdata.SequenceDataset, samples: seqdata.Samples,
             max_len: int, batch_size: int, device: torch.device) -> dict:
    """Full-ranking metrics and mean CE of `samples` (eval mode, inference mode, batched scores)."""
    model.eval()
    ranks, loss_sum = [], 0.0
    with torch.inference_mode():
        for first in range(0, len(samples), batch_size):
            batch = samples.subset(torch.arange(first, min(first + batch_size, len(samples))))
            item_seq, target = (t.to(device) for t in seqdata.padded_inputs(dataset, batch, max_len))
            scores = model.full_scores(item_seq)  # [B, N]
            loss_sum += float(F.cross_entropy(scores, target, reduction="sum"))
            ranks.append(target_ranks(scores, target).cpu())
    metrics = ranking_metrics(torch.cat(ranks))
    metrics["loss"] = loss_sum / max(len(samples), 1)
    return metrics


def train_epoch(model, optimizer, dataset, samples: seqdata.Samples, max_len: int, batch_size: int,
                device: torch.device, generator: torch.Generator, deadline: float | None = None,
                log=print, label: str = "", log_every_s: float = 30.0, first_step_always: bool = False) -> dict:
    """One pass over `samples` in a seeded random order; stops between steps at `deadline` (with
    `first_step_always`, the epoch's first step is taken even past it)."""
    model.train()
    order = torch.randperm(len(samples), generator=generator)
    n_steps = math.ceil(len(samples) / batch_size)
    start = last_log = time.monotonic()
    loss_sum, seen, steps, cut = 0.0, 0, 0, False
    for step in range(n_steps):
        if deadline is not None and time.monotonic() >= deadline and not (step == 0 and first_step_always):
            cut = True
            break
        batch = samples.subset(order[step * batch_size:(step + 1) * batch_size])
        item_seq, target = (t.to(device) for t in seqdata.padded_inputs(dataset, batch, max_len))
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(item_seq, target)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(batch)
        seen += len(batch)
        steps += 1
        now = time.monotonic()
        if now - last_log >= log_every_s:
            last_log = now
            log(f"  {label}step {steps}/{n_steps}: loss {loss_sum / seen:.4f}, "
                f"{seen / (now - start):.1f} samples/s")
    return {"train_loss": loss_sum / seen if seen else float("nan"), "train_samples": seen,
            "train_steps": steps, "cut": cut, "train_seconds": time.monotonic() - start}


# --- the whole run -------------------------------------------------------------------------------

@dataclass
class TrainSettings:
    spec: ModelSpec
    max_len: int = 200
    d_model: int | None = None  # None: the model's official default
    n_layers: int | None = None
    n_heads: int | None = None
    epochs: int = 300
    batch_size: int = 2048
    eval_batch_size: int = 256
    lr: float = 1e-3
    patience: int = 10
    prefixes_per_user: int = 0  # 0: every prefix (the paper's protocol)
    valid_users: int = 0  # 0: every user
    max_minutes: float = 0.0  # 0: no time cap
    seed: int = 2020  # RecBole's default seed
    device: str = "cpu"

    def budget(self) -> dict:
        return {"max_epochs": self.epochs, "prefixes_per_user": self.prefixes_per_user,
                "valid_users": self.valid_users, "max_minutes": self.max_minutes,
                "batch_size": self.batch_size, "lr": self.lr, "patience": self.patience}


def _fmt(metrics: dict) -> str:
    return " ".join(f"{name} {metrics[name]:.4f}" for name in ("hr@10", "ndcg@10", "mrr@10"))


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of the device (physical RAM for the CPU); None when it cannot be read."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def check_fits_memory(settings: TrainSettings, n_items: int) -> None:
    """Refuse (UsageError) sizes whose item table alone cannot be trained on the device: training
    holds 16 bytes per value (fp32 weights, gradients and Adam's two moments), and every model has an
    n_items x d_model item table, so 16 * n_items * d_model bytes is a lower bound of any model's need.
    A typo such as --d-model 6400000 is refused here, not by the kernel's OOM killer mid-run."""
    config = models.make_config(settings.spec.name, n_items=n_items, max_len=settings.max_len,
                                **{k: v for k, v in (("d_model", settings.d_model), ("n_layers", settings.n_layers),
                                                     ("n_heads", settings.n_heads)) if v},
                                **dict(settings.spec.overrides))
    need = 16 * n_items * config.d_model
    total = device_memory_bytes(torch.device(settings.device))
    if total is not None and need > total:
        raise UsageError(f"--d-model {config.d_model} with {n_items - 1} items: the item table alone needs "
                         f"{need / 2**30:,.1f} GiB to train (weights, gradients, Adam state), more than this machine's "
                         f"{total / 2**30:,.1f} GiB on {settings.device}; lower --d-model")


def check_one_step(model, label: str, n_items: int, max_len: int, device: torch.device) -> None:
    """One loss and backward on a batch of two short sequences, before anything is written: a model
    that cannot train (a plugin whose forward breaks the contract or raises) is refused with one
    line (UsageError) and leaves no half-written --out. The random state is restored and the
    gradients cleared, so the run that follows is the one it would have been."""
    item_seq = torch.zeros(2, max_len, dtype=torch.long, device=device)
    item_seq[0, :min(2, max_len)] = torch.arange(1, min(2, max_len) + 1) % (n_items - 1) + 1
    item_seq[1, 0] = 1
    target = torch.ones(2, dtype=torch.long, device=device)
    was_training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            model.train()
            model.loss(item_seq, target).backward()
        except Exception as err:
            if cli.is_out_of_memory(err):
                raise
            raise UsageError(f"{label} cannot take a training step: {type(err).__name__}: {cli.one_line(err)}") from None
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)


def train(settings: TrainSettings, dataset: seqdata.SequenceDataset, out: Path, log=print,
          log_every_s: float = 30.0, command_line: str | None = None) -> dict:
    """Train, validate each epoch, keep the best checkpoint, then test it. Returns the test row.

    Before anything is written in `out`: the data is checked (`seqdata.check_trainable`: raises
    DataError) and the model built (an allocation failure raises UsageError). Then `command_line`,
    when given, is appended to OUT/command.txt and config.json written. At least one training step
    is taken whatever --max-minutes says, so a run always ends with a checkpoint and a test row."""
    out = Path(out)
    seqdata.check_trainable(dataset)
    device = torch.device(settings.device)
    spec = settings.spec
    torch.manual_seed(settings.seed)
    try:
        model = build_model(spec, dataset.n_items, settings.max_len, settings.d_model, settings.n_layers,
                            settings.n_heads).to(device)
    except (RuntimeError, MemoryError) as err:
        if not cli.is_out_of_memory(err):
            raise
        raise UsageError(f"{spec.label} at {dataset.n_items - 1} items, --max-len {settings.max_len} and these "
                         f"sizes does not fit in memory on {device}; lower --d-model, --layers or --max-len") from None
    check_one_step(model, spec.label, dataset.n_items, settings.max_len, device)
    config = dataclasses.asdict(model.config)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    env = environment(device)
    params_total, _ = model.num_params()
    stats = dataset.stats()
    run_config = {"model": spec.name, "model_spec": spec.label, "variant": spec.variant,
                  "model_config": config, "params_total": params_total, "budget": settings.budget(),
                  "seed": settings.seed, "eval_batch_size": settings.eval_batch_size, "data": stats,
                  "environment": env, "started_utc": _utc_now()}
    out.mkdir(parents=True, exist_ok=True)
    if command_line is not None:
        with open(out / "command.txt", "a") as handle:  # one short line: a single write
            handle.write(f"{_utc_now()}  {command_line}\n")
    write_text_atomic(out / "config.json", json.dumps(run_config, indent=2) + "\n")
    base = {"model": spec.name, "model_spec": spec.label, "variant": spec.variant, **settings.budget(),
            "seed": settings.seed, "max_len": settings.max_len, "d_model": config["d_model"],
            "n_layers": config["n_layers"], "n_heads": config["n_heads"], "n_items": dataset.n_items,
            "params_total": params_total, "dataset": dataset.name, "dataset_users": dataset.n_users,
            "dataset_interactions": int(dataset.items.numel()), **env,
            "config_json": json.dumps(config, sort_keys=True)}

    all_train = seqdata.train_samples(dataset)
    valid = seqdata.split_samples(dataset, "valid", seqdata.choose_users(dataset, settings.valid_users, settings.seed))
    generator = torch.Generator().manual_seed(settings.seed)
    start = time.monotonic()
    deadline = start + settings.max_minutes * 60 if settings.max_minutes > 0 else None
    log(f"{spec.label}: {params_total:,} parameters, d={config['d_model']} layers={config['n_layers']} "
        f"heads={config['n_heads']} L={settings.max_len}; {dataset.name}: {dataset.n_users} users, "
        f"{dataset.n_items - 1} items, {len(all_train):,} training prefixes; device {device}, "
        f"{torch.get_num_threads()} thread(s) -> {out}")
    fingerprint = seqdata.item_fingerprint(dataset.item_ids)  # bench.rank checks its data against it
    best_score, best_epoch, best_valid, stale, total_samples, stop_reason = -math.inf, None, None, 0, 0, "max_epochs"
    for epoch in range(1, settings.epochs + 1):
        epoch_start = time.monotonic()
        samples = seqdata.sample_prefixes(all_train, settings.prefixes_per_user, generator)
        trained = train_epoch(model, optimizer, dataset, samples, settings.max_len, settings.batch_size,
                              device, generator, deadline, log, f"epoch {epoch} ", log_every_s,
                              first_step_always=best_epoch is None)
        if trained["train_samples"] == 0:  # the time cap fell before this epoch's first step
            stop_reason = "max_minutes"
            break
        eval_start = time.monotonic()
        metrics = evaluate(model, dataset, valid, settings.max_len, settings.eval_batch_size, device)
        eval_seconds = time.monotonic() - eval_start
        total_samples += trained["train_samples"]
        score = metrics["ndcg@10"] if not math.isnan(metrics["ndcg@10"]) else -math.inf
        if best_epoch is None or score > best_score:
            best_score, best_epoch, best_valid, stale = score, epoch, metrics, 0
            header = {"format": CHECKPOINT_FORMAT, "model": spec.name, "model_spec": spec.label,
                      "variant": spec.variant, "config": config, "epoch": epoch,
                      "valid": {k: metrics[k] for k in (*METRICS, "loss")}, "dataset": dataset.name,
                      "dataset_source": dataset.source, "n_items": dataset.n_items,
                      "item_fingerprint": fingerprint, "seed": settings.seed,
                      "budget": settings.budget(), "torch_version": torch.__version__,
                      "git_commit": env["git_commit"], "saved_utc": _utc_now()}
            save_checkpoint(out / "checkpoint.pt", model, header)
        else:
            stale += 1
        now = time.monotonic()
        append_csv_row(out / "metrics.csv", METRIC_COLUMNS, {
            **base, "epoch": epoch, "split": "valid", **{k: metrics[k] for k in (*METRICS, "loss")},
            "train_loss": trained["train_loss"], "seconds": round(now - epoch_start, 3),
            "train_seconds": round(trained["train_seconds"], 3), "eval_seconds": round(eval_seconds, 3),
            "elapsed_seconds": round(now - start, 3), "train_samples": trained["train_samples"],
            "train_steps": trained["train_steps"], "eval_users": len(valid), "best_epoch": best_epoch,
            "timestamp_utc": _utc_now()})
        log(f"epoch {epoch}/{settings.epochs}: train loss {trained['train_loss']:.4f} "
            f"({trained['train_samples']:,} samples, {trained['train_seconds']:.0f} s); valid {_fmt(metrics)} "
            f"({eval_seconds:.0f} s); best epoch {best_epoch} [elapsed {clock(now - start)}]")
        if trained["cut"] or (deadline is not None and now >= deadline):
            stop_reason = "max_minutes"
            break
        if stale >= settings.patience:
            stop_reason = "patience"
            break
    if best_epoch is None:  # cannot happen: check_trainable found a sample and the first step is always taken
        raise RuntimeError(f"no epoch was validated ({len(all_train)} training samples)")

    log(f"stopped ({stop_reason}); testing the best epoch ({best_epoch}) on all {dataset.n_users} users")
    best_model, header = load_checkpoint(out / "checkpoint.pt", device)
    test_start = time.monotonic()
    test = evaluate(best_model, dataset, seqdata.split_samples(dataset, "test"), settings.max_len,
                    settings.eval_batch_size, device)
    now = time.monotonic()
    row = {**base, "epoch": best_epoch, "split": "test", **{k: test[k] for k in (*METRICS, "loss")},
           "seconds": round(now - test_start, 3), "eval_seconds": round(now - test_start, 3),
           "elapsed_seconds": round(now - start, 3), "train_samples": total_samples,
           "eval_users": dataset.n_users, "best_epoch": best_epoch, "stop_reason": stop_reason,
           "timestamp_utc": _utc_now()}
    append_csv_row(out / "metrics.csv", METRIC_COLUMNS, row)
    write_text_atomic(out / "test_metrics.json", json.dumps(
        {"model_spec": spec.label, "best_epoch": best_epoch, "stop_reason": stop_reason,
         "valid": {k: _json_number(best_valid[k]) for k in METRICS},
         "test": {k: _json_number(test[k]) for k in (*METRICS, "loss")},
         "train_samples": total_samples, "elapsed_seconds": round(now - start, 1),
         "budget": settings.budget(), "seed": settings.seed}, indent=2) + "\n")
    log(f"test (epoch {best_epoch}): {_fmt(test)} hr@5 {test['hr@5']:.4f} ndcg@5 {test['ndcg@5']:.4f} "
        f"mrr@5 {test['mrr@5']:.4f} [total {clock(now - start)}]")
    return row


def _utc_now() -> str:
    from bench import results

    return results.utc_now()


def read_test_metrics(paths) -> list[dict]:
    """The split=test rows of one or more metrics.csv files (or run folders), e.g. to join NDCG@10
    onto sweep results by (model, variant): both use the same spec strings as bench.grid.ModelSpec."""
    rows = []
    for path in paths:
        path = Path(path)
        path = path / "metrics.csv" if path.is_dir() else path
        rows += [row for row in read_csv(path) if row.get("split") == "test"]
    return rows


# --- command line --------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = cli.parser("bench.train", __doc__)
    p.add_argument("--model", required=True, help="NAME[:key=value[:key=value]], as in the sweep; "
                   f"models: {', '.join(models.available())}; also official/NAME, recbole/ClassName, "
                   "an installed plugin's name or a dotted path to your class (mypkg.models.MyRec)")
    p.add_argument("--data", required=True, help="a data file: user-item pairs, RecBole .inter or one user per line")
    p.add_argument("--format", choices=seqdata.FORMATS, default="auto", help="data format (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=300, help="maximum epochs (default %(default)s)")
    p.add_argument("--max-len", type=positive_int, default=200, help="padded length L (default %(default)s)")
    p.add_argument("--d-model", type=positive_int, help="width d (default: the model's official default)")
    p.add_argument("--layers", type=positive_int, help="blocks (default: the model's official default)")
    p.add_argument("--heads", type=positive_int, help="heads (default: the model's official default)")
    p.add_argument("--batch-size", type=positive_int, default=2048, help="training batch (default %(default)s)")
    p.add_argument("--eval-batch-size", type=positive_int, default=256)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default %(default)s)")
    p.add_argument("--patience", type=positive_int, default=10,
                   help="epochs without a better validation NDCG@10 before stopping (default %(default)s)")
    p.add_argument("--prefixes-per-user", type=non_negative_int, default=0,
                   help="budget: training prefixes per user per epoch, 0 = all (default %(default)s)")
    p.add_argument("--valid-users", type=non_negative_int, default=0,
                   help="budget: validate on this many fixed random users, 0 = all (default %(default)s)")
    p.add_argument("--max-minutes", type=non_negative_float, default=0.0,
                   help="budget: stop training after this many minutes, 0 = no cap (default %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=2020, help="seed of init, dropout, sampling (default %(default)s)")
    p.add_argument("--threads", type=cli.threads, default=0,
                   help="CPU threads, 0 = torch's default, at most the CPUs this process may use")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default %(default)s)")
    p.add_argument("--out", help="output folder (default reports/_scratch/train/<dataset>-<model spec>)")
    return p


def plan(args: argparse.Namespace) -> tuple[TrainSettings, Path]:
    """Validate everything that needs no data; raises UsageError before anything is written: the
    model spec and sizes, the device (CUDA must exist), the data path (a regular file), and --out
    (`cli.output_dir`: not a file, no file as a parent, writable, names not too long; no finished
    run inside)."""
    from bench.measure.device import resolve_device

    try:
        spec = parse_model_spec(args.model)
        sizes = {k: v for k, v in (("d_model", args.d_model), ("n_layers", args.layers),
                                   ("n_heads", args.heads)) if v}
        models.make_config(spec.name, n_items=2, max_len=args.max_len, **sizes, **dict(spec.overrides))
    except ValueError as err:
        raise UsageError(str(err).rstrip(".")) from None
    try:
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        device = str(resolve_device(device, ("cpu", "cuda")))
    except ValueError as err:
        raise UsageError(f"--device {args.device}: {str(err).rstrip('.')}") from None
    if not args.data or "\0" in args.data:
        raise UsageError(f"--data {args.data!r} is not a usable path")
    data_path = Path(args.data)
    if not data_path.exists():
        raise UsageError(f"--data {data_path}: no such file")
    if data_path.is_dir():
        raise UsageError(f"--data {data_path} is a folder; pass the data file itself")
    if not data_path.is_file():
        raise UsageError(f"--data {data_path} is not a regular file (a pipe or a device); pass the data file itself")
    out = Path(args.out) if args.out is not None else (
        REPO_ROOT / "reports" / "_scratch" / "train" / f"{safe_name(data_path.stem)}-{safe_name(spec.label)}")
    out = cli.output_dir(out, "--out")
    if (out / "metrics.csv").exists():
        raise UsageError(f"{out / 'metrics.csv'} already holds a run; choose another --out or remove that folder")
    settings = TrainSettings(spec=spec, max_len=args.max_len, d_model=args.d_model, n_layers=args.layers,
                             n_heads=args.heads, epochs=args.epochs, batch_size=args.batch_size,
                             eval_batch_size=args.eval_batch_size, lr=args.lr, patience=args.patience,
                             prefixes_per_user=args.prefixes_per_user, valid_users=args.valid_users,
                             max_minutes=args.max_minutes, seed=args.seed, device=device)
    return settings, out


def _json_number(value):
    """A metric for strict JSON: a diverged run's NaN or infinite loss becomes null (the CSV keeps 'nan')."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.train`: every check (flags, data, model size) before --out is touched; bad
    input is one line, exit 2. Ctrl-C keeps every completed epoch (files are replaced atomically)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
        settings, out = plan(args)
        dataset = seqdata.load_dataset(args.data, args.format)
        seqdata.check_trainable(dataset)
        check_fits_memory(settings, dataset.n_items)
    except (UsageError, seqdata.DataError) as err:
        return cli.report_usage_error("bench.train", err)
    if args.threads:
        torch.set_num_threads(args.threads)
    say = lambda line: print(line, flush=True)  # noqa: E731
    if dataset.skipped_users:
        say(f"{dataset.source}: skipped {dataset.skipped_users} user(s) with fewer than {seqdata.MIN_ITEMS} items")
    out.parent.mkdir(parents=True, exist_ok=True)
    run_lock = FileLock(out.parent / f".{out.name}.train.lock", timeout=0)  # one training run per --out
    try:
        run_lock.acquire()
    except Timeout:
        return cli.report_usage_error("bench.train", UsageError(
            f"{out} is being written by another running bench.train; wait for it or choose another --out"))
    try:
        if (out / "metrics.csv").exists():  # a run finished there since `plan` looked
            return cli.report_usage_error("bench.train", UsageError(
                f"{out / 'metrics.csv'} already holds a run; choose another --out or remove that folder"))
        train(settings, dataset, out, log=say, command_line=f"python -m bench.train {shlex.join(argv)}")
    except UsageError as err:  # the model did not fit in memory: raised before anything was written
        return cli.report_usage_error("bench.train", err)
    except KeyboardInterrupt:
        if (out / "metrics.csv").exists():
            print(f"bench.train: interrupted: completed epochs are kept in {out / 'metrics.csv'} and the best "
                  f"one in {out / 'checkpoint.pt'}; no test row was written", file=sys.stderr)
        else:
            print(f"bench.train: interrupted before the first epoch completed; no metrics were written"
                  f"{' (' + str(out) + ' holds command.txt and config.json only)' if (out / 'config.json').exists() else ''}",
                  file=sys.stderr)
        return 130
    except RuntimeError as err:
        if cli.is_out_of_memory(err):
            print("bench.train: error: out of memory; lower --batch-size or --eval-batch-size", file=sys.stderr)
            return 1
        raise
    finally:
        run_lock.release()
    return 0


if __name__ == "__main__":
    cli.run(main)
