"""Read raw examples (dicts) from JSONL / JSON / Parquet files or ``datasets.load_dataset``.

Every record carries its location (``file:line`` or ``name[split]#index``) so that a bad
record can be reported where the user can fix it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

Record = Tuple[str, Dict[str, Any]]  # (location, example)
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataFormatError(ValueError):
    """A data file or record that cannot be used; the message names the place and the fix."""


def read_records(source: str, split: Optional[str] = None, **load_kwargs: Any) -> List[Record]:
    """All records of ``source``: a ``.jsonl``/``.json``/``.parquet`` file, or a name or
    folder for ``datasets.load_dataset`` (``split`` picks the split, default ``train``;
    ``load_kwargs`` go to ``load_dataset``, e.g. ``name="main"`` or ``data_files=...``)."""
    if source.endswith((".jsonl", ".json", ".parquet")) and load_kwargs:
        raise DataFormatError(
            f"{source}: dataset_kwargs {sorted(load_kwargs)} only apply to datasets.load_dataset sources; "
            f"to read this file through datasets use the builder name, e.g. train_data: "
            f"{source.rsplit('.', 1)[-1].replace('jsonl', 'json')} with dataset_kwargs: {{data_files: {source}}}"
        )
    if source.endswith(".jsonl"):
        return read_jsonl(source)
    if source.endswith(".json"):
        return _read_json(source)
    if source.endswith(".parquet"):
        return _read_parquet(source)
    return _read_hf_dataset(source, split or "train", **load_kwargs)


def read_jsonl(path: str) -> List[Record]:
    """One JSON object per line; blank lines are allowed. Stops at the first bad line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path} does not exist")
    records: List[Record] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(
                    f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno}); "
                    f"each line must be one JSON object, e.g. {{\"prompt\": \"...\", \"response\": \"...\"}}"
                ) from None
            if not isinstance(record, dict):
                raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append((f"{path}:{number}", record))
    return records


def _read_json(path: str) -> List[Record]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
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


def _read_parquet(path: str) -> List[Record]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path} does not exist")
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
            f"{name!r} is not a .jsonl/.json/.parquet file, so it is loaded with datasets.load_dataset, "
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
