"""Parquet files: the document is column `text_field`, read in row batches
with pyarrow (only that column, `BATCH_ROWS` rows at a time). Null and empty
values are skipped; a column that is not of a string type is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neurodbg.errors import CorpusError

SUFFIXES = (".parquet",)
BATCH_ROWS = 1024


def _open(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read parquet file {path}: {str(exc).splitlines()[0]}") from None


def check_parquet_column(path: Path, text_field: str) -> None:
    import pyarrow as pa

    schema = _open(path).schema_arrow
    if text_field not in schema.names:
        raise CorpusError(f"{path} has no column {text_field!r}; columns: {', '.join(map(repr, schema.names))}")
    kind = schema.field(text_field).type
    is_view = getattr(pa.types, "is_string_view", lambda _: False)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)):
        raise CorpusError(f"{path}: column {text_field!r} is {kind}, not a string column")


def parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow as pa

    check_parquet_column(path, text_field)
    try:
        for batch in _open(path).iter_batches(batch_size=BATCH_ROWS, columns=[text_field]):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read parquet file {path}: {str(exc).splitlines()[0]}") from None
