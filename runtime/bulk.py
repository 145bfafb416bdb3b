"""Bulk correction: folders of text files and PDFs, on this machine's cores or on Ray.

One job, two executors. A document is read (a PDF extracted) and cut into chunks of lines
(`read_rows`); a worker holding one Corrector corrects each chunk (`ChunkCorrector`); the
driver puts a document's chunks back in order and writes it (`Writer`). Locally the workers are
a process pool (`run_local`); with Ray the same two functions become a Ray Data pipeline
(`run_ray`): `flat_map` reads, an actor pool (`map_batches` with the class) corrects, and the
driver writes. Rows are plain strings and ints, so the two executors carry the same bytes.

A chunk is corrected exactly as `kmcorrect correct` corrects a file (form feeds kept out of the
model, `Corrector.correct` with the same options), so a document's output is the same, byte for
byte, whichever way it ran. Every output is written under a temporary name and renamed, text
last: a killed run leaves whole files or none, and a rerun skips documents whose text exists.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import UserError
from runtime.files import TMP_SUFFIX, write_atomic

CHUNK_LINES = 1000
OUTPUT_SETTINGS = ("variant", "device", "min_confidence", "extractor")
SPANS_SUFFIX = ".spans.jsonl"
SETTINGS_FILE = "bulk-run.json"
SUMMARY_FILE = "bulk-summary.json"
# A failure's reason is cut to one line of at most this many characters.
REASON_CHARS = 300


@dataclass(frozen=True)
class Settings:
    """What a worker needs to build its Corrector and correct a chunk; shipped to each worker
    (a spawned process or a Ray actor), which loads the artifact from this path itself."""

    artifact: str
    variant: str = "opt"
    device: str = "cpu"
    threads: int = 1  # onnxruntime intra-op threads per worker; 0 = onnxruntime's choice
    min_confidence: float | None = None
    batch_size: int = 32
    extractor: str = "pdftotext-layout"
    chunk_lines: int = CHUNK_LINES


@dataclass(frozen=True)
class Source:
    path: Path
    out: Path  # the corrected text; its spans are beside it (+ SPANS_SUFFIX)
    is_pdf: bool

    @property
    def spans(self) -> Path:
        return self.out.with_name(self.out.name + SPANS_SUFFIX)

    @property
    def done(self) -> bool:
        return self.out.is_file() and self.spans.is_file()


def find_sources(inputs: list[Path], out_dir: Path) -> tuple[list[Source], list[dict]]:
    """Every input document and where its output goes, and the inputs refused (collisions).

    A folder contributes its *.txt and *.pdf files (recursively, the output folder excluded),
    mirrored under ``out_dir``; a file named on its own goes to ``out_dir/<its name>``. A PDF's
    output is ``<stem>.txt``.
    """
    out_root = out_dir.resolve()
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                inside_out = out_root == path.resolve() or out_root in path.resolve().parents
                if path.is_file() and path.suffix.lower() in (".txt", ".pdf") and not inside_out:
                    found.append((path, path.relative_to(item)))
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            raise UserError(f"input not found: {item}")
    sources, refused, taken = [], [], {}
    for path, relative in found:
        is_pdf = path.suffix.lower() == ".pdf"
        out = out_dir / (relative.with_suffix(".txt") if is_pdf else relative)
        if out.resolve() == path.resolve():
            raise UserError(f"--out {out_dir} would overwrite the input {path}: pick another")
        if out in taken:
            refused.append(_failure(path, f"its output {out} is also the output of {taken[out]}"))
            continue
        taken[out] = path
        sources.append(Source(path, out, is_pdf))
    return sources, refused


def _failure(path: Path | str, reason: str) -> dict:
    return {"input": str(path), "reason": " ".join(reason.split())[:REASON_CHARS]}


def read_rows(doc: int, path: str, is_pdf: bool, extractor: str, chunk_lines: int) -> list[dict]:
    """A document as rows of at most ``chunk_lines`` lines, cut as `kmcorrect correct` cuts it;
    or one row whose ``error`` says why it cannot be corrected."""
    try:
        lines = _pdf_lines(path, extractor) if is_pdf else _text_lines(path)
    except ValueError as exc:
        return [{"doc": doc, "chunk": 0, "chunks": 1, "first": 0, "text": "", "error": str(exc)}]
    starts = range(0, len(lines), chunk_lines)
    return [
        {
            "doc": doc,
            "chunk": k,
            "chunks": len(starts),
            "first": start,
            "text": "\n".join(lines[start : start + chunk_lines]),
            "error": "",
        }
        for k, start in enumerate(starts)
    ]


def _text_lines(path: str) -> list[str]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None
    if not data:
        raise ValueError("empty file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def _pdf_lines(path: str, extractor: str) -> list[str]:
    from runtime.extract import document_text

    try:
        text = document_text(path, extractor)
    except Exception as exc:  # any extractor failure is this document's, not the run's
        raise ValueError(f"unreadable PDF ({extractor}): {type(exc).__name__}: {exc}") from None
    if not text.replace("\f", "").strip():
        raise ValueError(f"no text in the PDF ({extractor}): a scan? OCR it first")
    return text.split("\n")


OUT_COLUMNS = ("doc", "chunk", "chunks", "lines", "chars", "edits", "text", "spans", "error")


class ChunkCorrector:
    """One Corrector and the options it applies: what each worker holds (a process of the
    local pool, or an actor of Ray's pool, which calls it with a batch of rows)."""

    def __init__(self, settings: Settings) -> None:
        from runtime.corrector import Corrector

        self.settings = settings
        self.corrector = Corrector.load(
            settings.artifact,
            variant=settings.variant,
            device=settings.device,
            threads=settings.threads or None,
        )

    def correct(self, row: dict) -> dict:
        """A chunk row corrected: its text, one JSON line of spans per line, and its tally."""
        head = {key: row[key] for key in ("doc", "chunk", "chunks")}
        nothing = {"lines": 0, "chars": 0, "edits": 0, "text": "", "spans": ""}
        if row["error"]:
            return {**head, **nothing, "error": row["error"]}
        lines = row["text"].split("\n")
        try:
            texts, spans, edits = self._correct_lines(lines, row["first"])
        except Exception as exc:  # a model failure loses this document only
            reason = f"correction failed: {type(exc).__name__}: {exc}"
            return {**head, **nothing, "error": reason}
        return {
            **head,
            "lines": len(lines),
            "chars": sum(map(len, lines)),
            "edits": edits,
            "text": "\n".join(texts),
            "spans": "\n".join(spans),
            "error": "",
        }

    def _correct_lines(self, lines: list[str], first: int) -> tuple[list[str], list[str], int]:
        # As `kmcorrect correct` does: form feeds (page breaks) stay out of the model.
        pages = [line.split("\f") for line in lines]
        flat = [part for parts in pages for part in parts]
        corrections = iter(
            self.corrector.correct(
                flat,
                min_confidence=self.settings.min_confidence,
                batch_size=self.settings.batch_size,
            )
        )
        texts, records, edits = [], [], 0
        for number, parts in enumerate(pages, start=first):
            fixed = [next(corrections) for _ in parts]
            texts.append("\f".join(c.text for c in fixed))
            spans, offset = [], 0  # offsets within the whole line, form feeds included
            for part, correction in zip(parts, fixed, strict=True):
                spans += [
                    {
                        "start": s.start + offset,
                        "end": s.end + offset,
                        "replacement": s.replacement,
                        "confidence": round(float(s.confidence), 4),
                    }
                    for s in correction.spans
                ]
                offset += len(part) + 1
            edits += len(spans)
            records.append(json.dumps({"line": number, "spans": spans}, ensure_ascii=False))
        return texts, records, edits

    def __call__(self, batch: dict) -> dict:
        """Ray's `map_batches` entry: a batch of rows (columns of arrays) in, the same out."""
        columns = {key: values.tolist() for key, values in batch.items()}
        size = len(columns["doc"])
        rows = [{key: values[i] for key, values in columns.items()} for i in range(size)]
        fixed = [self.correct(row) for row in rows]
        return {key: [row[key] for row in fixed] for key in OUT_COLUMNS}


def _write_atomic(path: Path, data: bytes) -> None:
    """Whole or absent (a rerun sweeps the temporaries a killed run left)."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


class Writer:
    """The driver's side: chunks back into documents, each written whole, and the tally."""

    def __init__(self, sources: list[Source], expected_lines: list[int], bar) -> None:
        self.sources = sources
        self.expected = expected_lines  # counted up front for text files (the bar's total)
        self.bar = bar
        self.parts: dict[int, dict[int, dict]] = {}
        self.tally = {"files": 0, "lines": 0, "characters": 0, "edits": 0}
        self.failures: list[dict] = []
        self.failed: set[int] = set()

    def add(self, row: dict) -> bool:
        """Take one corrected chunk; True when it finished its document (written or failed)."""
        doc = row["doc"]
        source = self.sources[doc]
        if doc in self.failed:  # a chunk of a document that already failed
            return False
        if row["error"]:
            self.failed.add(doc)
            self.parts.pop(doc, None)
            self.failures.append(_failure(source.path, row["error"]))
            self.bar.total -= self.expected[doc]
            self.bar.refresh()
            return True
        if source.is_pdf:  # a PDF's lines are known only once it is extracted
            self.bar.total += row["lines"]
        self.bar.update(row["lines"])
        parts = self.parts.setdefault(doc, {})
        parts[row["chunk"]] = row
        if len(parts) < row["chunks"]:
            return False
        del self.parts[doc]
        chunks = [parts[k] for k in range(row["chunks"])]
        _write_atomic(source.spans, "\n".join(c["spans"] for c in chunks).encode() + b"\n")
        _write_atomic(source.out, "\n".join(c["text"] for c in chunks).encode() + b"\n")
        self.tally["files"] += 1
        for key, column in (("lines", "lines"), ("characters", "chars"), ("edits", "edits")):
            self.tally[key] += sum(c[column] for c in chunks)
        return True


def run_local(sources: list[Source], settings: Settings, workers: int, writer: Writer) -> None:
    """A process pool, each process holding one ChunkCorrector; documents are read ahead only
    a few at a time, so memory stays bounded whatever the size of the collection."""
    context = multiprocessing.get_context("spawn")  # onnxruntime's threads do not survive fork
    pool = cf.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(settings,)
    )
    queue = iter(range(len(sources)))
    futures: dict[cf.Future, str] = {}
    open_docs = 0

    def feed() -> None:
        nonlocal open_docs
        while open_docs < 2 * workers and (doc := next(queue, None)) is not None:
            source = sources[doc]
            args = (doc, str(source.path), source.is_pdf, settings.extractor, settings.chunk_lines)
            futures[pool.submit(read_rows, *args)] = "read"
            open_docs += 1

    try:
        feed()
        while futures:
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for future in done:
                kind = futures.pop(future)
                try:
                    result = future.result()
                except cf.process.BrokenProcessPool as exc:
                    raise UserError(
                        f"a worker process died ({exc}); rerun the same command to resume"
                    ) from None
                if kind == "correct":
                    open_docs -= writer.add(result)
                    continue
                for row in result:
                    if row["error"]:
                        open_docs -= writer.add(row)
                    else:
                        futures[pool.submit(_correct_in_worker, row)] = "correct"
            feed()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_WORKER: ChunkCorrector | None = None


def _start_worker(settings: Settings) -> None:
    global _WORKER
    _WORKER = ChunkCorrector(settings)


def _correct_in_worker(row: dict) -> dict:
    assert _WORKER is not None, "the pool's initializer builds the worker's corrector"
    return _WORKER.correct(row)


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise UserError(
            f"--ray needs Ray Data ({exc.name} is missing): pip install 'khmer-correct[ray]'"
        ) from None
    return ray


def _read_row(row: dict, extractor: str, chunk_lines: int) -> list[dict]:
    return read_rows(row["doc"], row["path"], row["pdf"], extractor, chunk_lines)


def run_ray(
    sources: list[Source], settings: Settings, workers: int | None, address: str, writer: Writer
) -> int:
    """The same job as a Ray Data pipeline; returns the number of actors it used.

    Reading takes no CPU reservation (it is mostly pdftotext waiting), so an actor pool as wide
    as the cluster's CPUs cannot starve it. Workers load the artifact from ``settings.artifact``
    and read inputs by path: on a cluster both must be on storage every node mounts.
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address or None)
    ray.data.DataContext.get_current().enable_progress_bars = False
    gpu = settings.device != "cpu"
    if workers is None:
        resources = ray.cluster_resources()
        per_worker = 1 if gpu else max(1, settings.threads)
        workers = max(1, int(resources.get("GPU" if gpu else "CPU", 1)) // per_worker)
    items = [{"doc": i, "path": str(s.path), "pdf": s.is_pdf} for i, s in enumerate(sources)]
    dataset = ray.data.from_items(items).flat_map(
        _read_row,
        fn_kwargs={"extractor": settings.extractor, "chunk_lines": settings.chunk_lines},
        num_cpus=0,
    )
    dataset = dataset.map_batches(
        ChunkCorrector,
        fn_constructor_args=(settings,),
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=1,
        num_cpus=0 if gpu else max(1, settings.threads),
        num_gpus=1 if gpu else 0,
    )
    try:
        for row in dataset.iter_rows():
            writer.add(row)
    except ray.exceptions.RayError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"the Ray job failed ({first}); rerun the same command to resume") from None
    return workers


def _count_lines(path: Path) -> int:
    """Lines as `read_rows` will cut them, counted without decoding: the progress bar's total."""
    count, last = 0, b"\n"
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                count += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return 0
    return count + (last != b"\n")


def _check_settings(out_dir: Path, recorded: dict) -> None:
    """A rerun into the same folder must use the same model and options, or its outputs
    would mix two runs; the first run records them."""
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if before != recorded:
            raise UserError(
                f"{out_dir} holds the output of a run with other settings ({path}): "
                "use another --out, or delete the folder to start over"
            )
    else:
        _write_atomic(path, json.dumps(recorded, indent=2).encode() + b"\n")


def bulk(
    inputs: list[Path],
    out_dir: Path,
    settings: Settings,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
) -> dict:
    """Correct every document under ``inputs`` into ``out_dir``; returns the run's summary
    (also written to ``out_dir/bulk-summary.json``). ``ray_address`` None runs locally;
    "" starts a local Ray, anything else is a Ray cluster's address."""
    from tqdm import tqdm

    from runtime.artifact import load_artifact

    if workers is not None and workers < 1:
        raise UserError("--workers must be at least 1")
    if settings.chunk_lines < 1 or settings.batch_size < 1:
        raise UserError("--chunk-lines and --batch-size must be at least 1")
    started = time.perf_counter()
    model_id = load_artifact(settings.artifact).manifest["checksum"][:16]
    sources, refused = find_sources(inputs, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # What decides the outputs' bytes (threads, batch size and chunking do not).
    recorded = {key: getattr(settings, key) for key in OUTPUT_SETTINGS}
    _check_settings(out_dir, {**recorded, "artifact": model_id})
    for stray in out_dir.rglob("*" + TMP_SUFFIX):  # left by a killed run
        stray.unlink()
    todo = [s for s in sources if not s.done]
    expected = [0 if s.is_pdf else _count_lines(s.path) for s in todo]
    bar = tqdm(total=sum(expected), unit="line", desc="bulk", disable=None, smoothing=0.1)
    writer = Writer(todo, expected, bar)
    try:
        if not todo:
            used = 0
        elif ray_address is None:
            used = workers or ((os.cpu_count() or 1) if settings.device == "cpu" else 1)
            run_local(todo, settings, used, writer)
        else:
            used = run_ray(todo, settings, workers, ray_address, writer)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    failures = refused + writer.failures
    summary = {
        "mode": "local" if ray_address is None else "ray",
        "workers": used,
        "model": model_id,
        "extractor": settings.extractor,
        "files": {
            "found": len(sources) + len(refused),
            "corrected": writer.tally["files"],
            "already_done": len(sources) - len(todo),
            "failed": len(failures),
        },
        "lines": writer.tally["lines"],
        "characters": writer.tally["characters"],
        "edits": writer.tally["edits"],
        "seconds": round(seconds, 3),
        "characters_per_second": round(writer.tally["characters"] / seconds, 1),
        "lines_per_second": round(writer.tally["lines"] / seconds, 1),
        "failures": failures,
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    _write_atomic(out_dir / SUMMARY_FILE, text.encode())
    return summary
