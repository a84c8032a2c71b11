"""Jane Austen's six novels, read offline from the Debian package `r-cran-janeaustenr`.

The package stores each novel as an R character vector (one element per printed line) in an R lazy-load database:
`data/Rdata.rdx` is a compressed serialized R list whose `variables` entry maps each object name to an
`(offset, length)` pair in `data/Rdata.rdb`; each record there is a 4-byte big-endian length followed by a zlib (or,
for newer R versions, a typed xz/bzip2/zlib) stream holding one serialized R object. The `rdata` package parses the
serialized objects. The texts are written once as plain text files to the dynexec cache. `austen_token_splits` and
`sample_windows` cut the tokenised novels into the training material of the drafters.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import warnings
import zlib
from pathlib import Path

import numpy as np

from optimum_dynexec.training.text_data import sample_windows, token_splits
from optimum_dynexec.utils import cache_dir

__all__ = ["BENCHMARK_GAP", "austen_token_splits", "load_austen_books", "sample_windows", "training_texts"]

logger = logging.getLogger(__name__)

# characters around the middle of every book left out of training: the speculative benchmark's passages come from there
BENCHMARK_GAP = (2_000, 8_000)

APT_PACKAGE = "r-cran-janeaustenr"
DEFAULT_DATA_DIR = Path("/usr/lib/R/site-library/janeaustenr/data")

# R object name in the package -> book title (the titles janeaustenr's `austen_books()` uses).
BOOKS: dict[str, str] = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}


def _find_data_dir(data_dir: Path | None) -> Path:
    candidates = (
        [Path(data_dir)]
        if data_dir is not None
        else [
            DEFAULT_DATA_DIR,
            Path("/usr/local/lib/R/site-library/janeaustenr/data"),
            Path("/usr/lib/R/library/janeaustenr/data"),
        ]
    )
    for folder in candidates:
        if (folder / "Rdata.rdx").is_file() and (folder / "Rdata.rdb").is_file():
            return folder
    raise FileNotFoundError(
        f"Jane Austen's novels were not found (looked for Rdata.rdx/Rdata.rdb in {[str(c) for c in candidates]}). "
        f"Install the Debian package with `apt-get update && apt-get install -y {APT_PACKAGE}`."
    )


def _unpack_index(raw: bytes) -> bytes:
    """The serialized R index from an `.rdx` file: gzip-compressed, or a 4-byte length plus a zlib stream."""
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    return zlib.decompress(raw[4:])


def _unpack_record(blob: bytes) -> bytes:
    """One serialized R object from an `.rdb` record (R's `lazyLoadDBfetch` compression formats)."""
    body = blob[4:]
    if body[:2] in (b"x\x9c", b"x\x01", b"x\xda", b"x^"):
        return zlib.decompress(body)
    kind, payload = body[:1], body[1:]
    if kind == b"Z":
        return lzma.decompress(payload)
    if kind == b"2":
        return bz2.decompress(payload)
    if kind == b"1":
        return zlib.decompress(payload)
    if kind == b"0":
        return payload
    raise ValueError(f"Unknown R lazy-load compression {body[:6]!r}")


def _parse_serialized(data: bytes):
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Unknown file type: assumed RDS" on raw serialized data
        parsed = rdata.parser.parse_data(data, extension=".rds")
    return rdata.conversion.convert(parsed)


def parse_austen_database(data_dir: Path | None = None) -> dict[str, str]:
    """Parses the six novels from the R lazy-load database (no cache). Lines are joined with newlines."""
    folder = _find_data_dir(data_dir)
    index = _parse_serialized(_unpack_index((folder / "Rdata.rdx").read_bytes()))
    variables = {str(k): v for k, v in index["variables"].items()}
    rdb = (folder / "Rdata.rdb").read_bytes()
    books = {}
    for name, title in BOOKS.items():
        if name not in variables:
            raise ValueError(f"`{name}` is missing from {folder / 'Rdata.rdx'} (found {sorted(variables)}).")
        offset, length = (int(x) for x in variables[name])
        lines = _parse_serialized(_unpack_record(rdb[offset : offset + length]))
        books[title] = "\n".join("" if line is None else str(line) for line in lines)
        logger.debug("parsed %s: %d lines", title, len(lines))
    return books


def _cache_file(folder: Path, title: str) -> Path:
    return folder / (title.lower().replace(" & ", "_and_").replace(" ", "_") + ".txt")


def load_austen_books(data_dir: Path | None = None) -> dict[str, str]:
    """Jane Austen's six novels as `{title: full text}`, in publication order.

    The first call parses the R database of the Debian package `r-cran-janeaustenr` and writes one UTF-8 text file
    per novel under `cache_dir("data", "austen")`; later calls read those files.

    Args:
        data_dir: the package's `data` folder holding `Rdata.rdx`/`Rdata.rdb` (found automatically when `None`).

    Raises:
        `FileNotFoundError`: if the Debian package is not installed (the message names it).
    """
    folder = cache_dir("data", "austen")
    files = {title: _cache_file(folder, title) for title in BOOKS.values()}
    if all(path.is_file() for path in files.values()):
        return {title: path.read_text(encoding="utf-8") for title, path in files.items()}
    logger.info("parsing Jane Austen's novels from %s (once)", APT_PACKAGE)
    books = parse_austen_database(data_dir)
    for title, text in books.items():
        tmp = files[title].with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(files[title])
    return books


def training_texts(texts: dict[str, str] | None = None) -> dict[str, str]:
    """The texts the drafters train on: whitespace normalised, with the characters `BENCHMARK_GAP` around the middle
    of every text cut out (the speculative benchmark's passages come from there; texts too short to hold that gap
    four times over are kept whole). `texts` (`{name: text}`) defaults to Jane Austen's novels."""
    if texts is None:
        texts = load_austen_books()
    out = {}
    for title, text in texts.items():
        text = " ".join(text.split())
        if len(text) > 4 * sum(BENCHMARK_GAP):
            middle = len(text) // 2
            text = text[: middle - BENCHMARK_GAP[0]] + " " + text[middle + BENCHMARK_GAP[1] :]
        out[title] = text
    return out


def austen_token_splits(
    tokenizer, eval_fraction: float, texts: dict[str, str] | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`(train, held_out)`: per book, its token ids without the benchmark's middle passage (`training_texts`), the last
    `eval_fraction` of every text held out (`training.text_data.token_splits`)."""
    return token_splits(tokenizer, training_texts(texts), eval_fraction)
