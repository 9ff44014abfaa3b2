"""Download MovieLens-1M from GroupLens and convert it to the `user item` file bench.train reads.

Examples:
  python scripts/download_ml1m.py                                  # -> reports/_scratch/data/ml-1m/ml-1m.txt
  python scripts/download_ml1m.py --out ~/data/ml-1m
  python scripts/download_ml1m.py --from-zip ~/Downloads/ml-1m.zip  # offline: a zip fetched by hand
  python -m bench.train --model recgrela --data reports/_scratch/data/ml-1m/ml-1m.txt

The project never ships MovieLens data: the GroupLens licence forbids redistribution (research
use only, no commercial use, cite Harper and Konstan 2015). This script fetches
https://files.grouplens.org/datasets/movielens/ml-1m.zip, checks it against GroupLens's published
MD5 (when that file can be fetched), keeps the zip, GroupLens's README and movies.dat, and writes:
- ml-1m.txt: one `user item` pair per line, users ascending, each user's items in chronological
  order (the last line of a user is the leave-one-out test item);
- item_map.txt: `item_id movielens_movie_id` for every dense id.
Preprocessing (the one behind ../shared/data/ml-1m, from the BERT4Rec-VAE / LRURec pipeline):
every rating is an implicit interaction; items with fewer than 5 ratings are dropped, then users
with fewer than 5; item ids become 1..N in ascending MovieID order; each user's items are sorted
by (timestamp, dense item id). On the GroupLens release this gives 6,040 users, 3,416 items and
999,611 interactions. The output folder defaults to reports/_scratch/ (ignored by git).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path

URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_RATINGS = 5


class ConvertError(ValueError):
    """A zip or ratings file that is not MovieLens-1M; one line for the user."""


def parse_ratings(text: str, source: str = "ratings.dat") -> list[tuple[int, int, int]]:
    """(user, movie, timestamp) from `UserID::MovieID::Rating::Timestamp` lines."""
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != 4:
            raise ConvertError(f"{source}:{number}: expected UserID::MovieID::Rating::Timestamp, got {line[:60]!r}")
        try:
            user, movie, _, stamp = (int(field) for field in fields)
        except ValueError:
            raise ConvertError(f"{source}:{number}: non-integer field in {line[:60]!r}") from None
        events.append((user, movie, stamp))
    if not events:
        raise ConvertError(f"{source}: no ratings")
    return events


def convert(events: list[tuple[int, int, int]], min_ratings: int = MIN_RATINGS) -> tuple[list[str], list[str]]:
    """(ml-1m.txt lines, item_map.txt lines) after the 5-core filters and dense remapping."""
    item_count = Counter(movie for _, movie, _ in events)
    events = [e for e in events if item_count[e[1]] >= min_ratings]  # items first
    user_count = Counter(user for user, _, _ in events)
    events = [e for e in events if user_count[e[0]] >= min_ratings]  # then users, one pass each
    movies = sorted({movie for _, movie, _ in events})
    dense = {movie: index for index, movie in enumerate(movies, 1)}
    per_user: dict = {}
    for user, movie, stamp in events:
        per_user.setdefault(user, []).append((stamp, dense[movie]))
    pairs = [f"{user} {item}" for user in sorted(per_user) for _, item in sorted(per_user[user])]
    item_map = ["item_id movielens_movie_id"] + [f"{dense[m]} {m}" for m in movies]
    return pairs, item_map


def write_text(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def convert_zip(zip_path: Path, out: Path, log=print) -> Path:
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as err:
        raise ConvertError(f"{zip_path}: not a readable zip ({err})") from None
    with archive:
        names = {Path(name).name: name for name in archive.namelist()}
        if "ratings.dat" not in names:
            raise ConvertError(f"{zip_path}: no ratings.dat inside; is this ml-1m.zip?")
        text = archive.read(names["ratings.dat"]).decode("latin-1")
        out.mkdir(parents=True, exist_ok=True)
        for extra, target in (("README", "GROUPLENS_README.txt"), ("movies.dat", "movies.dat")):
            if extra in names:
                (out / target).write_bytes(archive.read(names[extra]))
    pairs, item_map = convert(parse_ratings(text, f"{zip_path}:ratings.dat"))
    write_text(out / "ml-1m.txt", pairs)
    write_text(out / "item_map.txt", item_map)
    users = len({line.split()[0] for line in pairs})
    log(f"wrote {out / 'ml-1m.txt'}: {users} users, {len(item_map) - 1} items, {len(pairs)} interactions")
    return out / "ml-1m.txt"


def download(url: str, target: Path, log=print) -> None:
    log(f"downloading {url} ...")
    tmp = target.with_name(f".{target.name}.tmp")
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as handle:
        while chunk := response.read(1 << 20):
            handle.write(chunk)
    try:  # GroupLens publishes <file>.md5 next to each zip
        with urllib.request.urlopen(url + ".md5", timeout=30) as response:
            expected = response.read().decode().split()[0].strip().lower()
    except (OSError, IndexError):
        expected = ""
    actual = hashlib.md5(tmp.read_bytes()).hexdigest()
    if expected and expected != actual:
        tmp.unlink()
        raise ConvertError(f"{url}: MD5 {actual} does not match GroupLens's {expected}; try again")
    log(f"MD5 {actual} " + ("matches GroupLens's published checksum" if expected else "(no published checksum fetched)"))
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/download_ml1m.py", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO_ROOT / "reports" / "_scratch" / "data" / "ml-1m"),
                   help="output folder (default: %(default)s)")
    p.add_argument("--from-zip", help="convert an ml-1m.zip already on disk instead of downloading")
    p.add_argument("--url", default=URL, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        print(f"download_ml1m: error: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        if args.from_zip:
            zip_path = Path(args.from_zip).expanduser()
            if not zip_path.is_file():
                raise ConvertError(f"--from-zip {zip_path}: no such file")
        else:
            out.mkdir(parents=True, exist_ok=True)
            zip_path = out / "ml-1m.zip"
            if not zip_path.exists():
                download(args.url, zip_path)
        convert_zip(zip_path, out)
    except ConvertError as err:
        print(f"download_ml1m: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # network or disk
        print(f"download_ml1m: error: could not download {args.url} ({err}); fetch it by hand and pass "
              f"--from-zip", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
