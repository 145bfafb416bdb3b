"""The editor's confidence gate, calibrated on held-out rows.

Every edit the editor proposes carries a confidence (`runtime.editing`); edits under the
gate's threshold are not applied. A low threshold applies more of the right edits and more of
the wrong ones. Calibration corrects the validation rows once, then re-applies the edits at
each threshold of a grid and keeps the lowest one at which

* clean rows (input already right) get at most ``max_clean_introduced`` CER, and
* at most ``max_harm`` of all rows come out worse than they went in.

Every threshold's scores are returned too (the gate curve), for the reports.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.corrector import Corrector
from runtime.pipeline import assemble, prepare
from runtime.text import ScoreBoard

THRESHOLDS = (
    0.0,
    0.5,
    0.7,
    0.8,
    0.85,
    0.9,
    0.93,
    0.95,
    0.96,
    0.97,
    0.98,
    0.99,
    0.995,
    0.998,
    0.999,
    0.9995,
    0.9999,
    1.0,
)
MAX_CLEAN_INTRODUCED = 0.0005  # CER introduced on clean rows
MAX_HARM = 0.01  # share of rows made worse


def gate_curve(
    corrector: Corrector,
    rows: Sequence[dict],
    thresholds: Sequence[float] = THRESHOLDS,
    batch_size: int = 32,
) -> list[dict]:
    """Scores of ``rows`` (``input``/``target``) corrected at every threshold."""
    prepared = [prepare(row["input"], corrector.vocab, corrector.max_src_len) for row in rows]
    pieces = sorted({piece for p in prepared for piece in p.model_inputs}, key=len)
    plans = {}
    for start in range(0, len(pieces), batch_size):
        batch = pieces[start : start + batch_size]
        plans.update(zip(batch, corrector.plan(batch), strict=True))
    curve = []
    for threshold in thresholds:
        board = ScoreBoard()
        for row, p in zip(rows, prepared, strict=True):
            pieces_out = [
                corrector.gated(piece, plans[piece], threshold) for piece in p.model_inputs
            ]
            board.add(row["input"], assemble(p, pieces_out, with_spans=False).text, row["target"])
        curve.append(
            {
                "min_confidence": threshold,
                "cer_before": board.cer_before,
                "cer_after": board.cer_after,
                "reduction": board.relative_reduction,
                "harm_rate": board.harm_rate,
                "clean_rows": board.clean_rows,
                "clean_cer_introduced": board.clean_cer_introduced,
            }
        )
    return curve


def choose_threshold(
    curve: list[dict],
    max_clean_introduced: float = MAX_CLEAN_INTRODUCED,
    max_harm: float = MAX_HARM,
) -> dict:
    """The lowest threshold of ``curve`` within both bounds (else the highest there is), with
    whether the bounds were met."""
    for point in sorted(curve, key=lambda p: p["min_confidence"]):
        if point["clean_cer_introduced"] <= max_clean_introduced and point["harm_rate"] <= max_harm:
            return {**point, "bounds_met": True}
    return {**max(curve, key=lambda p: p["min_confidence"]), "bounds_met": False}


def calibrate(
    corrector: Corrector,
    rows: Sequence[dict],
    *,
    max_clean_introduced: float = MAX_CLEAN_INTRODUCED,
    max_harm: float = MAX_HARM,
) -> dict:
    """The gate for ``corrector``'s model from ``rows`` (a validation split): the chosen
    ``min_confidence``, the bounds, and the curve it was chosen from."""
    curve = gate_curve(corrector, rows)
    chosen = choose_threshold(curve, max_clean_introduced, max_harm)
    return {
        "min_confidence": chosen["min_confidence"],
        "bounds": {"max_clean_cer_introduced": max_clean_introduced, "max_harm_rate": max_harm},
        "bounds_met": chosen["bounds_met"],
        "rows": len(rows),
        "chosen": {k: v for k, v in chosen.items() if k != "bounds_met"},
        "curve": curve,
    }
