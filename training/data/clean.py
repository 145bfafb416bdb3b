"""The `clean` channel: identity pairs, so the model learns to leave good text alone."""

from __future__ import annotations

from collections.abc import Sequence

from training.data.rows import ChannelResult, make_row


def make_rows(sentences: Sequence[str]) -> ChannelResult:
    return ChannelResult(rows=[make_row(s, s, "clean") for s in sentences])
