"""Read raw examples (dicts) from JSONL / JSON / CSV / Parquet files or ``datasets.load_dataset``.

Every record carries its location (``file:line`` or ``name[split]#index``) so that a bad
record can be reported where the user can fix it. Files are decoded as UTF-8 (a leading
byte-order mark is allowed): bytes that are not UTF-8 stop with the file, line and byte offset.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

Record = Tuple[str, Dict[str, Any]]  # (location, example)


def named_records(task_name: str, split: str, examples: List[Dict[str, Any]]) -> Optional[List[Record]]:
    """A generated split as records located ``<task_name>[<split>]#<index>``; None when empty."""
    if not examples:
        return None
    return [(f"{task_name}[{split}]#{index}", example) for index, example in enumerate(examples)]
#: The file formats read here, by suffix, and what such a file holds.
FILE_FORMATS = {
    ".jsonl": "one JSON object per line",
    ".json": "a JSON list of objects (or {\"data\": [...]})",
    ".csv": "a header row naming the fields, then one record per row",
    ".parquet": "a table, one record per row",
}
FILE_SUFFIXES = tuple(FILE_FORMATS)
# Suffixes of files that are certainly not dataset names: a missing path ending so is a
# missing file of an unsupported format, not something to look up on the hub.
_FILE_LIKE_SUFFIXES = {
    ".txt", ".tsv", ".gz", ".bz2", ".xz", ".zst", ".zip", ".tar", ".xls", ".xlsx", ".arrow",
    ".feather", ".pkl", ".pickle", ".pt", ".npy", ".npz", ".yaml", ".yml", ".xml", ".html", ".md",
    ".ndjson", ".jsonlines", ".avro", ".orc", ".db", ".sqlite",
}
_UTF8_BOM = b"\xef\xbb\xbf"


class DataFormatError(ValueError):
    """A data file or record that cannot be used; the message names the place and the fix."""


class DataMismatchError(DataFormatError):
    """Well-formed data that does not fit what it trains: the objective's fields (a
    preference file given to SFT) or the model's context (sequences longer than its
    positions). The message names the data source, the objective or model, and the fix."""


def accepted_formats() -> str:
    """The sources ``read_records`` accepts, for error messages."""
    files = "; ".join(f"{suffix} ({what})" for suffix, what in FILE_FORMATS.items())
    return (f"accepted files: {files}; anything else goes through datasets.load_dataset: a hub name or a local "
            f"folder, or a builder with its files, e.g. train_data: text with dataset_kwargs: {{data_files: FILE}}")


def file_format(source: str) -> Optional[str]:
    """The suffix of ``source`` among :data:`FILE_SUFFIXES`, or None when it is a
    ``datasets.load_dataset`` name or folder. A path that is a file of another format, or
    that looks like a file path (an absolute or relative path, or a file-type suffix such as
    ``.txt``) without existing, is refused with the accepted formats instead of being sent
    to the hub (which would report it "not found")."""
    suffix = os.path.splitext(source)[1].lower()
    if suffix in FILE_FORMATS:
        return suffix
    if os.path.isdir(source):
        return None
    if os.path.isfile(source):
        raise DataFormatError(f"{source}: files ending in {suffix or '(no suffix)'!r} are not read; {accepted_formats()}")
    looks_like_path = source.startswith(("/", "./", "../", "~")) or "\\" in source or source.count("/") > 1
    if suffix in _FILE_LIKE_SUFFIXES or (looks_like_path and re.fullmatch(r"\.[a-z][a-z0-9]{0,7}", suffix)):
        raise DataFormatError(f"{source}: no such file, and {suffix!r} files are not read anyway; {accepted_formats()}")
    return None


def read_records(source: str, split: Optional[str] = None, **load_kwargs: Any) -> List[Record]:
    """All records of ``source``: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, or a name or
    folder for ``datasets.load_dataset`` (``split`` picks the split, default ``train``;
    ``load_kwargs`` go to ``load_dataset``, e.g. ``name="main"`` or ``data_files=...``)."""
    suffix = file_format(source)
    if suffix is not None and load_kwargs:
        raise DataFormatError(
            f"{source}: dataset_kwargs {sorted(load_kwargs)} only apply to datasets.load_dataset sources; "
            f"to read this file through datasets use the builder name, e.g. train_data: "
            f"{suffix[1:].replace('jsonl', 'json')} with dataset_kwargs: {{data_files: {source}}}"
        )
    readers = {".jsonl": read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix is not None:
        return readers[suffix](source)
    return _read_hf_dataset(source, split or "train", **load_kwargs)


class _DuplicateKey(ValueError):
    """A JSON object names one key twice (``json`` would keep the last value silently)."""


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: the object, unless a key appears twice."""
    record: Dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def _duplicate_key_message(where: str, key: str) -> str:
    return (f"{where}: the key {key!r} appears twice in one object; JSON readers keep only the last value, so the "
            f"first would be lost without a word. Keep one {key!r} per record (merge or rename the other)")


def _json_error(error: json.JSONDecodeError) -> str:
    """``json``'s message without its own trailing position words ("... at"), then the column."""
    message = error.msg[:-3] if error.msg.endswith(" at") else error.msg
    return f"{message} at column {error.colno}"


def _require_file(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path} does not exist")


def _not_utf8(path: str, data: bytes, error: UnicodeDecodeError, base: int = 0, line: Optional[int] = None) -> DataFormatError:
    """The error for bytes that are not UTF-8: file:line, the byte and its offset in the file."""
    offset = base + error.start  # offset in the file; ``data`` starts at byte ``base``
    if line is None:
        line = data.count(b"\n", 0, error.start) + 1
    line_start = data.rfind(b"\n", 0, error.start) + 1
    return DataFormatError(
        f"{path}:{line}: not valid UTF-8 (byte 0x{data[error.start]:02x} at byte offset {offset} of the file, "
        f"column {error.start - line_start + 1}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )


def _read_text(path: str) -> str:
    """The whole file decoded as UTF-8 (a leading BOM dropped), or an error naming file:line."""
    _require_file(path)
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, data, error) from None


def read_jsonl(path: str) -> List[Record]:
    """One JSON object per line; blank lines are allowed. Stops at the first bad line."""
    _require_file(path)
    records: List[Record] = []
    offset = 0
    # Bytes, decoded line by line, so that a stray non-UTF-8 byte is reported at its line.
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if number == 1 and raw.startswith(_UTF8_BOM):
                raw, start = raw[len(_UTF8_BOM):], start + len(_UTF8_BOM)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _not_utf8(path, raw, error, base=start, line=number) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
            except _DuplicateKey as duplicate:
                raise DataFormatError(_duplicate_key_message(f"{path}:{number}", duplicate.args[0])) from None
            except json.JSONDecodeError as error:
                raise DataFormatError(
                    f"{path}:{number}: not valid JSON ({_json_error(error)}); "
                    f"each line must be one JSON object, e.g. {{\"prompt\": \"...\", \"response\": \"...\"}}"
                ) from None
            if not isinstance(record, dict):
                raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append((f"{path}:{number}", record))
    return records


def _read_json(path: str) -> List[Record]:
    text = _read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as duplicate:
        raise DataFormatError(_duplicate_key_message(path, duplicate.args[0])) from None
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}}), got {type(data).__name__}")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataFormatError(f"{path}[{index}]: expected a JSON object, got {type(item).__name__}")
    return [(f"{path}[{index}]", item) for index, item in enumerate(data)]


def _read_csv(path: str) -> List[Record]:
    """A header row of field names, then one record per row (every value a string; a quoted
    value may span lines: the location is the line the record starts on)."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        names = [name.strip() for name in header]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates or not all(names):
            raise DataFormatError(f"{path}:1: the header row must name every column once; got {header}")
        records: List[Record] = []
        start = reader.line_num + 1
        for row in reader:
            location, start = f"{path}:{start}", reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) != len(names):
                raise DataFormatError(
                    f"{location}: {len(row)} values but the header names {len(names)} columns ({', '.join(names)}); "
                    f"quote values that contain commas or line breaks"
                )
            records.append((location, dict(zip(names, row))))
    except csv.Error as error:
        raise DataFormatError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None
    return records


def _read_parquet(path: str) -> List[Record]:
    _require_file(path)
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("reading Parquet needs pyarrow: pip install 'ift[data]'") from error
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError for damaged files
        raise DataFormatError(f"{path}: not a readable Parquet file ({type(error).__name__}: {error})") from None
    return [(f"{path}[{index}]", row) for index, row in enumerate(rows)]


def _read_hf_dataset(name: str, split: str, **load_kwargs: Any) -> List[Record]:
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            f"{name!r} is not a {'/'.join(FILE_SUFFIXES)} file, so it is loaded with datasets.load_dataset, "
            "which needs: pip install 'ift[data]'"
        ) from error
    dataset = datasets.load_dataset(name, split=split, **load_kwargs)
    return [(f"{name}[{split}]#{index}", dict(row)) for index, row in enumerate(dataset)]


def require_keys(location: str, record: Dict[str, Any], keys: List[str], hint: str = "") -> None:
    """Raise naming the missing key, the keys found and how to map columns."""
    for key in keys:
        if key not in record:
            raise DataFormatError(
                f"{location}: missing key {key!r}; keys found: {sorted(record)}. "
                f"{hint or 'Rename the field or set the matching *_key argument of the data module.'}"
            )
