"""Channel ``ocr``: clean Khmer rendered to a line image and read back by Tesseract.

Each sentence is rendered with Tesseract's ``text2image`` in a real Khmer font (fonts-khmeros,
Noto), with its photocopier-style degradation (speckle, dilation/erosion, rotation) and exposure,
then read by ``tesseract -l khm`` (``khm+eng`` when the sentence has Latin letters). Font, size,
resolution and degradation are drawn per sentence from a hash of (seed, sentence), so a sentence
always gets the same settings for a seed whatever batch it comes in, and the cache stays valid.

Results are cached as JSON under ``cache_dir/ocr/`` keyed by a hash of the sentence, the settings
and the Tesseract version, so a rerun only renders new sentences (failures are not cached: a rerun
tries them again). Slow: about 5 sentences per second per core on an idle machine.

Tesseract reads with ``--psm 6`` (a block): the sentence is rendered on one line, but should
text2image wrap a long one, every line is still read, and the lines are joined with a space.
Rows read back with CER above ``MAX_CER`` are dropped (noted): there is nothing left to correct.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from tqdm import tqdm

from runtime.files import write_atomic
from runtime.text.metrics import cer
from training.data.pool import TaskPool
from training.data.rows import ChannelResult, MissingTool, make_row

FONTS_DIR = Path("/usr/share/fonts/truetype")
# Body-text Khmer fonts text2image may use, with their weights in the draw. The Khmer OS fonts
# also cover Latin; Noto Sans/Serif Khmer do not, so sentences with Latin fall back to
# FALLBACK_FONT (a sentence no font covers, emoji say, is skipped with a note).
FONTS: tuple[tuple[str, int], ...] = (
    ("Khmer OS", 3),
    ("Khmer OS Siemreap", 3),
    ("Khmer OS Battambang", 2),
    ("Khmer OS Content", 1),
    ("Khmer OS System", 1),
    ("Noto Sans Khmer", 2),
    ("Noto Serif Khmer", 1),
)
FALLBACK_FONT = "Khmer OS"
# The glyph size in pixels (ptsize × resolution / 72) drives Tesseract's error rate: about 1-3%
# CER from 20 px per em up, 5-30% at 14-17 px, 20-80% at 11 px (measured on fonts-khmeros and
# Noto with text2image's degradation). The draw mixes clean and hard lines.
PTSIZES = (9, 10, 11, 12, 14)
RESOLUTIONS = (100, 120, 150, 150, 200, 300)
EXPOSURES = (-1, 0, 0, 1)
DEGRADE_P = 0.8  # text2image's photocopier model: speckle, dilation/erosion, exposure, rotation
DISTORT_P = 0.25  # text2image's noise + blur (never inverted)
MAX_CER = 0.6  # rows read back worse than this are skipped: nothing left to correct from
CACHE_VERSION = 1
_INSTALL = "apt-get install tesseract-ocr tesseract-ocr-khm"
_LATIN = re.compile(r"[A-Za-z]")
_DROPPED = re.compile(r"Dropped (\d+) uncovered characters")
_TIMEOUT_S = 120


@dataclass(frozen=True)
class Settings:
    """How one sentence is rendered and read."""

    font: str
    ptsize: int
    resolution: int
    exposure: int
    degrade: bool
    rotate: bool
    distort: bool
    lang: str
    psm: int = 6


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # one process per worker, no thread contention
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, **kwargs)


@lru_cache(maxsize=1)
def _tesseract_version() -> str:
    out = _run(["tesseract", "--version"])
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "tesseract (unknown version)"


def _languages() -> set[str]:
    out = _run(["tesseract", "--list-langs"])
    lines = (out.stdout + out.stderr).splitlines()
    return {line.strip() for line in lines[1:] if line.strip() and " " not in line.strip()}


@lru_cache(maxsize=4)
def _available_fonts(fonts_dir: str) -> frozenset[str]:
    with tempfile.TemporaryDirectory(prefix="kmocr-") as tmp:
        out = _run(
            [
                "text2image",
                "--list_available_fonts",
                "--fonts_dir",
                fonts_dir,
                "--fontconfig_tmpdir",
                tmp,
            ]
        )
    names = re.findall(r"^\s*\d+:\s*(.+?)\s*$", out.stdout + out.stderr, flags=re.MULTILINE)
    return frozenset(names)


def _check_tools() -> tuple[list[str], set[str]]:
    """Raise MissingTool if OCR cannot run; return (usable fonts, tesseract languages)."""
    for tool in ("text2image", "tesseract"):
        if shutil.which(tool) is None:
            raise MissingTool(f"{tool} not found: {_INSTALL}")
    langs = _languages()
    if "khm" not in langs:
        raise MissingTool(
            "tesseract has no Khmer model (khm.traineddata): apt-get install tesseract-ocr-khm"
        )
    available = _available_fonts(str(FONTS_DIR))
    fonts = [name for name, _ in FONTS if name in available]
    if not fonts:
        raise MissingTool(
            f"text2image finds no Khmer font in {FONTS_DIR}: "
            "apt-get install fonts-khmeros fonts-noto-core"
        )
    return fonts, langs


def unavailable() -> list[str]:
    """Empty when OCR can run; else the note naming what to install (asked before sharing out)."""
    try:
        _check_tools()
    except MissingTool as exc:
        return [str(exc)]
    return []


def settings_for(sentence: str, seed: int, fonts: Sequence[str], langs: set[str]) -> Settings:
    """The rendering settings of one sentence: a pure function of (seed, sentence, fonts)."""
    digest = hashlib.sha256(f"ocr\0{seed}\0{sentence}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    weights = dict(FONTS)
    font = rng.choices(list(fonts), weights=[weights.get(f, 1) for f in fonts])[0]
    degrade = rng.random() < DEGRADE_P
    latin = bool(_LATIN.search(sentence)) and "eng" in langs
    return Settings(
        font=font,
        ptsize=rng.choice(PTSIZES),
        resolution=rng.choice(RESOLUTIONS),
        exposure=rng.choice(EXPOSURES),
        degrade=degrade,
        rotate=degrade and rng.random() < 0.5,
        distort=rng.random() < DISTORT_P,
        lang="khm+eng" if latin else "khm",
    )


def _cache_key(sentence: str, settings: Settings, version: str) -> str:
    blob = json.dumps(
        {"v": CACHE_VERSION, "sentence": sentence, "settings": asdict(settings), "tool": version},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "ocr" / key[:2] / f"{key}.json"


def _read_cache(path: Path) -> dict | None:
    try:
        with path.open(encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("text"), str) else None


class RenderError(RuntimeError):
    """text2image or tesseract failed on one sentence."""


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _render(sentence: str, settings: Settings, font: str, workdir: Path) -> Path:
    """Render the sentence to a TIFF; raise RenderError (also when glyphs would be dropped)."""
    em_px = settings.ptsize * settings.resolution / 72
    margin = int(em_px)
    text_file = workdir / "line.txt"
    text_file.write_text(sentence + "\n", encoding="utf-8")
    base = workdir / "line"
    cmd = [
        "text2image",
        f"--text={text_file}",
        f"--outputbase={base}",
        f"--font={font}",
        f"--fonts_dir={FONTS_DIR}",
        f"--fontconfig_tmpdir={workdir}",
        f"--ptsize={settings.ptsize}",
        f"--resolution={settings.resolution}",
        f"--exposure={settings.exposure}",
        f"--degrade_image={'true' if settings.degrade else 'false'}",
        f"--rotate_image={'true' if settings.rotate else 'false'}",
        f"--distort_image={'true' if settings.distort else 'false'}",
        "--invert=false",
        "--strip_unrenderable_words=false",
        f"--xsize={int(len(sentence) * em_px * 0.9) + 2 * margin + 200}",
        f"--ysize={int(em_px * 6) + 2 * margin}",
        f"--margin={margin}",
        f"--leading={int(em_px)}",
    ]
    out = _run(cmd, timeout=_TIMEOUT_S)
    image = base.with_suffix(".tif")
    if out.returncode != 0 or not image.exists():
        raise RenderError(f"text2image failed (exit {out.returncode}): {_tail(out.stderr)}")
    dropped = _DROPPED.search(out.stderr)
    if dropped and int(dropped.group(1)) > 0:
        raise RenderError(f"font {font!r} lacks glyphs for {dropped.group(1)} characters")
    return image


def _read(image: Path, settings: Settings) -> str:
    cmd = ["tesseract", str(image), "stdout", "-l", settings.lang, "--psm", str(settings.psm)]
    out = _run(cmd, timeout=_TIMEOUT_S)
    if out.returncode != 0:
        raise RenderError(f"tesseract failed (exit {out.returncode}): {_tail(out.stderr)}")
    # One line of text was rendered; should text2image have wrapped it, rejoin the lines.
    return " ".join(line.strip() for line in out.stdout.splitlines() if line.strip())


def render_and_read(
    sentence: str, settings: Settings, fallback_font: str | None = FALLBACK_FONT
) -> tuple[str, str]:
    """OCR text of the sentence and the font used: ``fallback_font`` if the drawn font failed
    (Noto Khmer has no Latin letters, for one)."""
    fonts = [settings.font]
    if fallback_font and fallback_font != settings.font:
        fonts.append(fallback_font)
    errors = []
    with tempfile.TemporaryDirectory(prefix="kmocr-") as tmp:
        for font in fonts:
            try:
                image = _render(sentence, settings, font, Path(tmp))
            except RenderError as exc:
                errors.append(str(exc))
                continue
            return _read(image, settings), font
    raise RenderError("; ".join(errors))


def _job(
    sentence: str, settings: Settings, fallback_font: str | None
) -> tuple[str | None, str, str]:
    """Worker: (text or None, font used, error message)."""
    try:
        text, font = render_and_read(sentence, settings, fallback_font)
    except (RenderError, subprocess.TimeoutExpired, OSError) as exc:
        return None, settings.font, str(exc)
    return text, font, ""


def make_rows(
    sentences: Sequence[str],
    *,
    seed: int,
    cache_dir: Path,
    workers: int = os.cpu_count() or 1,
    progress: bool = True,
) -> ChannelResult:
    """One row per sentence Tesseract read back: input the OCR text, target the sentence."""
    result = ChannelResult()
    if not sentences:
        return result
    fonts, langs = _check_tools()
    for name, _ in FONTS:
        if name not in fonts:
            result.notes.append(
                f"font {name!r} not found by text2image in {FONTS_DIR}: skipped "
                "(apt-get install fonts-khmeros fonts-noto-core)"
            )
    if "eng" not in langs:
        result.notes.append(
            "tesseract has no English model: Latin text read with khm only "
            "(apt-get install tesseract-ocr-eng)"
        )
    version = _tesseract_version()
    fallback = FALLBACK_FONT if FALLBACK_FONT in fonts else None

    plans: list[tuple[str, Settings, str]] = []
    records: dict[str, dict] = {}
    todo: dict[str, tuple[str, Settings]] = {}
    for sentence in sentences:
        settings = settings_for(sentence, seed, fonts, langs)
        key = _cache_key(sentence, settings, version)
        plans.append((sentence, settings, key))
        if key in records or key in todo:
            continue
        cached = _read_cache(_cache_path(cache_dir, key))
        if cached is not None:
            records[key] = cached
        else:
            todo[key] = (sentence, settings)

    failures: dict[str, str] = {}

    def finish(key: str, outcome: tuple[str | None, str, str]) -> None:
        text, font, error = outcome
        settings = todo[key][1]
        if text is None:
            failures[key] = error
            return
        record = {"text": text, "font": font, "settings": asdict(settings), "tool": version}
        write_atomic(_cache_path(cache_dir, key), json.dumps(record, ensure_ascii=False))
        records[key] = record

    with (
        TaskPool(min(workers, len(todo))) as pool,
        tqdm(total=len(todo), desc="ocr", unit="sent", disable=not progress) as bar,
    ):
        for key, (sentence, settings) in todo.items():
            pool.submit(_job, sentence, settings, fallback, tag=key)
        for key, outcome, error in pool.finished():  # error: the task raised or its worker died
            finish(key, outcome if error is None else (None, todo[key][1].font, error))
            bar.update()

    empty = hopeless = 0
    for sentence, settings, key in plans:
        record = records.get(key)
        if record is None:
            continue
        if not record["text"].strip():
            empty += 1
            continue
        if cer(record["text"], sentence) > MAX_CER:
            hopeless += 1
            continue
        result.rows.append(
            make_row(
                record["text"],
                sentence,
                "ocr",
                engine="tesseract",
                lang=settings.lang,
                font=record.get("font", settings.font),
                ptsize=settings.ptsize,
            )
        )
    if failures:
        first = next(failures[key] for _, _, key in plans if key in failures)
        result.notes.append(
            f"{len(failures)} sentences could not be rendered or read and were skipped "
            f"(first: {first})"
        )
    if empty:
        result.notes.append(f"{empty} sentences came back empty from tesseract and were skipped")
    if hopeless:
        result.notes.append(
            f"{hopeless} sentences read back with CER above {MAX_CER} and were skipped"
        )
    return result
