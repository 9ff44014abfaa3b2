"""Interaction data for training and evaluation: loaders, the leave-one-out split, prefix samples.

Formats (`load_dataset(path, fmt="auto")`):
- `pairs`: `user item` per line, lines in chronological order (SASRec's `ml-1m.txt`). A user's
  lines need not be contiguous: items are appended in file order.
- `inter`: a RecBole atomic file, tab-separated, typed header (`user_id:token`,
  `item_id:token`, `timestamp:float`, any other columns ignored). Each user's rows are sorted by
  timestamp; rows with equal timestamps keep their file order (a stable sort).
- `lines`: one user per line, `user item1 item2 ...`, items in chronological order (the S3-Rec
  Amazon and Yelp files).
`auto` picks `inter` for a `.inter` suffix, else `pairs` when every line of the first 100
non-blank ones has exactly two fields, else `lines`.

Ids: user and item ids must be integers in `pairs` and `lines` (RecBole `:token` columns may
hold any token). Items are remapped densely to 1..N-1 in ascending order of their original id
(numeric when all are integers), so an already dense file keeps its ids; 0 is padding, and
`n_items` = N counts it. Users keep their original id as a string.

Malformed input raises `DataError` with one line naming the file and line: a line with the wrong
number of fields, a non-integer id, a non-numeric timestamp, a missing header column, a user
repeated in a `lines` file, an empty file. Blank lines are ignored. A user with fewer than 3
items cannot give a training, a validation and a test item: such users are SKIPPED (before
items are remapped) and counted in `skipped_users`; a file in which every user is skipped is an
error.

Protocol (RecBole, leave-one-out; a user's items s_0 .. s_{n-1}, oldest first):
- test:  input s_0 .. s_{n-2}, target s_{n-1}
- valid: input s_0 .. s_{n-3}, target s_{n-2}
- train: every prefix of the training part s_0 .. s_{n-3}: input s_0 .. s_{t-1}, target s_t for
  t = 1 .. n-3 (n-3 samples per user; a 3-item user has none).
Inputs keep their LAST `max_len` items, left-aligned and right-padded with 0 to exactly max_len,
so the model scores its last real slot.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

FORMATS = ("auto", "pairs", "inter", "lines")
MIN_ITEMS = 3  # one training item (at least), one validation item, one test item


class DataError(ValueError):
    """A malformed data file; the message is one line naming the file (and line)."""


@dataclass
class SequenceDataset:
    """Chronological item sequences of every kept user, stored flat.

    User u's items (dense ids) are `items[offsets[u]:offsets[u + 1]]`, oldest first.
    """

    items: torch.Tensor  # [total interactions] int64, dense ids 1..n_items-1
    offsets: torch.Tensor  # [n_users + 1] int64
    users: list  # original user ids (str), one per sequence
    n_items: int  # dense item ids including padding id 0
    name: str = ""
    source: str = ""
    fmt: str = ""
    skipped_users: int = 0  # users with fewer than MIN_ITEMS items, left out
    item_ids: list = field(default_factory=list)  # original id of dense id i at index i - 1

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def sequence(self, user: int) -> list[int]:
        return self.items[self.offsets[user]:self.offsets[user + 1]].tolist()

    def stats(self) -> dict:
        lengths = self.lengths.double()
        return {"dataset": self.name, "source": self.source, "format": self.fmt,
                "users": self.n_users, "items": self.n_items - 1, "n_items": self.n_items,
                "interactions": int(self.items.numel()), "skipped_users": self.skipped_users,
                "length_mean": round(float(lengths.mean()), 2), "length_min": int(lengths.min()),
                "length_max": int(lengths.max())}


# --- loaders ------------------------------------------------------------------------------------

def _integer(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{where}: {what} {text!r} is not an integer") from None


def _read_lines(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                yield number, line.rstrip("\r\n")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None


def _read_pairs(path: Path) -> dict:
    """user -> [item] in file order."""
    per_user: dict = {}
    for number, line in _read_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected 'user item', got {len(fields)} field(s): {line[:60]!r}")
        try:
            user, item = int(fields[0]), int(fields[1])
        except ValueError:  # name the field at fault
            where = f"{path}:{number}"
            user, item = _integer(fields[0], "user id", where), _integer(fields[1], "item id", where)
        per_user.setdefault(str(user), []).append(item)
    return per_user


def _read_lines_format(path: Path) -> dict:
    per_user: dict = {}
    first_line: dict = {}
    for number, line in _read_lines(path):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        user = str(_integer(fields[0], "user id", where))
        if user in per_user:
            raise DataError(f"{where}: user {user} appears again (first at line {first_line[user]}); "
                            f"expected one line per user")
        first_line[user] = number
        per_user[user] = [_integer(item, "item id", where) for item in fields[1:]]
    return per_user


def _column(header: list[str], name: str, path: Path) -> int:
    for index, column in enumerate(header):
        if column.split(":", 1)[0] == name:
            return index
    raise DataError(f"{path}:1: RecBole header has no {name!r} column (found {', '.join(header) or 'nothing'})")


def _read_inter(path: Path) -> dict:
    lines = _read_lines(path)
    header = None
    for _number, line in lines:
        if line.strip():
            header = line.split("\t")
            break
    if header is None:
        return {}
    user_col, item_col, time_col = (_column(header, name, path) for name in ("user_id", "item_id", "timestamp"))
    rows: dict = {}
    for number, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{path}:{number}"
        if len(fields) != len(header):
            raise DataError(f"{where}: expected {len(header)} tab-separated fields, got {len(fields)}: {line[:60]!r}")
        try:
            stamp = float(fields[time_col])
        except ValueError:
            raise DataError(f"{where}: timestamp {fields[time_col]!r} is not a number") from None
        if math.isnan(stamp):
            raise DataError(f"{where}: timestamp is NaN")
        user, item = fields[user_col].strip(), fields[item_col].strip()
        if not user or not item:
            raise DataError(f"{where}: empty user or item id")
        rows.setdefault(user, []).append((stamp, item))
    # sort each user's rows by timestamp; Python's sort is stable, so ties keep file order
    return {user: [item for _, item in sorted(events, key=lambda event: event[0])] for user, events in rows.items()}


def detect_format(path: Path) -> str:
    if path.suffix == ".inter":
        return "inter"
    seen = 0
    for _, line in _read_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            return "lines"
        seen += 1
        if seen == 100:
            break
    return "pairs"


def _sort_key(ids: list):
    """Ascending numeric order when every id is an integer (RecBole tokens included), else text order."""
    try:
        [int(i) for i in ids]
    except ValueError:
        return str
    return int


def from_sequences(per_user: dict, name: str = "", source: str = "", fmt: str = "") -> SequenceDataset:
    """Skip users with < MIN_ITEMS items, remap items densely from 1 and store the rest flat."""
    kept = {user: items for user, items in per_user.items() if len(items) >= MIN_ITEMS}
    skipped = len(per_user) - len(kept)
    if not kept:
        where = source or name or "data"
        if not per_user:
            raise DataError(f"{where}: no interactions (empty file)")
        raise DataError(f"{where}: no user has at least {MIN_ITEMS} items ({skipped} user(s), all skipped)")
    distinct = list({item for items in kept.values() for item in items})
    originals = sorted(distinct, key=_sort_key(distinct))
    dense = {item: index for index, item in enumerate(originals, 1)}
    flat = [dense[item] for items in kept.values() for item in items]
    lengths = [len(items) for items in kept.values()]
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths).cumsum(0)
    return SequenceDataset(torch.tensor(flat, dtype=torch.long), offsets, list(kept), len(originals) + 1,
                           name=name, source=source, fmt=fmt, skipped_users=skipped,
                           item_ids=[str(item) for item in originals])


def load_dataset(path, fmt: str = "auto") -> SequenceDataset:
    """Read a data file in one of FORMATS; raises DataError (one line) on malformed input."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass the data file itself")
    fmt = detect_format(path) if fmt == "auto" else fmt
    reader = {"pairs": _read_pairs, "inter": _read_inter, "lines": _read_lines_format}[fmt]
    name = path.stem
    return from_sequences(reader(path), name=name, source=str(path), fmt=fmt)


# --- synthetic data -----------------------------------------------------------------------------

def synthetic_dataset(n_users: int = 200, n_items: int = 100, mean_len: int = 30, n_topics: int = 5,
                      interests_per_user: int = 2, burst_prob: float = 0.3, burst_len: int = 4,
                      seed: int = 0) -> SequenceDataset:
    """Sequences with long-term interests and short bursts (for tests and demos).

    Items 1..n_items are split into `n_topics` contiguous topics. Each user holds a few topics
    (long-term interests). A sequence is built step by step: with probability `burst_prob` a
    burst starts in a random topic (any topic, the short-term interest) and walks item, item + 1,
    ... inside it for `burst_len` steps; otherwise the next item is drawn uniformly from one of
    the user's long-term topics. Lengths are uniform in [MIN_ITEMS + 2, 2 * mean_len - 5].
    Next items are thus partly predictable (within a burst) and partly a user preference.
    """
    if n_items < n_topics or n_topics < 1 or n_users < 1 or mean_len < MIN_ITEMS + 3:
        raise ValueError("synthetic_dataset needs n_items >= n_topics >= 1, n_users >= 1, mean_len >= 6")
    rng = random.Random(seed)
    bounds = [round(i * n_items / n_topics) + 1 for i in range(n_topics + 1)]  # topic t: [b_t, b_{t+1})
    per_user = {}
    for user in range(1, n_users + 1):
        interests = rng.sample(range(n_topics), min(interests_per_user, n_topics))
        length = rng.randint(MIN_ITEMS + 2, 2 * mean_len - 5)
        items, burst_left, current, topic = [], 0, 0, 0
        while len(items) < length:
            if burst_left == 0 and rng.random() < burst_prob:
                topic = rng.randrange(n_topics)
                current, burst_left = rng.randrange(bounds[topic], bounds[topic + 1]), burst_len
            if burst_left:
                items.append(current)
                current = current + 1 if current + 1 < bounds[topic + 1] else bounds[topic]
                burst_left -= 1
            else:
                topic_of_interest = rng.choice(interests)
                items.append(rng.randrange(bounds[topic_of_interest], bounds[topic_of_interest + 1]))
        per_user[str(user)] = items
    return from_sequences(per_user, name=f"synthetic-{n_users}u-{n_items}i-s{seed}", source="synthetic",
                          fmt="synthetic")


def write_lines_file(dataset: SequenceDataset, path) -> None:
    """Write a dataset as a `lines` file (one user per line), e.g. to run the CLI on synthetic data."""
    with open(path, "w") as handle:
        for user in range(dataset.n_users):
            handle.write(" ".join([dataset.users[user]] + [str(i) for i in dataset.sequence(user)]) + "\n")


# --- samples and padded batches -------------------------------------------------------------------

@dataclass
class Samples:
    """(user, end) pairs: input = the user's items [.., end) (last max_len kept), target = item end."""

    user: torch.Tensor  # [S] int64
    end: torch.Tensor  # [S] int64, index of the target inside the user's sequence

    def __len__(self) -> int:
        return self.user.numel()

    def subset(self, index: torch.Tensor) -> Samples:
        return Samples(self.user[index], self.end[index])


def split_samples(dataset: SequenceDataset, split: str, users: torch.Tensor | None = None) -> Samples:
    """One sample per user for `valid` (target s_{n-2}) or `test` (target s_{n-1})."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    users = torch.arange(dataset.n_users) if users is None else users
    back = 2 if split == "valid" else 1
    return Samples(users, dataset.lengths[users] - back)


def train_samples(dataset: SequenceDataset) -> Samples:
    """Every prefix of every training part: targets s_1 .. s_{n-3} of each user."""
    per_user = (dataset.lengths - 3).clamp(min=0)  # training targets per user
    user = torch.repeat_interleave(torch.arange(dataset.n_users), per_user)
    first = torch.cumsum(per_user, 0) - per_user  # index of each user's first sample
    end = torch.arange(user.numel()) - first[user] + 1  # 1 .. n-3
    return Samples(user, end)


def sample_prefixes(samples: Samples, per_user: int, generator: torch.Generator) -> Samples:
    """At most `per_user` distinct samples of each user, uniformly at random (0 = keep all)."""
    if per_user <= 0:
        return samples
    keys = torch.rand(len(samples), generator=generator)
    order = torch.argsort(keys)
    order = order[torch.argsort(samples.user[order], stable=True)]  # by user, random within a user
    users = samples.user[order]
    first = torch.searchsorted(users, users, right=False)  # position of the user's first sample
    keep = (torch.arange(users.numel()) - first) < per_user
    return samples.subset(order[keep])


def padded_inputs(dataset: SequenceDataset, samples: Samples, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(item_seq [S, max_len] right-padded with 0, target [S]) for the given samples, no Python loop."""
    start = dataset.offsets[samples.user] + (samples.end - max_len).clamp(min=0)  # flat index of slot 0
    length = samples.end.clamp(max=max_len)  # real slots n_b
    slots = torch.arange(max_len)
    index = (start[:, None] + slots[None, :]).clamp(max=dataset.items.numel() - 1)
    item_seq = torch.where(slots[None, :] < length[:, None], dataset.items[index], 0)
    target = dataset.items[dataset.offsets[samples.user] + samples.end]
    return item_seq, target


def choose_users(dataset: SequenceDataset, count: int, seed: int) -> torch.Tensor:
    """A fixed random subset of `count` users (all users, in order, when count <= 0 or >= n_users)."""
    if count <= 0 or count >= dataset.n_users:
        return torch.arange(dataset.n_users)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(dataset.n_users, generator=generator)[:count].sort().values
