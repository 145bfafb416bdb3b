"""Evaluation: correct a split with a checkpoint, score it as docs/design.md "Metrics" says, report.

    evaluate        corrections through the serving Corrector, then ScoreBoards overall, per
                    channel, per channel × metadata value
    write_reports   report.json, report.md, report.html (tables + highlighted sample), predictions
    write_comparison  one row per model, for models trained on equal budgets

Scores are corpus-level (summed distances over summed reference lengths), so a group's CER is
not swayed by its shortest rows.
"""

from __future__ import annotations

import html
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from rapidfuzz.distance import Levenshtein

from runtime.corrector import Corrector
from runtime.editing import Gate
from runtime.text import (
    ScoreBoard,
    Span,
    edit_spans,
    normalize,
    segment,
    symbolize,
)
from runtime.text.metrics import KINDS
from training.calibrate import calibrate
from training.checkpoint import Checkpoint
from training.models import count_parameters
from training.torch_engine import checkpoint_corrector

# Row metadata that names where a row's damage came from; each gets its own table per channel.
GROUP_KEYS = ("generator", "font", "extractor", "encoding", "lang", "noise_source")
SAMPLE_ROWS = 200

# --------------------------------------------------------------------------- scoring


def evaluate(corrector: Corrector, rows: Sequence[dict], *, batch_size: int = 64) -> dict:
    """Correct every row's input as the service would (``corrector.correct``: the serving text
    pipeline, batching and decoding, the editor's gate included) and score the predictions
    against the targets. Sequence-to-sequence models decode greedily: the service's aggressive
    decoding gives the same output by construction, in more calls for an untrained model.

    Returns `rows`, `timing` (seconds, rows/s, chars/s of input), `overall` (ScoreBoard plus
    cluster error rates), `channels` {channel: scores}, `groups` {channel: {key: {value:
    scores}}} for each GROUP_KEYS key the rows carry, and `predictions` aligned with `rows`.
    """
    inputs = [row["input"] for row in rows]
    start = time.perf_counter()
    corrections = corrector.correct(inputs, decoding="greedy", batch_size=batch_size)
    predictions = [c.text for c in corrections]
    seconds = time.perf_counter() - start

    overall = ScoreBoard()
    channels: dict[str, ScoreBoard] = defaultdict(ScoreBoard)
    groups: dict[tuple[str, str, str], ScoreBoard] = defaultdict(ScoreBoard)
    clusters = {"before": 0, "after": 0, "reference": 0}
    for row, prediction in zip(rows, predictions, strict=True):
        boards = [overall, channels[row["channel"]]]
        boards += [groups[row["channel"], key, str(row[key])] for key in GROUP_KEYS if key in row]
        for board in boards:
            board.add(row["input"], prediction, row["target"])
        before, after, reference_clusters = _cluster_distances(
            row["input"], prediction, row["target"]
        )
        clusters["before"] += before
        clusters["after"] += after
        clusters["reference"] += reference_clusters

    nested: dict[str, dict[str, dict[str, dict]]] = {}
    for (channel, key, value), board in sorted(groups.items()):
        nested.setdefault(channel, {}).setdefault(key, {})[value] = board.as_dict()
    input_chars = sum(len(normalize(text)) for text in inputs)
    return {
        "rows": len(rows),
        "timing": {
            "seconds": seconds,
            "rows_per_s": len(rows) / seconds if seconds else 0.0,
            "chars_per_s": input_chars / seconds if seconds else 0.0,
        },
        "overall": {
            **overall.as_dict(),
            "cluster_error_rate_before": _rate(clusters["before"], clusters["reference"]),
            "cluster_error_rate_after": _rate(clusters["after"], clusters["reference"]),
        },
        "channels": {channel: board.as_dict() for channel, board in sorted(channels.items())},
        "groups": nested,
        "predictions": predictions,
    }


def _cluster_distances(input_text: str, prediction: str, reference: str) -> tuple[int, int, int]:
    """Cluster edit distances of input and prediction to the reference, and its cluster count."""
    input_symbols, prediction_symbols, reference_symbols = symbolize(
        *(segment(normalize(text)) for text in (input_text, prediction, reference))
    )
    return (
        Levenshtein.distance(input_symbols, reference_symbols),
        Levenshtein.distance(prediction_symbols, reference_symbols),
        len(reference_symbols),
    )


def _rate(distance: int, length: int) -> float:
    """As runtime.text.metrics does: against nothing, 0.0 if nothing is wrong, else 1.0."""
    if length:
        return distance / length
    return 0.0 if distance == 0 else 1.0


# --------------------------------------------------------------------------- checkpoints


def _meta_value(meta: dict, section: str, key: str):
    """`meta[section][key]`, or None where the checkpoint's JSON lacks it (see training/train.py
    for the layout the trainer writes)."""
    value = meta.get(section)
    return value.get(key) if isinstance(value, dict) else None


def describe_checkpoint(checkpoint: Checkpoint) -> dict:
    """What identifies a checkpoint in a report; None where its JSON does not say."""
    meta = checkpoint.meta
    return {
        "model": checkpoint.model_name,
        "params": count_parameters(checkpoint.model),
        "step": _meta_value(meta, "progress", "step"),
        "train_seconds": _meta_value(meta, "progress", "elapsed_s"),
        "val_cer": _meta_value(meta, "metrics", "val_cer"),
    }


def evaluate_checkpoint(
    checkpoint: Checkpoint,
    rows: Sequence[dict],
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    gate_rows: Sequence[dict] = (),
    min_confidence: float | None = None,
) -> dict:
    """`evaluate` with the checkpoint's model on `device`, plus its identity as `checkpoint`.

    The editor runs through the serving `Corrector` with its confidence gate at
    ``min_confidence``, or else calibrated on ``gate_rows`` (a validation split) exactly as
    export calibrates it; the report's ``gate`` says which, and how."""
    corrector, gate = checkpoint_corrector(checkpoint, device), None
    if corrector.is_editor:
        if min_confidence is None and gate_rows:
            gate = calibrate(corrector, gate_rows)
        else:
            gate = Gate(min_confidence or 0.0).settings()
        corrector.gate = Gate.of_settings(gate, corrector.gate.space_id)
    report = evaluate(corrector, rows, batch_size=batch_size)
    report["timing"]["device"] = str(device)
    if gate is not None:
        report["gate"] = gate
    return {"checkpoint": describe_checkpoint(checkpoint), **report}


# --------------------------------------------------------------------------- reports


def _percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def headline(report: dict) -> str:
    """One line: the numbers a reader looks for first."""
    scores, timing = report["overall"], report["timing"]
    clean = scores["clean_cer_introduced"] if scores["clean_rows"] else None
    return (
        f"CER {_percent(scores['cer_before'])} → {_percent(scores['cer_after'])} "
        f"(reduction {_percent(scores['relative_reduction'], 1)}), "
        f"harm rate {_percent(scores['harm_rate'], 1)}, "
        f"clean CER introduced {_percent(clean)}; "
        f"{report['rows']} rows, {timing['rows_per_s']:.1f} rows/s, "
        f"{timing['chars_per_s']:.0f} chars/s"
    )


_COLUMNS = (
    "group",
    "rows",
    "CER before",
    "CER after",
    "reduction",
    "harm rate",
    "clean rows",
    "clean CER introduced",
    "sub",
    "ins",
    "del",
)


def _score_cells(label: str, scores: dict) -> list[str]:
    mix = scores["error_mix"]
    return [
        label,
        str(scores["rows"]),
        _percent(scores["cer_before"]),
        _percent(scores["cer_after"]),
        _percent(scores["relative_reduction"], 1),
        _percent(scores["harm_rate"], 1),
        str(scores["clean_rows"]),
        _percent(scores["clean_cer_introduced"] if scores["clean_rows"] else None),
        str(mix["substitution"]),
        str(mix["insertion"]),
        str(mix["deletion"]),
    ]


def _sections(report: dict) -> list[tuple[str, list[list[str]]]]:
    """The summary tables, as (title, rows of cells), in reading order."""
    sections = [
        ("Overall", [_score_cells("all", report["overall"])]),
        (
            "By channel",
            [_score_cells(channel, scores) for channel, scores in report["channels"].items()],
        ),
    ]
    for channel, by_key in report["groups"].items():
        for key, by_value in by_key.items():
            cells = [_score_cells(value, scores) for value, scores in by_value.items()]
            sections.append((f"{channel} by {key}", cells))
    return sections


def _identity_lines(report: dict) -> list[str]:
    """Model, data and timing facts, as short plain-text lines."""
    lines = []
    if "checkpoint" in report:
        info = report["checkpoint"]
        facts = [f"model {info['model']}", f"{info['params']:,} parameters"]
        if info.get("path"):
            facts.insert(0, f"checkpoint {info['path']}")
        if info["step"] is not None:
            facts.append(f"step {info['step']}")
        if info["train_seconds"] is not None:
            facts.append(f"trained {info['train_seconds'] / 60:.1f} min")
        if info["val_cer"] is not None:
            facts.append(f"val CER {_percent(info['val_cer'])}")
        lines.append(", ".join(facts))
    if "data" in report:
        lines.append(f"data {report['data']['path']}, split {report['data']['split']}")
    timing = report["timing"]
    lines.append(
        f"{report['rows']} rows in {timing['seconds']:.1f} s on {timing.get('device', 'cpu')}: "
        f"{timing['rows_per_s']:.1f} rows/s, {timing['chars_per_s']:.0f} chars/s"
    )
    if "gate" in report:
        gate = report["gate"]
        how = (
            f"calibrated on {gate['rows']} validation rows (bounds met: {gate['bounds_met']})"
            if "rows" in gate
            else "as given"
        )
        lines.append(f"editor gate: {Gate.of_settings(gate, None).describe()}, {how}")
    scores = report["overall"]
    lines.append(
        f"cluster error rate {_percent(scores['cluster_error_rate_before'])} → "
        f"{_percent(scores['cluster_error_rate_after'])}"
    )
    return lines


def _title(report: dict) -> str:
    name = report.get("checkpoint", {}).get("name") or report.get("checkpoint", {}).get("model")
    split = report.get("data", {}).get("split")
    return "Evaluation" + (f": {name}" if name else "") + (f" on {split}" if split else "")


def render_markdown(report: dict) -> str:
    out = [f"# {_title(report)}", "", headline(report), ""]
    out += [f"- {line}" for line in _identity_lines(report)]
    out.append(
        "\nCER is corpus-level (summed edit distances / summed reference lengths) on normalized "
        "text; sub/ins/del count the predictions' remaining errors against the reference."
    )
    for title, rows in _sections(report):
        out += ["", f"## {title}", "", "| " + " | ".join(_COLUMNS) + " |"]
        out.append("|" + "---|" + "---:|" * (len(_COLUMNS) - 1))
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(out + _kinds_table(report)) + "\n"


def _kinds_table(report: dict) -> list[str]:
    """Edit distance by kind of error (runtime.text.metrics.error_kinds), input → prediction,
    overall and per channel: which damage the model repairs and which it leaves."""
    groups = [("all", report["overall"]), *report["channels"].items()]
    out = ["", "## Errors by kind (edit distance, input → prediction)", ""]
    out += ["| group | " + " | ".join(KINDS) + " |", "|---|" + "---:|" * len(KINDS)]
    for label, scores in groups:
        before, after = scores["error_kinds_before"], scores["error_kinds_after"]
        out.append(f"| {label} | " + " | ".join(f"{before[k]} → {after[k]}" for k in KINDS) + " |")
    return out


def sample_rows(
    rows: Sequence[dict], predictions: Sequence[str], *, seed: int, size: int = SAMPLE_ROWS
) -> list[int]:
    """Indices of rows to show: the worst harms first, then a seeded random pick of the rest."""
    harm = {}
    for i, (row, prediction) in enumerate(zip(rows, predictions, strict=True)):
        reference = normalize(row["target"])
        before = Levenshtein.distance(normalize(row["input"]), reference)
        after = Levenshtein.distance(normalize(prediction), reference)
        harm[i] = after - before
    harmed = sorted((i for i in harm if harm[i] > 0), key=lambda i: (-harm[i], i))[:size]
    others = [i for i in range(len(rows)) if harm[i] <= 0]
    picked = random.Random(seed).sample(others, min(len(others), size - len(harmed)))
    return harmed + sorted(picked)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 80rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.summary thead th { background: #f2f2f2; }
.sample { border-top: 1px solid #ccc; padding: 0.6rem 0; }
.sample .facts { color: #666; font-size: 0.9rem; margin: 0 0 0.3rem; }
.sample .harmed { color: #b00020; font-weight: bold; }
.sample table { margin: 0; width: 100%; }
.sample th { width: 9rem; font-weight: normal; color: #666; border: none; }
.sample td { border: none; text-align: left; }
.text { font-family: "Khmer OS", "Noto Sans Khmer", "Noto Serif Khmer", sans-serif;
        font-size: 1.2rem; white-space: pre-wrap; }
del.change { color: #b00020; background: #fde8e8; }
ins.change { color: #146c2e; background: #e3f6e8; text-decoration: none; }
del.residual { background: #ffe9b3; }
ins.residual { color: #1f4fa8; background: #e6eeff; text-decoration: underline dotted; }
"""


def _marked(source: str, spans: list[Span], kind: str) -> str:
    """`source` escaped, each span shown as its removed text struck out and its new text added;
    spaces inside edits are drawn as ␣ so that a removed or added space can be seen."""
    parts = []
    position = 0
    for span in spans:
        parts.append(html.escape(source[position : span.start]))
        for tag, text in (("del", source[span.start : span.end]), ("ins", span.replacement)):
            if text:
                shown = html.escape(text.replace(" ", "␣"))
                parts.append(f'<{tag} class="{kind}">{shown}</{tag}>')
        position = span.end
    parts.append(html.escape(source[position:]))
    return "".join(parts)


def _sample_html(index: int, row: dict, prediction: str) -> str:
    input_text, prediction, reference = map(normalize, (row["input"], prediction, row["target"]))
    before = Levenshtein.distance(input_text, reference)
    after = Levenshtein.distance(prediction, reference)
    length = len(reference)
    facts = [f"row {index + 1}", row["channel"]]  # = its line in predictions.jsonl
    facts += [f"{key}={row[key]}" for key in GROUP_KEYS if key in row]
    facts.append(f"CER {_percent(_rate(before, length))} → {_percent(_rate(after, length))}")
    harmed = ' <span class="harmed">harmed</span>' if after > before else ""
    lines = (
        ("model's edits", _marked(input_text, edit_spans(input_text, prediction), "change")),
        ("left to fix", _marked(prediction, edit_spans(prediction, reference), "residual")),
        ("reference", html.escape(reference)),
    )
    body = "".join(
        f'<tr><th>{label}</th><td class="text" lang="km">{text}</td></tr>' for label, text in lines
    )
    return (
        f'<div class="sample"><p class="facts">{html.escape(" · ".join(facts))}{harmed}</p>'
        f"<table>{body}</table></div>"
    )


def render_html(report: dict, rows: Sequence[dict], *, seed: int) -> str:
    """A self-contained page (inline CSS, no scripts, no external assets)."""
    title = html.escape(_title(report))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p><strong>{html.escape(headline(report))}</strong></p>",
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in _identity_lines(report)),
        "</ul>",
    ]
    header = "".join(f"<th>{html.escape(column)}</th>" for column in _COLUMNS)
    for section_title, table_rows in _sections(report):
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"
            for cells in table_rows
        )
        out.append(
            f'<h2>{html.escape(section_title)}</h2><table class="summary"><thead><tr>{header}'
            f"</tr></thead><tbody>{body}</tbody></table>"
        )
    picked = sample_rows(rows, report["predictions"], seed=seed)
    out += [
        f"<h2>Sample of corrections ({len(picked)} rows: harmed rows first, then random)</h2>",
        '<p>Model\'s edits: the input with what the model <del class="change">removed</del> and '
        '<ins class="change">added</ins>. Left to fix: the prediction with what differs from '
        'the reference, <del class="residual">wrong</del> and <ins class="residual">missing'
        "</ins>. ␣ marks a space inside an edit.</p>",
    ]
    out += [_sample_html(i, rows[i], report["predictions"][i]) for i in picked]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_reports(
    report: dict, rows: Sequence[dict], out_dir: Path, *, seed: int = 0
) -> dict[str, Path]:
    """report.json (all but the predictions), report.md, report.html and predictions.jsonl."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {key: value for key, value in report.items() if key != "predictions"}
    paths = {name: out_dir / name for name in ("report.json", "report.md", "report.html")}
    paths["predictions.jsonl"] = out_dir / "predictions.jsonl"
    paths["report.json"].write_text(_json(summary), encoding="utf-8")
    paths["report.md"].write_text(render_markdown(report), encoding="utf-8")
    paths["report.html"].write_text(render_html(report, rows, seed=seed), encoding="utf-8")
    with paths["predictions.jsonl"].open("w", encoding="utf-8") as f:
        for row, prediction in zip(rows, report["predictions"], strict=True):
            f.write(json.dumps({**row, "prediction": prediction}, ensure_ascii=False) + "\n")
    return paths


def _json(data) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


# --------------------------------------------------------------------------- comparison


def comparison_rows(reports: Sequence[dict]) -> list[dict]:
    """One flat record per model: the numbers that decide between models trained alike."""
    records = []
    for report in reports:
        info = report["checkpoint"]
        extractors = report["groups"].get("pdf", {}).get("extractor", {})
        records.append(
            {
                "name": info.get("name", info["model"]),
                "model": info["model"],
                "params": info["params"],
                "train_seconds": info["train_seconds"],
                "steps": info["step"],
                "cer_after": report["overall"]["cer_after"],
                "cer_after_by_channel": {
                    channel: scores["cer_after"] for channel, scores in report["channels"].items()
                },
                "pdf_reduction_by_extractor": {
                    extractor: scores["relative_reduction"]
                    for extractor, scores in extractors.items()
                },
                "harm_rate": report["overall"]["harm_rate"],
                "clean_cer_introduced": (
                    report["overall"]["clean_cer_introduced"]
                    if report["overall"]["clean_rows"]
                    else None
                ),
                "chars_per_s": report["timing"]["chars_per_s"],
            }
        )
    return records


def _optional(value, fmt: Callable[..., str]) -> str:
    return "—" if value is None else fmt(value)


def render_comparison(reports: Sequence[dict]) -> str:
    records = comparison_rows(reports)
    channels = sorted({c for record in records for c in record["cer_after_by_channel"]})
    extractors = sorted({e for record in records for e in record["pdf_reduction_by_extractor"]})
    columns = ["model", "params", "train time", "steps", "CER after"]
    columns += [f"CER after {channel}" for channel in channels]
    columns += [f"pdf reduction {extractor}" for extractor in extractors]
    columns += ["harm rate", "clean CER introduced", "chars/s"]
    first = reports[0]  # every model saw the same rows
    intro = f"{first['rows']} rows"
    if "data" in first:
        intro = f"Data {first['data']['path']}, split {first['data']['split']}: {intro}"
    before = ", ".join(
        f"{channel} {_percent(scores['cer_before'])}"
        for channel, scores in first["channels"].items()
    )
    lines = [
        "# Model comparison",
        "",
        f"{intro}; CER before: {before}, all {_percent(first['overall']['cer_before'])}.",
        "",
        "| " + " | ".join(columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1),
    ]
    for record in records:
        cells = [
            f"{record['name']} ({record['model']})",
            f"{record['params']:,}",
            _optional(record["train_seconds"], lambda seconds: f"{seconds / 60:.1f} min"),
            _optional(record["steps"], str),
            _percent(record["cer_after"]),
        ]
        cells += [
            _optional(record["cer_after_by_channel"].get(channel), _percent) for channel in channels
        ]
        cells += [
            _optional(
                record["pdf_reduction_by_extractor"].get(extractor), partial(_percent, digits=1)
            )
            for extractor in extractors
        ]
        cells += [
            _percent(record["harm_rate"], 1),
            _percent(record["clean_cer_introduced"]),
            f"{record['chars_per_s']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(reports: Sequence[dict], out_dir: Path) -> dict[str, Path]:
    """comparison.md and comparison.json side by side in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("comparison.md", "comparison.json")}
    paths["comparison.md"].write_text(render_comparison(reports), encoding="utf-8")
    first = reports[0]
    document = {"data": first.get("data"), "rows": first["rows"]}
    document["models"] = comparison_rows(reports)
    paths["comparison.json"].write_text(_json(document), encoding="utf-8")
    return paths
