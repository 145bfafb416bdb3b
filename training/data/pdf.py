"""The ``pdf`` channel: real PDF round trips.

Clean sentences are typeset into multi-page PDFs by real generators (fpdf2 with HarfBuzz
shaping, typst, LibreOffice) in real Khmer fonts, ONE SENTENCE PER PAGE, and every page is
read back by real extractors (poppler ``pdftotext`` plain and ``-layout``, pypdf,
pdfminer.six). Each (page, extractor) gives a row ``input = extracted page text`` (raw: only
trailing newline / page-break noise is stripped), ``target = the sentence``.

Work is split into render tasks (one batch of ``pages_per_pdf`` sentences -> one PDF) and
extract tasks (one PDF x one extractor), run on a ``TaskPool`` (training/data/pool.py). Both
are cached under ``cache_dir/pdf/``: PDFs by a content hash of everything that shapes them,
extraction results per (PDF hash, extractor) as JSON, so a rerun only does new work.

A batch whose PDF has a page count different from its sentence count (a sentence overflowed
its page) is re-rendered one PDF per sentence, so no row ever pairs one sentence's target
with another sentence's text. A batch whose PDF does not embed the requested font (the
generator silently substituted another one) is dropped with a note.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import multiprocessing
import multiprocessing.util
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache, lru_cache, partial
from pathlib import Path

from runtime.extract import EXTRACTORS, SURROGATE, extractor_missing, extractor_version
from runtime.extract import extract_pdfminer as _extract_pdfminer
from runtime.extract import extract_pdftotext as _extract_pdftotext
from runtime.extract import extract_pypdf as _extract_pypdf
from runtime.extract import package_version as _version
from runtime.files import write_atomic
from training.data.pool import TaskPool
from training.data.rows import ChannelResult, make_row

GENERATORS: tuple[str, ...] = ("fpdf2", "typst", "libreoffice")

# Body-text Khmer fonts used when ``fonts`` is not given (the decorative fonts-khmeros faces,
# Muol, Bokor, Fasthand, ..., can still be asked for by name).
DEFAULT_FONTS: tuple[str, ...] = (
    "Khmer OS",
    "Khmer OS Battambang",
    "Khmer OS Siemreap",
    "Khmer OS Content",
    "Khmer OS System",
    "Noto Sans Khmer",
    "Noto Serif Khmer",
)

# Bump when the way a PDF is typeset changes (invalidates cached PDFs).
RENDERER_VERSION = "pdf-render-1"
# Bump when the way text is read from a PDF changes (invalidates cached extractions).
EXTRACTOR_VERSION = "pdf-extract-1"

_FONT_DIRS = (Path("/usr/share/fonts/truetype/khmeros"), Path("/usr/share/fonts/truetype/noto"))
_LATIN_FALLBACKS = (
    Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"),
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
)
_PAPERS = {"a4": (210.0, 297.0), "letter": (215.9, 279.4)}
_PT_MM = 25.4 / 72

_GENERATOR_HINTS = {
    "fpdf2": "pip install fpdf2 uharfbuzz",
    "typst": "pip install typst",
    "libreoffice": "apt-get install libreoffice-writer-nogui",
}


def _font_package(family: str) -> str:
    return "fonts-noto-core" if family.startswith("Noto") else "fonts-khmeros"


# ---------------------------------------------------------------------------------------------
# Discovery: fonts, generators, extractors


@lru_cache(maxsize=1)
def _discover_fonts() -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    fc_list = shutil.which("fc-list")
    if fc_list:
        try:
            out = subprocess.run(
                [fc_list, "--format", "%{family[0]}\t%{style[0]}\t%{file}\n", ":lang=km"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        regular: dict[str, str] = {}
        other: dict[str, str] = {}
        for line in sorted(out.splitlines()):
            parts = line.split("\t")
            if len(parts) != 3 or not parts[2].lower().endswith((".ttf", ".otf")):
                continue
            family, style, file = parts
            bucket = regular if style.lower() in ("regular", "book", "normal") else other
            bucket.setdefault(family, file)
        found = {**other, **regular}
    if not found:  # no fontconfig: look in the Debian package directories
        for directory in _FONT_DIRS:
            for path in sorted(directory.glob("*.ttf")):
                if "Bold" in path.stem or (
                    path.stem.startswith("Noto") and "Khmer" not in path.stem
                ):
                    continue
                family = _font_names(str(path))[0]
                if family:
                    found.setdefault(family, str(path))
    return tuple(sorted(found.items()))


def available_fonts() -> dict[str, Path]:
    """Installed Khmer fonts: family name -> font file (regular style)."""
    return {family: Path(file) for family, file in _discover_fonts()}


@cache
def _font_names(path: str) -> tuple[str, str]:
    """(family name, PostScript name) read from the font's name table."""
    from fontTools.ttLib import TTFont

    try:
        font = TTFont(path, lazy=True, fontNumber=0)
        names = font["name"]
        family = names.getDebugName(16) or names.getDebugName(1) or ""
        return family, names.getDebugName(6) or ""
    except Exception:  # an unreadable font file: no names
        return "", ""


@cache
def _file_sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _latin_fallback() -> str | None:
    for path in _LATIN_FALLBACKS:
        if path.is_file():
            return str(path)
    return None


def _soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def _generator_missing(name: str) -> str | None:
    """None when the generator can run, else the note naming what to install."""
    if name == "fpdf2":
        for module, package in (("fpdf", "fpdf2"), ("uharfbuzz", "uharfbuzz")):
            if importlib.util.find_spec(module) is None:
                return f"fpdf2 generator skipped, {package} not installed: {_GENERATOR_HINTS[name]}"
        if importlib.util.find_spec("fontTools") is None:
            return "fpdf2 generator skipped, fonttools not installed: pip install fonttools"
        return None
    if name == "typst":
        if importlib.util.find_spec("typst") is None:
            return f"typst generator skipped, typst not installed: {_GENERATOR_HINTS[name]}"
        return None
    if _soffice() is None:
        return f"libreoffice not found (no soffice on PATH): {_GENERATOR_HINTS[name]}"
    return None


def unavailable() -> list[str]:
    """Why the channel cannot run at all with its default generators, extractors and fonts.

    Empty when it can (some generator, some extractor and some default font are there); else
    the notes naming what to install. The data build asks before it shares out sentences.
    """
    notes = []
    installed = available_fonts()
    if not any(family in installed for family in DEFAULT_FONTS):
        notes.append("no Khmer font found: apt-get install fonts-khmeros fonts-noto-core")
    generators = [_generator_missing(name) for name in GENERATORS]
    extractors = [extractor_missing(name) for name in EXTRACTORS]
    for reasons in (generators, extractors):
        if all(reasons):
            notes.extend(dict.fromkeys(reasons))
    return notes


def _generator_version(name: str) -> str:
    if name == "fpdf2":
        return f"fpdf2={_version('fpdf2')};uharfbuzz={_version('uharfbuzz')}"
    if name == "typst":
        return f"typst={_version('typst')}"
    soffice = _soffice()
    if soffice:
        versionrc = Path(os.path.realpath(soffice)).parent / "versionrc"
        if versionrc.is_file():
            return "libreoffice:" + hashlib.sha256(versionrc.read_bytes()).hexdigest()[:16]
    return "libreoffice"


# ---------------------------------------------------------------------------------------------
# Page setups and batch plans


@dataclass(frozen=True)
class PageSetup:
    """Everything about a page but its text; chosen per batch from the seed."""

    paper: str  # "a4" | "letter"
    width_mm: float
    height_mm: float
    margin_top_mm: float
    margin_bottom_mm: float
    margin_side_mm: float
    font_size: int  # points
    line_spacing: float  # 1.0 = single
    align: str  # "left" | "justify"


def _page_setup(seed: int, batch: int) -> PageSetup:
    rng = random.Random(f"khmer-correct/pdf/{seed}/{batch}")
    paper = rng.choice(sorted(_PAPERS))
    width, height = _PAPERS[paper]
    return PageSetup(
        paper=paper,
        width_mm=width,
        height_mm=height,
        margin_top_mm=rng.choice((15.0, 20.0, 25.0)),
        margin_bottom_mm=rng.choice((15.0, 20.0, 25.0)),
        margin_side_mm=rng.choice((15.0, 20.0, 25.0, 30.0)),
        font_size=rng.randint(11, 16),
        line_spacing=rng.choice((1.0, 1.15, 1.5)),
        align=rng.choice(("left", "justify")),
    )


def _combos(generators: Sequence[str], fonts: Sequence[str], seed: int) -> list[tuple[str, str]]:
    """Every generator x font pair once; batch i takes pair i mod len.

    Generators alternate batch by batch (so even a few batches cover every generator) and
    fonts are visited in a seed-shuffled order.
    """
    fonts = list(fonts)
    random.Random(f"khmer-correct/pdf-fonts/{seed}").shuffle(fonts)
    n_gen = len(generators)
    return [(generators[k % n_gen], fonts[k // n_gen]) for k in range(n_gen * len(fonts))]


def _doc_hash(config: dict, sentences: Sequence[str]) -> str:
    payload = json.dumps({"config": config, "sentences": list(sentences)}, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Small file helpers


def _read_json(path: Path) -> dict | None:
    try:
        with path.open(encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _norm_font_name(name: str) -> str:
    name = re.sub(r"^[A-Z]{6}\+", "", name.lstrip("/"))
    name = re.sub(r"-Identity-[HV]$", "", name)
    return re.sub(r"[^0-9a-z]", "", name.lower())


# ---------------------------------------------------------------------------------------------
# Renderers (run in worker processes)


def _render_fpdf2(sentences: Sequence[str], config: dict) -> bytes:
    from fpdf import FPDF

    # Missing-glyph and font-subsetting warnings are expected and not actionable.
    logging.getLogger("fpdf").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    setup = config["setup"]
    pdf = FPDF(unit="mm", format=(setup["width_mm"], setup["height_mm"]))
    side = setup["margin_side_mm"]
    pdf.set_margins(left=side, top=setup["margin_top_mm"], right=side)
    pdf.set_auto_page_break(True, margin=setup["margin_bottom_mm"])
    pdf.add_font("body", "", config["font_path"])
    fallbacks = []
    if config.get("fallback_path"):
        pdf.add_font("latin", "", config["fallback_path"])
        fallbacks.append("latin")
    pdf.set_font("body", size=setup["font_size"])
    if fallbacks:
        pdf.set_fallback_fonts(fallbacks)
    pdf.set_text_shaping(True)
    # Khmer stacks above and below the line: 1.3 x size is a tight single spacing.
    line_mm = setup["font_size"] * 1.3 * setup["line_spacing"] * _PT_MM
    align = "J" if setup["align"] == "justify" else "L"
    for sentence in sentences:
        pdf.add_page()
        pdf.multi_cell(0, line_mm, sentence, align=align)
    return bytes(pdf.output())


_TYPST_SOURCE = """\
#let cfg = json(bytes(sys.inputs.at("cfg")))
#set page(
  width: cfg.width * 1mm,
  height: cfg.height * 1mm,
  margin: (top: cfg.top * 1mm, bottom: cfg.bottom * 1mm, x: cfg.side * 1mm),
)
#set text(font: cfg.font, size: cfg.size * 1pt, lang: "km")
#set par(justify: cfg.justify, leading: cfg.leading * 1em)
#for (i, s) in cfg.sentences.enumerate() {
  if i > 0 { pagebreak() }
  par(s)
}
"""


def _render_typst(sentences: Sequence[str], config: dict) -> bytes:
    import typst

    setup = config["setup"]
    cfg = {
        "width": setup["width_mm"],
        "height": setup["height_mm"],
        "top": setup["margin_top_mm"],
        "bottom": setup["margin_bottom_mm"],
        "side": setup["margin_side_mm"],
        "font": config["family"],
        "size": setup["font_size"],
        "justify": setup["align"] == "justify",
        "leading": round(0.65 * setup["line_spacing"], 3),
        "sentences": list(sentences),
    }
    font_dirs = sorted({str(Path(config["font_path"]).parent)})
    return bytes(
        typst.compile(
            _TYPST_SOURCE.encode("utf-8"),
            font_paths=font_dirs,
            sys_inputs={"cfg": json.dumps(cfg, ensure_ascii=False)},
        )
    )


def _xml_escape(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace('"', "&quot;").replace("'", "&apos;")
    # Characters XML 1.0 cannot carry at all.
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", text)


def _fodt(sentences: Sequence[str], config: dict) -> str:
    """A flat ODT: one paragraph per sentence, a page break before every one but the first."""
    setup = config["setup"]
    family = _xml_escape(config["family"])
    size = f"{setup['font_size']}pt"
    align = "justify" if setup["align"] == "justify" else "start"
    spacing = f"{round(setup['line_spacing'] * 100)}%"
    font = (
        f'style:font-name="{family}" fo:font-size="{size}" '
        f'style:font-name-asian="{family}" style:font-size-asian="{size}" '
        f'style:font-name-complex="{family}" style:font-size-complex="{size}" '
        'fo:language="km" fo:country="KH" style:language-complex="km" style:country-complex="KH"'
    )
    paragraphs = "\n".join(
        f'<text:p text:style-name="{"P1" if i == 0 else "P2"}">{_xml_escape(s)}</text:p>'
        for i, s in enumerate(sentences)
    )
    para_props = f'fo:text-align="{align}" fo:line-height="{spacing}"'
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0"
 xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"
 office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.text">
<office:font-face-decls>
 <style:font-face style:name="{family}" svg:font-family="&apos;{family}&apos;"/>
</office:font-face-decls>
<office:styles>
 <style:default-style style:family="paragraph">
  <style:text-properties {font}/>
 </style:default-style>
</office:styles>
<office:automatic-styles>
 <style:page-layout style:name="pm1">
  <style:page-layout-properties fo:page-width="{setup["width_mm"]}mm"
   fo:page-height="{setup["height_mm"]}mm" fo:margin-top="{setup["margin_top_mm"]}mm"
   fo:margin-bottom="{setup["margin_bottom_mm"]}mm" fo:margin-left="{setup["margin_side_mm"]}mm"
   fo:margin-right="{setup["margin_side_mm"]}mm"/>
 </style:page-layout>
 <style:style style:name="P1" style:family="paragraph">
  <style:paragraph-properties {para_props}/>
 </style:style>
 <style:style style:name="P2" style:family="paragraph">
  <style:paragraph-properties {para_props} fo:break-before="page"/>
 </style:style>
</office:automatic-styles>
<office:master-styles>
 <style:master-page style:name="Standard" style:page-layout-name="pm1"/>
</office:master-styles>
<office:body><office:text>
{paragraphs}
</office:text></office:body>
</office:document>
"""


_LO_PROFILE: dict[int, str] = {}


def _lo_profile() -> str:
    """A LibreOffice user profile private to this process (parallel soffice runs collide)."""
    pid = os.getpid()
    if pid not in _LO_PROFILE:
        profile = tempfile.mkdtemp(prefix=f"khmer-correct-lo-{pid}-")
        _LO_PROFILE[pid] = profile
        multiprocessing.util.Finalize(
            None, shutil.rmtree, args=(profile,), kwargs={"ignore_errors": True}, exitpriority=1
        )
    return _LO_PROFILE[pid]


def _render_libreoffice(docs: Sequence[Sequence[str]], config: dict) -> list[bytes | str]:
    """Convert all docs in one soffice run (start-up dominates LibreOffice's cost)."""
    soffice = config["soffice"]
    with tempfile.TemporaryDirectory(prefix="khmer-correct-lo-job-") as work:
        sources = []
        for i, sentences in enumerate(docs):
            source = Path(work) / f"doc{i:05d}.fodt"
            source.write_text(_fodt(sentences, config), encoding="utf-8")
            sources.append(str(source))
        outdir = Path(work) / "out"
        cmd = [
            soffice,
            "-env:UserInstallation=" + Path(_lo_profile()).as_uri(),
            "--headless",
            "--invisible",
            "--norestore",
            "--nologo",
            "--convert-to",
            "pdf:writer_pdf_Export",
            "--outdir",
            str(outdir),
            *sources,
        ]
        timeout = 120 + 2 * sum(len(d) for d in docs)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        results: list[bytes | str] = []
        for source in sources:
            pdf = outdir / (Path(source).stem + ".pdf")
            if pdf.is_file():
                results.append(pdf.read_bytes())
            else:
                tail = (proc.stderr or proc.stdout).strip()[-300:]
                results.append(f"soffice exited {proc.returncode} without a PDF: {tail}")
        return results


def _inspect_pdf(path: Path) -> dict:
    """Page count and embedded font names of a rendered PDF."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    fonts: set[str] = set()
    for page in reader.pages:
        resources = page.get("/Resources")
        resources = resources.get_object() if resources is not None else {}
        font_dict = resources.get("/Font") if resources else None
        if font_dict is None:
            continue
        for ref in font_dict.get_object().values():
            base = ref.get_object().get("/BaseFont")
            if base is not None:
                fonts.add(str(base).lstrip("/"))
    return {"pages": len(reader.pages), "fonts": sorted(fonts)}


def _render_task(job: dict) -> dict:
    """Render the job's docs to ``<hash>.pdf`` + ``<hash>.json`` (page count, fonts).

    Returns ``{"docs": [per doc {"hash", "pages", "fonts"} or {"hash", "error"}], "seconds"}``.
    """
    started = time.perf_counter()
    config = job["config"]
    pdf_dir = Path(job["pdf_dir"])
    generator = config["generator"]
    docs = [(digest, sentences) for digest, sentences in job["docs"]]
    blobs: list[bytes | str] = []
    if generator == "libreoffice":
        try:
            blobs = _render_libreoffice([sentences for _, sentences in docs], config)
        except Exception as exc:
            blobs = [f"{type(exc).__name__}: {exc}"[:500]] * len(docs)
    else:
        render = {"fpdf2": _render_fpdf2, "typst": _render_typst}[generator]
        for _, sentences in docs:
            try:
                blobs.append(render(sentences, config))
            except Exception as exc:
                blobs.append(f"{type(exc).__name__}: {exc}"[:500])
    out = []
    for (digest, _), blob in zip(docs, blobs, strict=True):
        if isinstance(blob, str):
            out.append({"hash": digest, "error": f"{generator} failed: {blob}"})
            continue
        pdf_path = pdf_dir / f"{digest}.pdf"
        write_atomic(pdf_path, blob)
        try:
            meta = _inspect_pdf(pdf_path)
        except Exception as exc:
            out.append({"hash": digest, "error": f"unreadable PDF: {exc}"[:500]})
            continue
        write_atomic(pdf_dir / f"{digest}.json", json.dumps(meta).encode("utf-8"))
        out.append({"hash": digest, **meta})
    return {"docs": out, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------
# Extractors (run in worker processes)


def _extract_task(job: dict) -> dict:
    """Read every page of one PDF with one extractor; cache the result as JSON."""
    name, path = job["extractor"], job["pdf"]
    started = time.perf_counter()
    try:
        if name == "pdftotext":
            pages: list[str | None] = list(_extract_pdftotext(path, job["exe"], layout=False))
        elif name == "pdftotext-layout":
            pages = list(_extract_pdftotext(path, job["exe"], layout=True))
        elif name == "pypdf":
            pages = _extract_pypdf(path)
        elif name == "pdfminer":
            pages = list(_extract_pdfminer(path))
        else:
            raise ValueError(f"unknown extractor {name!r}")
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    # Broken UTF-16 in a ToUnicode map can give lone surrogates, which UTF-8 cannot carry.
    pages = [None if p is None else SURROGATE.sub("\ufffd", p) for p in pages]
    result = {"version": job["version"], "pages": pages}
    write_atomic(Path(job["cache"]), json.dumps(result, ensure_ascii=False).encode("utf-8"))
    return {**result, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------
# Orchestration: make_rows checks what it was asked for and plans the batches (_plan_batches),
# _RoundTrips renders and extracts them on a TaskPool, _add_rows turns what came back into rows.


def _strip_trailing(text: str) -> str:
    return text.rstrip(" \t\r\n\f\v")


@dataclass
class _Doc:
    hash: str
    sentences: list[int]  # indices into the batch's sentences; page i <-> sentences[i]
    pages: int | None = None
    error: str | None = None


@dataclass
class _Batch:
    index: int
    sentences: list[str]
    generator: str
    family: str
    setup: PageSetup
    config: dict  # what the renderer needs (paths included)
    hashed: dict  # what the PDF's hash covers
    docs: list[_Doc]
    split: bool = False
    dropped: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"batch {self.index} ({self.generator}/{self.family})"


def _check_names(kind: str, asked: Sequence[str] | None, valid: Sequence[str]) -> list[str]:
    if asked is None:
        return list(valid)
    asked = [asked] if isinstance(asked, str) else list(asked)
    unknown = [name for name in asked if name not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown!r}; valid {kind}s: {', '.join(valid)}")
    return list(dict.fromkeys(asked))


def _check_fonts(asked: Sequence[str] | None, installed: dict[str, Path]) -> list[str]:
    """The font families asked for (``DEFAULT_FONTS`` when None).

    A name neither installed nor a default is a typo, and raises; a default that is not
    installed is only noted later (``_usable``), with the package that has it.
    """
    if asked is None:
        return list(DEFAULT_FONTS)
    wanted = [asked] if isinstance(asked, str) else list(dict.fromkeys(asked))
    unknown = [f for f in wanted if f not in installed and f not in DEFAULT_FONTS]
    if unknown:
        raise ValueError(f"unknown font {unknown!r}; installed Khmer fonts: {', '.join(installed)}")
    return wanted


def _usable(
    names: Sequence[str], missing: Callable[[str], str | None], notes: list[str]
) -> list[str]:
    """The names ``missing(name)`` has no complaint about; the complaints go to ``notes``."""
    usable = []
    for name in names:
        reason = missing(name)
        if reason:
            notes.append(reason)
        else:
            usable.append(name)
    return usable


def _font_missing(family: str) -> str | None:
    if family in available_fonts():
        return None
    return f"font {family!r} not found: apt-get install {_font_package(family)}"


def _font_embedded(fonts: Sequence[str], config: dict) -> bool:
    """Whether the requested face is among the PDF's fonts (generators substitute silently)."""
    family, postscript = _font_names(config["font_path"])
    wanted = {_norm_font_name(n) for n in (config["family"], family, postscript) if n}
    wanted |= {w.removesuffix("regular") for w in wanted}
    return any(_norm_font_name(f) in wanted for f in fonts)


def _font_error(family: str, fonts: Sequence[str]) -> str:
    return (
        f"the PDF does not embed {family!r} (it has: {', '.join(fonts) or 'no fonts'}); "
        f"is the font installed system-wide? apt-get install {_font_package(family)}"
    )


def _plan_batches(
    sentences: Sequence[str],
    *,
    seed: int,
    pages_per_pdf: int,
    generators: Sequence[str],
    fonts: Sequence[str],
) -> list[_Batch]:
    """Batch i: the next ``pages_per_pdf`` sentences, generator x font pair i (all pairs in
    turn), a page setup drawn from (seed, i), and one PDF for all its sentences."""
    installed = available_fonts()
    fallback = _latin_fallback()
    soffice = _soffice()
    gen_versions = {g: _generator_version(g) for g in generators}
    combos = _combos(generators, fonts, seed)
    batches: list[_Batch] = []
    for index, start in enumerate(range(0, len(sentences), pages_per_pdf)):
        generator, family = combos[index % len(combos)]
        setup = _page_setup(seed, index)
        font_path = str(installed[family])
        hashed = {
            "renderer": RENDERER_VERSION,
            "generator": generator,
            "generator_version": gen_versions[generator],
            "family": family,
            "font_sha256": _file_sha(font_path),
            "fallback_sha256": _file_sha(fallback) if fallback and generator == "fpdf2" else None,
            "setup": asdict(setup),
        }
        config = {**hashed, "font_path": font_path, "fallback_path": fallback, "soffice": soffice}
        chunk = list(sentences[start : start + pages_per_pdf])
        doc = _Doc(_doc_hash(hashed, chunk), list(range(len(chunk))))
        batches.append(_Batch(index, chunk, generator, family, setup, config, hashed, [doc]))
    return batches


class _RoundTrips:
    """Renders every batch and reads every PDF back, on a ``TaskPool``.

    A batch goes: render (or find its PDFs cached) -> check the page count and the embedded
    font -> extract each good PDF with each extractor (or find the text cached). Each step is
    a method; each task's tag is the method its result goes to (``run`` calls it), and that
    method queues the next step, so batches move on independently, whatever order the workers
    finish in. A batch whose page count is off goes round again, one PDF per sentence.

    ``texts`` holds what was read, by (PDF hash, extractor); ``stats`` and ``timing`` count
    the work for the closing notes. ``bar`` counts one unit per batch render and one per
    (PDF, extractor), cached, dropped and failed ones included.
    """

    def __init__(self, pool: TaskPool, bar, pdf_dir: Path, extractors: Sequence[str]) -> None:
        self.pool = pool
        self.bar = bar
        self.pdf_dir = pdf_dir
        self.extractors = list(extractors)
        self.pdftotext = shutil.which("pdftotext")
        self.versions = {
            e: f"{EXTRACTOR_VERSION};{extractor_version(e, self.pdftotext)}" for e in extractors
        }
        self.texts: dict[tuple[str, str], list[str | None]] = {}  # (pdf hash, extractor) -> pages
        self.stats = {"rendered": 0, "render_cached": 0, "extracted": 0, "extract_cached": 0}
        self.timing: dict[str, dict[str, list[float]]] = {"render": {}, "extract": {}}

    def run(self, batches: Sequence[_Batch]) -> None:
        for batch in batches:
            self._render(batch)
        for then, value, error in self.pool.finished():
            then({"error": error} if error is not None else value)

    def _text_cache(self, doc_hash: str, extractor: str) -> Path:
        return self.pdf_dir / "text" / f"{doc_hash}.{extractor}.json"

    def _render(self, batch: _Batch) -> None:
        """Take the batch's cached PDFs; send the others to a render task."""
        todo = []
        for doc in batch.docs:
            meta = _read_json(self.pdf_dir / f"{doc.hash}.json")
            if meta and "pages" in meta and (self.pdf_dir / f"{doc.hash}.pdf").is_file():
                self.stats["render_cached"] += 1
                self._doc_rendered(batch, doc, meta)
            else:
                todo.append(doc)
        if not todo:
            self._batch_rendered(batch)
            return
        job = {
            "config": batch.config,
            "pdf_dir": str(self.pdf_dir),
            "docs": [(d.hash, [batch.sentences[i] for i in d.sentences]) for d in todo],
        }
        self.pool.submit(_render_task, job, tag=partial(self._rendered, batch, todo))

    def _rendered(self, batch: _Batch, todo: list[_Doc], value: dict) -> None:
        """A render task's result (see ``_render_task``)."""
        if "error" in value:  # the whole task failed
            value = {"docs": [{"hash": d.hash, **value} for d in todo], "seconds": 0}
        for doc, meta in zip(todo, value["docs"], strict=True):
            self._doc_rendered(batch, doc, meta)
            self.stats["rendered"] += "error" not in meta
        spent = self.timing["render"].setdefault(batch.generator, [0.0, 0])
        spent[0] += value["seconds"]
        spent[1] += sum(meta.get("pages", 0) for meta in value["docs"])
        self._batch_rendered(batch)

    def _doc_rendered(self, batch: _Batch, doc: _Doc, meta: dict) -> None:
        if "error" in meta:
            doc.error = meta["error"]
            return
        doc.pages = meta["pages"]
        if not _font_embedded(meta.get("fonts", []), batch.config):
            doc.error = _font_error(batch.family, meta.get("fonts", []))

    def _batch_rendered(self, batch: _Batch) -> None:
        """Every doc of the batch has a page count or an error: split, drop or extract."""
        n_ext = len(self.extractors)
        first = batch.docs[0]
        if not batch.split:
            self.bar.update(1)
            if first.error is None and first.pages != len(batch.sentences):
                batch.split = True
                batch.notes.append(
                    f"pdf: {batch.label} has {first.pages} pages for {len(batch.sentences)} "
                    "sentences: re-rendered one PDF per sentence"
                )
                batch.docs = [
                    _Doc(_doc_hash(batch.hashed, [s]), [i]) for i, s in enumerate(batch.sentences)
                ]
                self.bar.total += (len(batch.docs) - 1) * n_ext
                self.bar.refresh()
                self._render(batch)
                return
        bad = [doc for doc in batch.docs if doc.error]
        if bad:
            errors = "; ".join(sorted({doc.error or "" for doc in bad}))[:400]
            self.bar.update(len(bad) * n_ext)
            if len(bad) == len(batch.docs):
                batch.dropped = errors
            else:
                batch.notes.append(f"pdf: {batch.label}: {len(bad)} sentences dropped: {errors}")
        for doc in batch.docs:
            if not doc.error:
                self._extract(batch, doc)

    def _extract(self, batch: _Batch, doc: _Doc) -> None:
        """Take the doc's cached texts; send each other extractor to an extract task."""
        for extractor in self.extractors:
            cache = self._text_cache(doc.hash, extractor)
            cached = _read_json(cache)
            if cached and cached.get("version") == self.versions[extractor]:
                self.texts[(doc.hash, extractor)] = cached.get("pages") or []
                self.stats["extract_cached"] += 1
                self.bar.update(1)
                continue
            job = {
                "extractor": extractor,
                "pdf": str(self.pdf_dir / f"{doc.hash}.pdf"),
                "exe": self.pdftotext,
                "version": self.versions[extractor],
                "cache": str(cache),
            }
            self.pool.submit(
                _extract_task, job, tag=partial(self._extracted, batch, doc, extractor)
            )

    def _extracted(self, batch: _Batch, doc: _Doc, extractor: str, value: dict) -> None:
        """An extract task's result (see ``_extract_task``)."""
        self.bar.update(1)
        if "error" in value:
            batch.notes.append(f"pdf: {extractor} failed on {batch.label}: {value['error']}")
            return
        self.texts[(doc.hash, extractor)] = value["pages"]
        self.stats["extracted"] += 1
        spent = self.timing["extract"].setdefault(extractor, [0.0, 0])
        spent[0] += value["seconds"]
        spent[1] += len(value["pages"])

    def summary(self, rows: int, sentences: int) -> list[str]:
        """The closing notes: the work done and found cached, and the speeds."""
        stats = self.stats
        notes = [
            f"pdf: rendered {stats['rendered']} PDFs ({stats['render_cached']} cached), "
            f"extracted {stats['extracted']} PDF x extractor ({stats['extract_cached']} cached), "
            f"{rows} rows from {sentences} sentences"
        ]
        for kind in ("render", "extract"):
            speeds = ", ".join(
                f"{name} {pages / seconds:.0f}"
                for name, (seconds, pages) in sorted(self.timing[kind].items())
                if seconds > 0 and pages
            )
            if speeds:
                notes.append(f"pdf: {kind} pages/s per worker: {speeds}")
        return notes


def _add_rows(
    result: ChannelResult,
    batches: Sequence[_Batch],
    texts: dict[tuple[str, str], list[str | None]],
    extractors: Sequence[str],
) -> None:
    """Rows (and each batch's notes) in a fixed order, whatever order the work finished in:
    batch by batch, sentence by sentence, extractor by extractor."""
    notes = result.notes
    empty = mismatched = 0
    for batch in batches:
        notes.extend(sorted(batch.notes))
        if batch.dropped:
            notes.append(
                f"pdf: dropped {batch.label}, {len(batch.sentences)} sentences: {batch.dropped}"
            )
            continue
        for doc in batch.docs:
            if doc.error:
                continue
            by_extractor: dict[str, list[str | None]] = {}
            for extractor in extractors:
                pages = texts.get((doc.hash, extractor))
                if pages is None:  # the extraction failed (noted above)
                    continue
                if len(pages) != doc.pages:
                    mismatched += 1
                elif len(doc.sentences) == 1:  # one sentence, maybe over several pages
                    joined = None if None in pages else "\n".join(p or "" for p in pages)
                    by_extractor[extractor] = [joined]
                else:
                    by_extractor[extractor] = pages
            for k, i in enumerate(doc.sentences):
                for extractor, per_sentence in by_extractor.items():
                    text = _strip_trailing(per_sentence[k] or "")
                    if not text:
                        empty += 1
                        continue
                    result.rows.append(
                        make_row(
                            text,
                            batch.sentences[i],
                            "pdf",
                            generator=batch.generator,
                            font=batch.family,
                            extractor=extractor,
                            font_size=batch.setup.font_size,
                        )
                    )
    if mismatched:
        notes.append(f"pdf: {mismatched} extractions skipped (page count differs from the PDF)")
    if empty:
        notes.append(f"pdf: {empty} pages extracted as empty or failed text (no row)")


def make_rows(
    sentences: Sequence[str],
    *,
    seed: int,
    cache_dir: Path,
    workers: int = os.cpu_count(),
    pages_per_pdf: int = 100,
    generators: Sequence[str] | None = None,
    extractors: Sequence[str] | None = None,
    fonts: Sequence[str] | None = None,
    progress: bool = True,
) -> ChannelResult:
    """Render ``sentences`` one per page, extract every page, return (extracted, clean) rows.

    Sentences go in batches of ``pages_per_pdf``; batch i gets a generator x font pair (all
    pairs in turn) and a page setup drawn from ``seed`` and i. Rows come batch by batch,
    sentence by sentence, extractor by extractor (``EXTRACTORS`` order), whatever order the
    workers finish in. Notes say what was skipped and why, and count the work done and the
    work found in the cache (``rendered N PDFs (M cached)``).
    """
    from tqdm import tqdm

    # What was asked for: a name that does not exist raises, a tool not installed is noted.
    generator_names = _check_names("generator", generators, GENERATORS)
    extractor_names = _check_names("extractor", extractors, EXTRACTORS)
    if pages_per_pdf < 1:
        raise ValueError("pages_per_pdf must be at least 1")
    font_names = _check_fonts(fonts, available_fonts())
    result = ChannelResult()
    notes = result.notes
    font_names = _usable(font_names, _font_missing, notes)
    generator_names = _usable(generator_names, _generator_missing, notes)
    extractor_names = _usable(extractor_names, extractor_missing, notes)
    clean = [s for s in sentences if isinstance(s, str) and s.strip()]
    if len(clean) < len(sentences):
        notes.append(f"pdf: skipped {len(sentences) - len(clean)} empty sentences")
    if not (generator_names and extractor_names and font_names and clean):
        notes.append("pdf: nothing to do (no usable generator, extractor, font or sentence)")
        return result

    pdf_dir = Path(cache_dir) / "pdf"
    (pdf_dir / "text").mkdir(parents=True, exist_ok=True)
    batches = _plan_batches(
        clean,
        seed=seed,
        pages_per_pdf=pages_per_pdf,
        generators=generator_names,
        fonts=font_names,
    )
    total = len(batches) * (1 + len(extractor_names))
    with (
        TaskPool(workers) as pool,
        tqdm(total=total, desc="pdf channel", unit="task", disable=not progress) as bar,
    ):
        work = _RoundTrips(pool, bar, pdf_dir, extractor_names)
        work.run(batches)
    _add_rows(result, batches, work.texts, extractor_names)
    notes.extend(work.summary(len(result.rows), len(clean)))
    return result
