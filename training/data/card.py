"""The data card: what a dataset holds and how damaged it is, as card.json and card.md."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from runtime.text.metrics import ScoreBoard

# Row metadata that names where the damage came from; the card breaks counts down by each.
SOURCE_KEYS = ("generator", "font", "extractor", "encoding", "lang", "noise_source")


def _group_stats(rows: list[dict]) -> dict:
    score = ScoreBoard()
    ratios = []
    for row in rows:
        score.add(row["input"], row["input"], row["target"])
        ratios.append(len(row["input"]) / max(1, len(row["target"])))
    ratios.sort()
    stats = score.as_dict()
    mix = stats["error_mix"]
    total = sum(mix.values()) or 1
    return {
        "rows": len(rows),
        "cer_before": round(stats["cer_before"], 4),
        "error_mix": {op: round(n / total, 3) for op, n in mix.items()},
        "length_ratio": {
            "min": round(ratios[0], 3),
            "p5": round(ratios[len(ratios) // 20], 3),
            "p95": round(ratios[len(ratios) * 19 // 20], 3),
            "max": round(ratios[-1], 3),
        },
    }


def describe(rows: Iterable[dict]) -> dict:
    """Stats overall, per channel, and per channel × each source key present in the rows."""
    rows = list(rows)
    if not rows:
        return {"rows": 0}
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["channel"]].append(row)
        for key in SOURCE_KEYS:
            if key in row:
                groups[f"{row['channel']} / {key}={row[key]}"].append(row)
    return {
        "rows": len(rows),
        "overall": _group_stats(rows),
        "groups": {name: _group_stats(group) for name, group in sorted(groups.items())},
    }


def write_card(out_dir: Path, card: dict) -> None:
    out_dir = Path(out_dir)
    (out_dir / "card.json").write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n")
    (out_dir / "card.md").write_text(render_markdown(card))


def render_markdown(card: dict) -> str:
    lines = [f"# Data card: {card['name']}", ""]
    lines += [
        f"- corpus: `{card['corpus']}`",
        f"- seed: {card['seed']}, workers: {card['workers']}",
    ]
    lines += [f"- built in {card['seconds']:.0f} s", ""]
    lines += ["## Input", "", "| what | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["input"].items()]
    if card.get("channel_sentences"):
        allotted = card["channel_sentences"]
        names = list(next(iter(allotted.values())))
        lines += ["", "## Sentences per channel (shares of each split, then caps)", ""]
        lines += ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for split, counts in allotted.items():
            lines.append(f"| {split} | " + " | ".join(str(counts[n]) for n in names) + " |")
    lines += ["", "## Channels", "", "| channel | rows | seconds | rows/s |", "|---|---|---|---|"]
    for name, info in card["channels"].items():
        lines.append(
            f"| {name} | {info['rows']} | {info['seconds']:.1f} | {info['rows_per_s']:.0f} |"
        )
    notes = [note for info in card["channels"].values() for note in info["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    if card.get("noise_model"):
        lines += ["", "## Synthetic noise model (fitted on the train split's real pairs)", ""]
        lines += ["| source | rows | CER | unchanged clusters | rows with moved runs |"]
        lines += ["|---|---|---|---|---|"]
        for source, fit in card["noise_model"].items():
            lines.append(
                f"| {source} | {fit['rows']} | {fit['cer']:.2%} | {fit['unchanged_share']:.2%} "
                f"| {fit['moved_rows_share']:.2%} |"
            )
    for split, stats in card["splits"].items():
        if not stats["rows"]:
            continue
        lines += ["", f"## Split `{split}`: {stats['rows']} rows", ""]
        lines += [
            "| group | rows | CER before | sub / ins / del | length ratio min · p5 · p95 · max |",
            "|---|---|---|---|---|",
        ]
        for name, g in [("all", stats["overall"]), *stats["groups"].items()]:
            mix, lr = g["error_mix"], g["length_ratio"]
            lines.append(
                f"| {name} | {g['rows']} | {g['cer_before']:.2%} | "
                f"{mix['substitution']:.2f} / {mix['insertion']:.2f} / {mix['deletion']:.2f} | "
                f"{lr['min']} · {lr['p5']} · {lr['p95']} · {lr['max']} |"
            )
    return "\n".join(lines) + "\n"
