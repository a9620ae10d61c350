"""Hugging Face `datasets`: a directory written by `save_to_disk` (read from
its memory-mapped Arrow files in batches), or a hub dataset `hf:NAME` /
`hf:NAME:CONFIG` streamed with `streaming=True` (only when online; the revision
is pinned at open time so the stream and its fingerprint agree)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neurodbg.corpus.fingerprint import digest_of, file_sha256
from neurodbg.corpus.source import CorpusSource
from neurodbg.errors import CorpusError

BATCH_ROWS = 1024
DATASET_FILES = ("state.json", "dataset_info.json")
DICT_FILE = "dataset_dict.json"


def is_saved_dataset(path: Path) -> bool:
    return (path / DICT_FILE).is_file() or all((path / f).is_file() for f in DATASET_FILES)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _string_column(features: Any, text_field: str, where: str) -> None:
    names = list(features)
    if text_field not in names:
        raise CorpusError(f"{where} has no column {text_field!r}; columns: {', '.join(map(repr, names))}")
    dtype = getattr(features[text_field], "dtype", None)
    if dtype not in ("string", "large_string", None):
        raise CorpusError(f"{where}: column {text_field!r} is {dtype}, not a string column")


class HFDiskSource(CorpusSource):
    """A `datasets.Dataset` or `DatasetDict` saved with `save_to_disk`."""

    def __init__(self, root: Path, text_field: str = "text", split: str | None = None) -> None:
        self.root = root
        self.text_field = text_field
        self.split: str | None = None
        self.name = str(root)
        self._dir = root
        if (root / DICT_FILE).is_file():
            splits = self._splits()
            if split is None:
                if len(splits) != 1:
                    raise CorpusError(f"{root} holds splits {', '.join(splits)}; choose one with split= "
                                      "(--split on the command line)")
                split = splits[0]
            if split not in splits:
                raise CorpusError(f"{root} has no split {split!r}; splits: {', '.join(splits)}")
            self.split = split
            self._dir = root / split
            self.name = f"{root}[{split}]"
        self._files = self._data_files()
        _string_column(self._load().features, text_field, self.name)
        self._fingerprint: str | None = None

    def _splits(self) -> list[str]:
        try:
            splits = json.loads((self.root / DICT_FILE).read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorpusError(f"cannot read {self.root / DICT_FILE}: {_first_line(exc)}") from None
        return [str(s) for s in splits]

    def _data_files(self) -> list[Path]:
        try:
            state = json.loads((self._dir / "state.json").read_text())
            files = [self._dir / entry["filename"] for entry in state["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorpusError(f"cannot read {self._dir / 'state.json'}: {_first_line(exc)}") from None
        return files

    def _load(self) -> Any:
        import datasets

        try:
            return datasets.load_from_disk(str(self._dir), keep_in_memory=False)
        except Exception as exc:  # datasets raises many types for a damaged directory
            raise CorpusError(f"cannot read dataset {self.name}: {_first_line(exc)}") from None

    def _raw_documents(self) -> Iterator[str]:
        dataset = self._load().select_columns([self.text_field])
        for batch in dataset.iter(batch_size=BATCH_ROWS):
            for text in batch[self.text_field]:
                if text:
                    yield text

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = digest_of({
                "kind": "hf-disk", "text_field": self.text_field, "split": self.split,
                "files": [[p.name, file_sha256(p)] for p in self._files]})
        return self._fingerprint


class HFHubSource(CorpusSource):
    """A hub dataset, streamed; the fingerprint is its pinned commit, split, config and field."""

    def __init__(self, spec: str, text_field: str = "text", split: str | None = None) -> None:
        body = spec.removeprefix("hf:")
        repo, _, config = body.partition(":")
        if not repo:
            raise CorpusError(f"{spec!r} names no dataset; write hf:NAME or hf:NAME:CONFIG")
        self.name = spec
        self.repo = repo
        self.config = config or None
        self.split = split or "train"
        self.text_field = text_field
        self.revision = self._resolve_revision()

    def _resolve_revision(self) -> str:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            raise CorpusError(f"cannot open {self.name}: the Hugging Face hub is switched off (HF_HUB_OFFLINE=1); "
                              "use a local corpus or `datasets` directory")
        try:
            sha = HfApi().dataset_info(self.repo).sha
        except Exception as exc:  # network and hub errors come in many types
            raise CorpusError(f"cannot reach hub dataset {self.repo!r}: {_first_line(exc)}") from None
        if not sha:
            raise CorpusError(f"hub dataset {self.repo!r} reports no revision to pin")
        return str(sha)

    def _raw_documents(self) -> Iterator[str]:
        import datasets

        try:
            stream = datasets.load_dataset(self.repo, self.config, split=self.split, streaming=True,
                                           revision=self.revision)
        except Exception as exc:
            raise CorpusError(f"cannot stream {self.name}: {_first_line(exc)}") from None
        if stream.features is not None:
            _string_column(stream.features, self.text_field, self.name)
        for row in stream:
            if self.text_field not in row:
                raise CorpusError(f"{self.name}: row has no field {self.text_field!r}; "
                                  f"fields: {', '.join(map(repr, row))}")
            text = row[self.text_field]
            if text:
                yield text

    def fingerprint(self) -> str:
        return digest_of({"kind": "hf-hub", "repo": self.repo, "config": self.config, "split": self.split,
                          "revision": self.revision, "text_field": self.text_field})
