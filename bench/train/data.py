"""Interaction data for training and evaluation: loaders, the leave-one-out split, prefix samples.

Formats (`load_dataset(path, fmt="auto")`):
- `pairs`: `user item` per line, lines in chronological order (SASRec's `ml-1m.txt`). A user's
  lines need not be contiguous: items are appended in file order.
- `inter`: a RecBole atomic file, tab-separated, typed header (`user_id:token`,
  `item_id:token`, `timestamp:float`, any other columns ignored). Each user's rows are sorted by
  timestamp; rows with equal timestamps keep their file order (a stable sort).
- `lines`: one user per line, `user item1 item2 ...`, items in chronological order (the S3-Rec
  Amazon and Yelp files).
`auto` picks `inter` for a `.inter` suffix or a first line that is a RecBole header (user_id and
item_id among tab-separated columns), else `pairs` when every line of the first 100 non-blank
ones has exactly two fields, else `lines`.

Ids: in `pairs` and `lines` user and item ids are non-negative integers of ASCII digits, at most
int64's maximum, fields separated by spaces or tabs. RecBole `:token` columns may hold any
printable token without spaces, except a missing-value marker (NaN, NULL, None, NA, -, ...), a
negative integer or a decimal number (export accidents, not ids). Items are remapped densely to
1..N-1 in ascending order of their original id (numeric when all are integers), so an already
dense file keeps its ids; 0 is padding, and `n_items` = N counts it. Users keep their original id
as a string.

Text: UTF-8; a UTF-8 byte-order mark at the start is dropped (Windows editors write one), \r\n
line ends and blanks at line ends are accepted, blank lines ignored; timestamps are any finite
number (negative ones are dates before 1970).

Refused with `DataError`, one line naming the file and, where one is at fault, the line (and
column): a missing file, a folder, a pipe or device; an empty file, only blank lines, a header
without rows; UTF-16/UTF-32 text, a byte that is not UTF-8 (Latin-1 text), a binary, compressed
(gzip, bzip2, xz, zstd) or zip file; a carriage return inside a line (old Mac line ends); in the
integer formats any character that is not printable ASCII or a tab (zero-width and no-break
spaces, form feeds, a byte-order mark inside the file, full-width digits), in a .inter file such a
character inside a user or item token; fields separated by commas, semicolons, '|' or '::'; a line
with the wrong number of fields, an id that is not an integer (with the reason: negative,
decimal, a missing value, beyond int64, a header line), an empty id; a missing or non-numeric,
NaN or infinite timestamp; a header that is not tab-separated or lacks a column; a user repeated
in a `lines` file. A user with fewer than 3 items cannot give an input, a validation and a test
item: such users are SKIPPED (before items are remapped) and counted in `skipped_users`; a file in
which every user is skipped is an error. `check_trainable` adds what a training run needs (at least
one training prefix, at least MIN_CATALOGUE items); bench.train calls it before writing anything.

Protocol (RecBole, leave-one-out; a user's items s_0 .. s_{n-1}, oldest first):
- test:  input s_0 .. s_{n-2}, target s_{n-1}
- valid: input s_0 .. s_{n-3}, target s_{n-2}
- train: every prefix of the training part s_0 .. s_{n-3}: input s_0 .. s_{t-1}, target s_t for
  t = 1 .. n-3 (n-3 samples per user; a 3-item user has none).
Inputs keep their LAST `max_len` items, left-aligned and right-padded with 0 to exactly max_len,
so the model scores its last real slot.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.train.metrics import KS

FORMATS = ("auto", "pairs", "inter", "lines")
MIN_ITEMS = 3  # one input item (at least), one validation item, one test item
MIN_CATALOGUE = max(KS) + 1  # fewer items: every target ranks within the top max(KS), see check_trainable


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


# --- reading text: what the file is, its encoding, its characters --------------------------------

UTF8_BOM = b"\xef\xbb\xbf"
INT64_MAX = 2**63 - 1
SNIFF_BYTES = 4096
# leading bytes of files that are not UTF-8 text: (signature, what the file is, what to do); UTF-32
# before UTF-16, whose little-endian mark is a prefix of UTF-32's
_SIGNATURES = [
    (b"\xff\xfe\x00\x00", "UTF-32 text (little-endian byte-order mark)", "re-save it as UTF-8 (iconv -f UTF-32 -t UTF-8)"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (big-endian byte-order mark)", "re-save it as UTF-8 (iconv -f UTF-32 -t UTF-8)"),
    (b"\xff\xfe", "UTF-16 text (little-endian byte-order mark)", "re-save it as UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (big-endian byte-order mark)", "re-save it as UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it first (gunzip -k) and pass the text file"),
    (b"BZh", "a bzip2-compressed file", "decompress it first (bunzip2 -k) and pass the text file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "decompress it first (unxz -k) and pass the text file"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", "decompress it first (unzstd) and pass the text file"),
    (b"PK\x03\x04", "a zip archive (a torch checkpoint is one too)", "extract the data file and pass that"),
    (b"PAR1", "a Parquet file", "export it as text: 'user item' pairs or a RecBole .inter file"),
    (b"SQLite format 3\x00", "an SQLite database", "export it as text: 'user item' pairs or a RecBole .inter file"),
    (b"\x89PNG", "a PNG image", "pass the data file"),
    (b"%PDF", "a PDF document", "pass the data file"),
]
# ids of the integer formats (pairs, lines): digits; fields split by ASCII spaces and tabs only
_NOT_PLAIN_ASCII = re.compile(r"[^\t\n\x20-\x7e]")
_DECIMAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|[+-]?\d+[eE][+-]?\d+")
_NEGATIVE_INTEGER = re.compile(r"-\d+")
_SEPARATORS = ("::", ",", ";", "|")
MISSING_MARKERS = frozenset({"nan", "null", "none", "na", "n/a", "nil", "?", "-"})


def _sniff(path: Path, head: bytes) -> None:
    """Refuse what is not UTF-8 text, from the file's first bytes: empty, UTF-16/32, compressed or
    archived, NUL bytes (binary, or UTF-16 without a mark), or mostly undecodable bytes."""
    if not head:
        raise DataError(f"{path}: no interactions (empty file)")
    for signature, what, fix in _SIGNATURES:
        if head.startswith(signature):
            raise DataError(f"{path}: {what}, not a UTF-8 text data file; {fix}")
    if b"\0" in head:
        half = len(head) / 2
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if max(even, odd) > 0.3 * half and min(even, odd) < 0.05 * half:
            raise DataError(f"{path}: UTF-16 text without a byte-order mark (every other byte is NUL); "
                            f"re-save it as UTF-8 (iconv -f UTF-16LE -t UTF-8)")
        raise DataError(f"{path}: a binary file (NUL bytes in its first {len(head)} bytes), not a text data file")
    if head.decode("utf-8", errors="replace").count("\ufffd") > 0.1 * len(head):
        raise DataError(f"{path}: a binary file (most of its first {len(head)} bytes are not text), not a text data file")


def _read_lines(path: Path) -> list[str]:
    """Every line of the file, decoded as UTF-8, without its line end (line n is item n - 1). A
    UTF-8 byte-order mark at the start is dropped (editors on Windows write one); \r\n line ends
    are accepted. Raises DataError naming the file (and line and column) for what `_sniff` refuses,
    a byte that is not UTF-8 and a carriage return alone (old Mac line ends). The file is read
    whole: one decode in C, a fraction of the parsed dataset's memory."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    _sniff(path, data[:SNIFF_BYTES])
    bom = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = bom + err.start
        number, column = data.count(b"\n", 0, at) + 1, at - data.rfind(b"\n", 0, at)
        raise DataError(f"{path}:{number}: byte 0x{data[at]:02X} at column {column} is not "
                        f"UTF-8 (Latin-1 or Windows-1252 text?); re-save the file as UTF-8 "
                        f"(iconv -f LATIN1 -t UTF-8)") from None
    del data
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            at = text.index("\r")
            raise DataError(f"{path}:{text.count(chr(10), 0, at) + 1}: a carriage return (\\r) alone at column "
                            f"{at - text.rfind(chr(10), 0, at)}: old Mac line ends? convert them to \\n "
                            f"(\\r\\n line ends are fine)")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _check_plain_ascii(path: Path, lines: list[str]) -> None:
    """The integer formats: every character is printable ASCII or a tab (one scan in C)."""
    text = "\n".join(lines)
    bad = _NOT_PLAIN_ASCII.search(text)
    if bad:
        number = text.count("\n", 0, bad.start()) + 1
        line_start = text.rfind("\n", 0, bad.start()) + 1
        raise _char_error(f"{path}:{number}", lines[number - 1], bad.start() - line_start,
                          "ids are ASCII digits separated by spaces or tabs")


def _char_error(where: str, text: str, index: int, rule: str) -> DataError:
    """One line naming the character at text[index], its column and why it cannot stay."""
    char = text[index]
    category = unicodedata.category(char)
    name = unicodedata.name(char, "")
    kind = {"Cf": "an invisible formatting character", "Zs": "a space that is not the ASCII space",
            "Cc": "a control character", "Zl": "a line separator", "Zp": "a paragraph separator"}.get(category, "not ASCII")
    shown = f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"
    return DataError(f"{where}: {shown} at column {index + 1} ({kind}); {rule}: remove or replace it")


def _id_problem(text: str, integer_format: bool) -> str | None:
    """Why `text` cannot be an id (None: it can). In the integer formats an id is ASCII digits
    (non-negative, at most int64's maximum); RecBole tokens may be any text except a missing-value
    marker, a negative number or a decimal number, which are export accidents, not ids."""
    if text.isdigit() and text.isascii():
        if integer_format and len(text) > 18 and int(text) > INT64_MAX:
            return (f"is larger than the int64 maximum ({INT64_MAX}): two numbers run together? "
                    f"ids must fit in 64 bits")
        return None
    if text.lower() in MISSING_MARKERS:
        return "is a missing value; drop such rows before training"
    if integer_format:
        for separator in _SEPARATORS:
            if separator in text:
                return (f"holds {separator!r}: fields separated by {separator!r}? this format separates fields by "
                        f"spaces or tabs; convert the file (for example tr {separator[0]!r} ' ')")
    if _NEGATIVE_INTEGER.fullmatch(text):
        return "is negative; ids are non-negative integers (-1 often marks a missing value: drop such rows)"
    if _DECIMAL.fullmatch(text) and (integer_format or "." in text):
        return ("is a decimal number; write ids as integers (pandas: astype('int64'); an id stored as a float "
                "loses digits above 2**53)")
    if integer_format:
        try:
            float(text)
        except ValueError:
            return "is not an integer"
        return "is not a plain integer (ASCII digits 0-9 only)"
    return None


def _integer_id(text: str, what: str, where: str, first_line: bool) -> int:
    """An id of the `pairs` and `lines` formats (`text` holds printable ASCII only)."""
    if text.isdigit() and (len(text) < 19 or int(text) <= INT64_MAX):
        return int(text)
    problem = _id_problem(text, integer_format=True)
    hint = ("; a header line? pairs and lines files have none: remove it"
            if first_line and problem == "is not an integer" else "")
    raise DataError(f"{where}: {what} {text!r} {problem}{hint}")


def _read_pairs(path: Path, lines: list[str]) -> dict:
    """user -> [item] in file order."""
    per_user: dict = {}
    first = True
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) == 2:
            user, item = fields
            if user.isdigit() and item.isdigit() and len(user) < 19 and len(item) < 19:  # the common line, fast
                per_user.setdefault(str(int(user)), []).append(int(item))
                first = False
                continue
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 2:
            if first and "user_id" in line:
                hint = "; a RecBole header: pass --format inter or name the file .inter"
            elif len(fields) > 2:
                hint = ("; extra columns (rating, time)? keep user and item, in time order, or write a RecBole "
                        ".inter file; one user per line is --format lines")
            else:
                hint = "; a user without an item"
            raise DataError(f"{where}: expected 'user item', got {len(fields)} field(s): {line[:60]!r}{hint}")
        user = _integer_id(fields[0], "user id", where, first)
        item = _integer_id(fields[1], "item id", where, first)
        first = False
        per_user.setdefault(str(user), []).append(item)
    return per_user


def _pairs_with_a_bad_line(path: Path, lines: list[str]) -> DataError | None:
    """A `pairs` file that auto-detection read as `lines` because of a few lines without exactly two
    fields: the error naming the first such line (None when most lines do not have two fields)."""
    counts = [len(line.split()) for line in lines[:1000]]
    counts = [count for count in counts if count]
    pairs, odd = counts.count(2), len(counts) - counts.count(2)
    if pairs < 2 or odd > max(2, 0.1 * len(counts)):
        return None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if fields and len(fields) != 2:
            return DataError(f"{path}:{number}: expected 'user item' like the other lines, got {len(fields)} field(s): "
                             f"{line[:60]!r} (so the file was read as one user per line)")
    return None


def _read_lines_format(path: Path, lines: list[str], detected: bool = False) -> dict:
    per_user: dict = {}
    first_line: dict = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        user = str(_integer_id(fields[0], "user id", where, not first_line))
        if user in per_user:
            if detected:
                bad_pair = _pairs_with_a_bad_line(path, lines)
                if bad_pair:
                    raise bad_pair
            raise DataError(f"{where}: user {user} appears again (first at line {first_line[user]}); expected one "
                            f"line per user (a file of one interaction per line with more columns, such as "
                            f"'user item rating'? keep 'user item' pairs, or write a RecBole .inter file)")
        first_line[user] = number
        per_user[user] = [_integer_id(item, "item id", where, False) for item in fields[1:]]
    return per_user


def _inter_columns(path: Path, number: int, line: str) -> tuple[int, int, int, int]:
    """(user, item, timestamp column, number of columns) of a RecBole header line."""
    where = f"{path}:{number}"
    if "user_id" not in line or "item_id" not in line:
        raise DataError(f"{where}: not a RecBole header: a .inter file starts with tab-separated typed columns "
                        f"such as user_id:token, item_id:token, timestamp:float; found {line[:60]!r}")
    header = line.split("\t")
    if len(header) == 1:
        separator = next((s for s in (",", ";", "|", " ") if s in line), "?")
        raise DataError(f"{where}: the header is not tab-separated (its columns are split by {separator!r}); "
                        f"RecBole .inter files separate columns with tabs")
    names = [column.strip(" ").split(":", 1)[0] for column in header]
    found = []
    for name in ("user_id", "item_id", "timestamp"):
        if name not in names:
            raise DataError(f"{where}: RecBole header has no {name!r} column (found {', '.join(header)})")
        found.append(names.index(name))
    return found[0], found[1], found[2], len(header)


def _inter_token(fields: list[str], column: int, what: str, where: str) -> str:
    """A user or item token of a .inter row: any printable text without spaces inside, except what
    `_id_problem` refuses; blanks around it are dropped."""
    token = fields[column].strip(" ")
    if token.isdigit() and token.isascii():
        return token
    if not token:
        raise DataError(f"{where}: empty {what}")
    if not token.isprintable():
        index = next(i for i, char in enumerate(token) if not char.isprintable())
        line = "\t".join(fields)
        offset = sum(len(field) + 1 for field in fields[:column]) + fields[column].index(token)
        raise _char_error(where, line, offset + index, f"the {what} column holds it")
    if " " in token:
        raise DataError(f"{where}: {what} {token!r} holds a space; RecBole .inter columns are separated by tabs "
                        f"and a token has no space inside")
    problem = _id_problem(token, integer_format=False)
    if problem:
        raise DataError(f"{where}: {what} {token!r} {problem}")
    return token


def _inter_timestamp(text: str, where: str) -> float:
    """A finite number; negative times (before 1970) are fine."""
    text = text.strip(" ")
    if not text:
        raise DataError(f"{where}: empty timestamp")
    try:
        stamp = float(text) if text.isascii() else None
    except ValueError:
        stamp = None
    if stamp is None:
        raise DataError(f"{where}: timestamp {text!r} is not a number (RecBole timestamps are numbers, such as "
                        f"Unix seconds)")
    if not math.isfinite(stamp):
        raise DataError(f"{where}: timestamp {text!r} is not finite; events need a number to be sorted by")
    return stamp


def _read_inter(path: Path, lines: list[str]) -> dict:
    numbered = enumerate(lines, 1)
    columns = None
    for number, line in numbered:
        if line.strip():
            columns = _inter_columns(path, number, line)
            break
    if columns is None:
        return {}
    user_col, item_col, time_col, width = columns
    rows: dict = {}
    for number, line in numbered:
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{path}:{number}"
        if len(fields) > width and not any(field.strip(" ") for field in fields[width:]):
            fields = fields[:width]  # empty trailing columns (a tab at each line's end): nothing lost
        if len(fields) != width:
            hint = "; spaces do not separate columns in a .inter file" if " " in line.strip(" ") else ""
            raise DataError(f"{where}: expected {width} tab-separated fields, got {len(fields)}: {line[:60]!r}{hint}")
        stamp = _inter_timestamp(fields[time_col], where)
        user = _inter_token(fields, user_col, "user id", where)
        item = _inter_token(fields, item_col, "item id", where)
        rows.setdefault(user, []).append((stamp, item))
    if not rows:
        raise DataError(f"{path}: a header and no interaction rows")
    # sort each user's rows by timestamp; Python's sort is stable, so ties keep file order
    return {user: [item for _, item in sorted(events, key=lambda event: event[0])] for user, events in rows.items()}


def _is_recbole_header(line: str) -> bool:
    names = {column.strip(" ").split(":", 1)[0] for column in line.split("\t")}
    return "\t" in line and {"user_id", "item_id"} <= names


def detect_format(path: Path) -> str:
    """`inter` for a .inter suffix or a first line that is a RecBole header; else `pairs` when every
    one of the first 100 non-blank lines has two fields; else `lines`."""
    return _detect(path, _read_lines(path))


def _detect(path: Path, lines: list[str]) -> str:
    if path.suffix == ".inter":
        return "inter"
    seen = 0
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if seen == 0 and _is_recbole_header(line):
            return "inter"
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
        raise DataError(f"{where}: no user has at least {MIN_ITEMS} items ({skipped} user(s), all skipped); "
                        f"leave-one-out needs {MIN_ITEMS}: a training or history item, a validation and a test item")
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
    """Read a data file in one of FORMATS; raises DataError (one line naming the file, and the line
    where one is at fault) for everything listed in the module docstring."""
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not os.fspath(path) or "\0" in os.fspath(path):
        raise DataError(f"data path {os.fspath(path)!r} is not a usable path")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass the data file itself")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a pipe or a device); pass the data file itself")
    lines = _read_lines(path)
    detected = fmt == "auto"
    fmt = _detect(path, lines) if detected else fmt
    if fmt != "inter":
        _check_plain_ascii(path, lines)
    if fmt == "lines":
        per_user = _read_lines_format(path, lines, detected)
    else:
        per_user = (_read_pairs if fmt == "pairs" else _read_inter)(path, lines)
    if not per_user:
        raise DataError(f"{path}: no interactions (empty file): it holds only blank lines")
    return from_sequences(per_user, name=path.stem, source=str(path), fmt=fmt)


def item_fingerprint(item_ids: list) -> str:
    """A short hash of the catalogue (original item ids in dense order): two datasets with the same
    fingerprint map every item to the same embedding row. Checkpoints record it (bench.train)."""
    return hashlib.sha256("\n".join(map(str, item_ids)).encode()).hexdigest()[:16]


def check_trainable(dataset: SequenceDataset) -> None:
    """Refuse (DataError, one line naming the data file) a dataset that loads but cannot give a
    meaningful training run:
    - no training sample: every kept user has exactly MIN_ITEMS = 3 items, so leave-one-out leaves
      an input item, a validation and a test target, and no prefix to train on (that needs 4 items);
    - a catalogue of at most max(KS) = 10 items: full ranking then puts every target in the top 10
      whatever the model scores, so HR@10 is 1.0 by construction and the metrics measure nothing
      (MIN_CATALOGUE = 11 distinct items).
    The validation and test sets are never empty: every kept user gives one sample to each."""
    where = dataset.source or dataset.name or "data"
    if int((dataset.lengths - MIN_ITEMS).clamp(min=0).sum()) == 0:
        skipped = (f"; {dataset.skipped_users} user(s) with fewer than {MIN_ITEMS} items were skipped"
                   if dataset.skipped_users else "")
        raise DataError(f"{where}: no training samples: every kept user has exactly {MIN_ITEMS} items "
                        f"(leave-one-out needs at least {MIN_ITEMS + 1} for one training prefix){skipped}")
    items = dataset.n_items - 1
    if items < MIN_CATALOGUE:
        raise DataError(f"{where}: only {items} distinct item{'s' if items != 1 else ''} among the kept users; full "
                        f"ranking needs at least {MIN_CATALOGUE} (with {MIN_CATALOGUE - 1} or fewer every target ranks "
                        f"in the top {MIN_CATALOGUE - 1} whatever the model scores, so HR@{MIN_CATALOGUE - 1} is 1.0 "
                        f"and measures nothing)")


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
