"""The pair row every channel produces, and the JSONL form it is stored in.

A row is a plain dict so that it round-trips through JSONL unchanged:
``{"input": str, "target": str, "channel": str, ...metadata}``.
Metadata keys used by the channels: ``generator``, ``font``, ``extractor``
(pdf), ``engine``/``lang``/``font`` (ocr), ``encoding`` (legacy), ``noise_source`` and
``strength`` (synthetic).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


class MissingTool(RuntimeError):
    """A channel (or part of one) cannot run because a program, package or font is absent.

    The message names exactly what to install, e.g. ``"pdftotext not found: apt-get install
    poppler-utils"``.
    """


@dataclass
class ChannelResult:
    """What a channel returns: its rows, plus notes on anything it had to skip."""

    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def make_row(input_text: str, target: str, channel: str, **metadata) -> dict:
    return {"input": input_text, "target": target, "channel": channel, **metadata}


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (temp file + rename); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def read_rows(path: Path) -> Iterator[dict]:
    """Read pairs from JSONL, or from the earlier system's JSON list of {input, target}."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        first = f.read(64).lstrip()[:1]
        f.seek(0)
        is_list = first == "["  # the earlier system's JSON list, else JSONL
        records = json.load(f) if is_list else (json.loads(ln) for ln in f if ln.strip())
        for i, record in enumerate(records, 1):
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("input"), str)
                or not isinstance(record.get("target"), str)
            ):
                raise ValueError(
                    f"{path}: record {i} is not an object with string 'input' and 'target'"
                )
            record.setdefault("channel", "given")
            yield record
