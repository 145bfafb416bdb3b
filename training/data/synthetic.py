"""The ``synthetic`` channel: a noise model fitted on real pdf/ocr pairs, sampled fast.

Rendering and extracting a PDF per sentence is slow, so the real channels cover a few thousand
sentences; this module learns what they do to text and imitates it on any number of sentences.

Fitting
    Each real pair is aligned target → input at character level (Levenshtein edit operations),
    and every edit is attributed to the target *cluster* it falls in (orthographic syllable:
    base + subscripts + vowels + signs, as ``runtime.text.clusters.segment`` cuts them; any
    other character is a cluster of its own).
    A cluster's *rewrite* is what it became in the input, plus whatever the extractor inserted
    right after it (so "space after a cluster with a pre-base vowel", ``ពេ`` → ``ពេ ``, is
    conditioned on the cluster that causes it). Of equal-cost alignments the one that explains
    the input more locally is used, and the rewrites of a pair always rebuild its input
    exactly (see cluster_rewrites). Two larger movements are taken out first so they do not
    pollute the cluster statistics:

    - *moves*: runs of text the extractor emitted out of order (pdftotext's reading order on
      wrapped lines). The input is tiled with runs it shares with the target; runs that follow
      each other in both texts form a segment, and segments shown out of order are put back
      before attribution. What the row did (where its segments started, as fractions of its
      clusters, and in which order they came out) is kept per sentence-length bucket.
    - *carries*: characters deleted from one cluster that reappear in text inserted elsewhere,
      such as a subscript emitted after the next syllable (``ខ្លួន`` → ``ខួន ្ល``) or a
      syllable displaced a few words on. Kept in the source cluster's rewrite as
      ``(out, carry, delay)``: ``carry`` is appended ``delay`` clusters later (or earlier).

    Rewrites are counted at four levels of context, most specific first:

    ``exact``   the cluster itself; rewrites stored literally.
    ``shape``   the cluster with consonants abstracted (``ពេ``, ``មេ`` → ``Cេ``); rewrites stored
                as templates that refer to the cluster's characters by position.
    ``class``   coarse class (has subscript / subscript ro, pre-base / other vowel, signs; or
                space, latin, digit, punctuation, other); rewrites stored as *role* templates
                over base B, subscripts S, vowels V and signs M, which apply to any cluster:
                these are the generic operations ("BV": subscript dropped, "BSM": vowel
                dropped, "BSVM ": space after, "BS VM": space inside, "BSVM$": junk after,
                "BSVMBSVM": duplicated, "": deleted).
    ``global``  every cluster of the source; role templates again.

    Statistics are kept per source, ``channel/extractor`` (e.g. ``pdf/pdftotext``), so a
    sample can imitate one extractor.

Sampling
    The clean text is split into clusters; for each one the distribution of outcomes is the
    Witten-Bell interpolation of the four levels (a level seen ``n`` times with ``t`` distinct
    outcomes gets weight ``n / (n + t)`` of what the more specific levels left over). So frequent
    clusters reproduce their own measured damage, and unseen ones still get plausible noise
    from their shape, class or the source as a whole. The interpolation is compiled once per
    (source, cluster) and cached: an undamaged cluster costs one random draw, a damaged one
    three (level, rewrite) and a ``str.translate`` to fill in its template. Carries are placed,
    then a fitted row of similar length decides whether and how segments are displaced.
    ``strength`` multiplies every damage probability (moves included); 0 returns the text.

API: ``NoiseModel.fit(rows)``, ``.sample(text, rng, source=, strength=)``, ``.sources()``,
``.summary()`` (per-source rates for the data card), ``.to_dict()`` / ``NoiseModel.from_dict``
(JSON, ``{"format": "khmer-correct-noise", "version": 1, ...}``), and the channel's
``make_rows(sentences, noise=, seed=, variants=)``.
"""

from __future__ import annotations

import bisect
import functools
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from rapidfuzz.distance import Levenshtein

from runtime.text.clusters import segment
from training.data.rows import ChannelResult, make_row

FORMAT = "khmer-correct-noise"
VERSION = 1

# ---------------------------------------------------------------------------------------------
# Clusters, shapes, classes, roles

COENG = "\u17d2"
# The statistics are keyed by clusters as the runtime's text layer cuts them (recorded in
# to_dict(); a model fitted under another segmenter would still load, but match less).
SEGMENTER = "runtime.text.clusters.segment"


_SHAPE_TABLE = {cp: "C" for cp in range(0x1780, 0x17A3) if cp != 0x179A}  # ro stays literal
_SHAPE_TABLE.update({cp: "I" for cp in range(0x17A3, 0x17B4)})
_SHAPE_TABLE.update({cp: "a" for cp in range(ord("a"), ord("z") + 1)})
_SHAPE_TABLE.update({cp: "A" for cp in range(ord("A"), ord("Z") + 1)})
_SHAPE_TABLE.update({cp: "0" for cp in range(ord("0"), ord("9") + 1)})
_SHAPE_TABLE.update({cp: "០" for cp in range(0x17E0, 0x17EA)})


def shape(cluster: str) -> str:
    """The cluster with consonants (except ro), letters and digits abstracted: ``ពេ`` → ``Cេ``."""
    return cluster.translate(_SHAPE_TABLE)


def _is_vowel(ch: str) -> bool:
    return "\u17b4" <= ch <= "\u17c5"


def _is_prebase_vowel(ch: str) -> bool:
    return "\u17be" <= ch <= "\u17c5"  # ើ ឿ ៀ េ ែ ៃ ោ ៅ: drawn (partly) before the base


def cluster_class(cluster: str) -> str:
    """Coarse class: ``k:<sub><vowel><sign>`` for Khmer syllables, else a script class."""
    first = cluster[0]
    if "\u1780" <= first <= "\u17b3" or first == COENG or "\u17b4" <= first <= "\u17dd":
        if "\u17d4" <= first <= "\u17da":
            return "kpunct"
        sub = "r" if COENG + "រ" in cluster else "s" if COENG in cluster else "-"
        vowel = "-"
        if any(_is_prebase_vowel(ch) for ch in cluster):
            vowel = "p"
        elif any(_is_vowel(ch) for ch in cluster):
            vowel = "v"
        sign = "m" if any(ch > "\u17c5" and ch != COENG for ch in cluster[1:]) else "-"
        return f"k:{sub}{vowel}{sign}"
    if "\u17e0" <= first <= "\u17e9" or first.isdigit():
        return "digit"
    if first.isspace():
        return "space"
    if first.isalpha():
        return "latin" if first.isascii() else "other"
    return "punct" if first.isascii() else "other"


# Templates are strings in which private-use code points stand for parts of the cluster they
# are applied to: U+100000+i is the cluster's i-th character (shape level), and the four code
# points below are its roles (class and global levels). Observed text containing code points of
# that block is kept at the exact level only.
_REF = 0x100000
_ROLE_B, _ROLE_S, _ROLE_V, _ROLE_M = (chr(0x100100 + i) for i in range(4))
_ROLES = (_ROLE_B, _ROLE_S, _ROLE_V, _ROLE_M)
_ROLE_ORDER = {r: i for i, r in enumerate(_ROLES)}


def _has_reserved(text: str) -> bool:
    return any(0x100000 <= ord(ch) <= 0x1001FF for ch in text)


def _role_labels(cluster: str) -> list[str]:
    """Role of each character: B base, S subscript (coeng + consonant), V vowel, M other mark."""
    labels = []
    for i, ch in enumerate(cluster):
        if ch == COENG or (i > 0 and cluster[i - 1] == COENG):
            labels.append(_ROLE_S)
        elif i == 0 and not ("\u17b4" <= ch <= "\u17dd" or "\u200c" <= ch <= "\u200d"):
            labels.append(_ROLE_B)
        elif _is_vowel(ch):
            labels.append(_ROLE_V)
        else:
            labels.append(_ROLE_M)
    return labels


def _role_map(cluster: str) -> dict[int, str]:
    parts = dict.fromkeys(_ROLES, "")
    for ch, role in zip(cluster, _role_labels(cluster), strict=True):
        parts[role] += ch
    return {ord(r): text for r, text in parts.items()}


def _index_template(text: str, cluster: str) -> str:
    """``text`` with every character that occurs in ``cluster`` replaced by a reference to it."""
    return "".join(chr(_REF + cluster.index(ch)) if ch in cluster else ch for ch in text)


def _role_template(index_template: str, cluster: str) -> str:
    """Index template → role template: references become roles, runs of one role merge, and
    roles the cluster lacks are placed where they belong, so the template fits any cluster."""
    labels = _role_labels(cluster)
    out: list[str] = []
    previous = None  # (role, index) of the last reference, to merge in-order runs of a role
    for ch in index_template:
        code = ord(ch)
        if _REF <= code < _REF + len(cluster):
            idx = code - _REF
            role = labels[idx]
            if previous and previous[0] == role and previous[1] == idx - 1 and out[-1] == role:
                previous = (role, idx)
                continue
            out.append(role)
            previous = (role, idx)
        else:
            out.append(ch)
            previous = None
    present = set(labels)
    for role in _ROLES:
        if role in present or not any(sym in _ROLE_ORDER for sym in out):
            continue
        order = _ROLE_ORDER[role]
        before = [i for i, sym in enumerate(out) if _ROLE_ORDER.get(sym, 9) < order]
        if before:
            out.insert(before[-1] + 1, role)
        else:
            after = next(i for i, sym in enumerate(out) if sym in _ROLE_ORDER)
            out.insert(after, role)
    return "".join(out)


def _apply_role(template: str, cluster: str) -> str:
    return template.translate(_role_map(cluster))


# ---------------------------------------------------------------------------------------------
# Alignment: what each target cluster became


def _align(target: str, damaged: str, backwards: bool = False) -> tuple[list[str], list[str]]:
    """Character alignment: ``kept[p]`` is what target char p became ("" if deleted),
    ``inserted[g]`` what was inserted before target char g (``inserted[len]``: at the end).

    Equal-cost alignments abound (``ខ្លួន`` → ``ខួន ្ល``: was ``្ល`` moved right, or ``ួន``
    left?); ``backwards`` aligns the reversed strings, which breaks such ties the other way.
    """
    n = len(target)
    kept = list(target)
    inserted = [""] * (n + 1)
    t, d = (target[::-1], damaged[::-1]) if backwards else (target, damaged)
    for op in Levenshtein.opcodes(t, d):
        if op.tag == "equal":
            continue
        if op.tag == "insert":
            text = d[op.dest_start : op.dest_end]
            if backwards:
                inserted[n - op.src_start] = text[::-1] + inserted[n - op.src_start]
            else:
                inserted[op.src_start] += text
            continue
        for k in range(op.src_end - op.src_start):
            p = op.src_start + k
            kept[n - 1 - p if backwards else p] = (
                d[op.dest_start + k] if op.tag == "replace" else ""
            )
    return kept, inserted


MIN_MOVE = 5  # characters: a region must lose (another gain) this many to suspect a move
MIN_TILE = 3  # characters: shortest common run used to place input text in the target
MAX_MOVE_CHARS = 1000  # longer rows are not searched for moves (quadratic worst case)


def _maybe_moved(target: str, damaged: str) -> bool:
    """Cheap test: did the alignment delete (and insert) enough to hide a displaced run?"""
    deleted = inserted = 0
    for op in Levenshtein.editops(target, damaged):
        if op.tag == "delete":
            deleted += 1
        elif op.tag == "insert":
            inserted += 1
    return deleted >= MIN_MOVE and inserted >= MIN_MOVE


def _tiles(target: str, damaged: str) -> list[tuple[int, int, int]]:
    """Greedy string tiling: non-overlapping common runs ``(input_pos, target_pos, length)``,
    longest first, in any order (so displaced text is found too); sorted by input position."""
    k = MIN_TILE
    index: dict[str, list[int]] = defaultdict(list)
    for j in range(len(target) - k + 1):
        index[target[j : j + k]].append(j)
    candidates = []
    nd, nt = len(damaged), len(target)
    for i in range(nd - k + 1):
        for j in index.get(damaged[i : i + k], ()):
            if i and j and damaged[i - 1] == target[j - 1]:
                continue  # not the start of a maximal run
            n = k
            while i + n < nd and j + n < nt and damaged[i + n] == target[j + n]:
                n += 1
            candidates.append((-n, abs(i - j), i, j))
    candidates.sort()
    used_d, used_t = bytearray(nd), bytearray(nt)
    tiles = []
    for neg, _, i, j in candidates:
        n = -neg
        while n and (used_d[i] or used_t[j]):  # trim what earlier tiles took, left then right
            i, j, n = i + 1, j + 1, n - 1
        while n and (used_d[i + n - 1] or used_t[j + n - 1]):
            n -= 1
        if n < k or any(used_d[i : i + n]) or any(used_t[j : j + n]):
            continue
        used_d[i : i + n] = b"\1" * n
        used_t[j : j + n] = b"\1" * n
        tiles.append((i, j, n))
    tiles.sort()
    return tiles


Moves = tuple[list[int], list[int]]  # (segment starts in target chars, input order of segments)


def _undo_moves(target: str, damaged: str) -> tuple[str, Moves | None]:
    """Put displaced runs of text back in target order.

    The input is tiled with runs it shares with the target (see _tiles); each tile takes the
    unmatched input after it (inserted spaces, junk). Tiles that follow each other in both texts
    form one *segment*; if the input shows the segments out of order, they are reordered to
    target order. Returns the repaired input and ``(starts, order)``: the segments' target start
    positions and the order the input presented them in; None when nothing moved.
    """
    if len(target) > MAX_MOVE_CHARS or not _maybe_moved(target, damaged):
        return damaged, None
    tiles = _tiles(target, damaged)
    if len(tiles) < 2:
        return damaged, None
    rank = {t: r for r, t in enumerate(sorted(tiles, key=lambda t: t[1]))}
    segments: list[list] = []  # [target_start, rank of last tile, input text]
    for k, tile in enumerate(tiles):
        i = 0 if k == 0 else tile[0]  # input before the first tile goes with it
        end = tiles[k + 1][0] if k + 1 < len(tiles) else len(damaged)
        if segments and rank[tile] == segments[-1][1] + 1:
            segments[-1][1] = rank[tile]
            segments[-1][2] += damaged[i:end]
        else:
            segments.append([tile[1], rank[tile], damaged[i:end]])
    if len(segments) < 2:
        return damaged, None
    ordered = sorted(range(len(segments)), key=lambda s: segments[s][0])
    starts = [segments[s][0] for s in ordered]
    starts[0] = 0
    order = [ordered.index(s) for s in range(len(segments))]
    return "".join(segments[s][2] for s in ordered), (starts, order)


Rewrite = tuple[str, str, int]  # (out, carry, delay): carry goes after cluster i + delay


def cluster_rewrites(target: str, damaged: str) -> tuple[list[str], list[Rewrite]]:
    """Target clusters and what each became in ``damaged`` (whose moves are already undone).

    Insertions between two clusters belong to the left one. When characters deleted from a
    cluster reappear at the end of the text inserted after another cluster, they are a *carry*
    of the cluster they came from: ``ខ្លួន`` → ``ខួន ្ល`` gives ``ខ្លួ`` the rewrite
    ``("ខួ", " ្ល", 1)`` and leaves ``ន`` unchanged. Of the two tie-breaking alignments (see
    _align) the one that explains the input more locally is kept: fewer characters written
    into a cluster that are not its own, then fewer clusters changed. Applying the rewrites
    (carries appended after cluster ``i + delay``) gives back ``damaged`` exactly.
    """
    parts = segment(target)
    best = None
    forward = _align(target, damaged)
    backward = _align(target, damaged, backwards=True)
    for kept, inserted in (forward, backward) if backward != forward else (forward,):
        rewrites = _rewrites(parts, target, kept, inserted)
        foreign = changed = 0
        for c, (out, carry, _) in zip(parts, rewrites, strict=True):
            if out != c or carry:
                changed += 1
                foreign += sum(ch not in c for ch in out) + sum(ch not in c for ch in carry)
        if best is None or (foreign, changed) < best[0]:
            best = ((foreign, changed), rewrites)
    assert best is not None
    return parts, best[1]


def _rewrites(parts: list[str], target: str, kept: list[str], inserted: list[str]) -> list[Rewrite]:
    inserted = list(inserted)
    starts, owner = [], [0] * (len(target) + 1)  # owner[g]: cluster that gap g belongs to
    pos = 0
    for i, c in enumerate(parts):
        starts.append(pos)
        owner[pos + 1 : pos + len(c) + 1] = [i] * len(c)
        pos += len(c)
    # gaps at the end of a cluster (not the one before the first) that received text
    boundaries = [g for g in [*starts[1:], len(target)] if inserted[g]]
    carries: dict[int, tuple[str, int]] = {}
    for i, (c, s) in enumerate(zip(parts, starts, strict=True)):
        p = s
        while boundaries and p < s + len(c) and i not in carries:
            if kept[p] or target[p].isspace():
                p += 1
                continue
            q = p
            while q < s + len(c) and not kept[q]:
                q += 1
            run = target[p:q]
            found = [
                (abs(owner[g] - i), owner[g] < i, g)
                for g in boundaries
                if owner[g] != i and inserted[g].rstrip(" ").endswith(run)
            ]
            if found:
                g = min(found)[2]
                text = inserted[g]
                begin = len(text.rstrip(" ")) - len(run)
                while begin > 0 and text[begin - 1] == " ":
                    begin -= 1
                carries[i] = (text[begin:], owner[g] - i)
                inserted[g] = text[:begin]
                boundaries.remove(g)  # one carry per gap keeps the rewrites exact
            p = q
    rewrites: list[Rewrite] = []
    for i, (c, s) in enumerate(zip(parts, starts, strict=True)):
        out = [inserted[0]] if i == 0 else []
        for p in range(s, s + len(c)):
            out.append(kept[p])
            out.append(inserted[p + 1])
        carry, delay = carries.get(i, ("", 0))
        rewrites.append(("".join(out), carry, delay))
    return rewrites


def apply_rewrites(rewrites: Sequence[Rewrite]) -> str:
    """The text a sequence of cluster rewrites produces (inverse of cluster_rewrites)."""
    pieces = [out for out, _, _ in rewrites]
    _place_carries(pieces, [(i + d, carry) for i, (_, carry, d) in enumerate(rewrites) if carry])
    return "".join(pieces)


def _place_carries(pieces: list[str], carries: list[tuple[int, str]]) -> None:
    last = len(pieces) - 1
    for at, carry in carries:
        pieces[min(max(at, 0), last)] += carry


# ---------------------------------------------------------------------------------------------
# Count tables


@functools.lru_cache(maxsize=1 << 16)
def _context(cluster: str) -> tuple[str, str]:
    return shape(cluster), cluster_class(cluster)


@functools.lru_cache(maxsize=1 << 16)
def _generalize(cluster: str, out: str, carry: str, delay: int) -> tuple:
    """A cluster's observed rewrite as an index template (shape level) and a role template
    (class and global levels); None where the template cannot express it."""
    if _has_reserved(out) or _has_reserved(carry):
        return None, None  # literal text in the template block (see _REF): exact level only
    by_index = (_index_template(out, cluster), _index_template(carry, cluster), delay)
    by_role = (_role_template(by_index[0], cluster), _role_template(by_index[1], cluster), delay)
    if _apply_role(by_role[0], cluster) != out or _apply_role(by_role[1], cluster) != carry:
        by_role = None  # e.g. one of two subscripts dropped: roles cannot say which
    return by_index, by_role


class _Table:
    """Outcome counts in one context: how often the cluster stayed (``same``) out of ``n``, and
    its rewrites. ``freeze`` keeps the most frequent rewrites (ties broken by value, so a model
    and its JSON round trip are identical) and prepares them for sampling."""

    __slots__ = ("counts", "cum", "n", "outcomes", "same", "types")

    def __init__(self) -> None:
        self.n = 0
        self.same = 0
        self.types = 0  # distinct outcomes observed (Witten-Bell), before truncation
        self.counts: Counter[Rewrite] = Counter()
        self.outcomes: list[Rewrite] = []
        self.cum: list[int] = []

    def add(self, rewrite: Rewrite | None) -> None:
        self.n += 1
        if rewrite is None:
            self.same += 1
        else:
            self.counts[rewrite] += 1

    def freeze(self, keep: int) -> None:
        if not self.types:
            self.types = len(self.counts) + (1 if self.same else 0)
        top = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
        self.counts = Counter(dict(top))
        self.outcomes = [rewrite for rewrite, _ in top]
        self.cum = []
        total = 0
        for _, count in top:
            total += count
            self.cum.append(total)

    def draw(self, u: float) -> Rewrite:
        """The rewrite at quantile ``u`` in [0, 1) of the kept rewrites."""
        return self.outcomes[bisect.bisect_right(self.cum, u * self.cum[-1])]

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "same": self.same,
            "types": self.types,
            "rewrites": [[*rewrite, self.counts[rewrite]] for rewrite in self.outcomes],
        }

    @classmethod
    def from_json(cls, d: dict, keep: int) -> _Table:
        t = cls()
        t.n, t.same, t.types = int(d["n"]), int(d["same"]), int(d["types"])
        t.counts = Counter({(o, c, int(dl)): int(k) for o, c, dl, k in d["rewrites"]})
        t.freeze(keep)
        return t


KEEP = {"exact": 32, "shape": 64, "class": 128, "global": 256}  # rewrites kept per context
MOVE_BUCKET = 16  # clusters per sentence length bucket of the move table
MOVE_BUCKETS = 8


class _Source:
    """Everything fitted for one ``channel/extractor``: the four context levels of cluster
    rewrites, and the displaced-segment records per sentence length bucket."""

    def __init__(self) -> None:
        self.rows = 0
        self.chars = 0
        self.edits = 0
        self.exact: dict[str, _Table] = defaultdict(_Table)
        self.shape: dict[str, _Table] = defaultdict(_Table)
        self.klass: dict[str, _Table] = defaultdict(_Table)
        self.glob = _Table()
        # per bucket of MOVE_BUCKET clusters: rows seen, and for each row whose segments were
        # displaced, (segment starts as fractions of its clusters, input order of segments)
        self.bucket_rows = [0] * MOVE_BUCKETS
        self.bucket_moves: list[list[tuple[list[float], list[int]]]] = [
            [] for _ in range(MOVE_BUCKETS)
        ]

    def add_row(self, target: str, damaged: str) -> None:
        self.rows += 1
        self.chars += len(target)
        self.edits += Levenshtein.distance(target, damaged)
        repaired, moves = _undo_moves(target, damaged)
        parts, rewrites = cluster_rewrites(target, repaired)
        bucket = min(len(parts) // MOVE_BUCKET, MOVE_BUCKETS - 1)
        self.bucket_rows[bucket] += 1
        if moves:
            starts, order = moves
            cluster_at: list[int] = []  # char position → index of its cluster
            for i, c in enumerate(parts):
                cluster_at += [i] * len(c)
            bounds = [round(cluster_at[p] / len(parts), 4) for p in starts]
            self.bucket_moves[bucket].append((bounds, order))
        for c, rewrite in zip(parts, rewrites, strict=True):
            shape_key, class_key = _context(c)
            if rewrite[0] == c and not rewrite[1]:
                for table in (self.exact[c], self.shape[shape_key], self.klass[class_key]):
                    table.add(None)
                self.glob.add(None)
                continue
            self.exact[c].add(rewrite)
            by_index, by_role = _generalize(c, *rewrite)
            if by_index is not None:
                self.shape[shape_key].add(by_index)
            if by_role is not None:
                self.klass[class_key].add(by_role)
                self.glob.add(by_role)

    def freeze(self) -> None:
        for level, tables in (("exact", self.exact), ("shape", self.shape), ("class", self.klass)):
            for table in tables.values():
                table.freeze(KEEP[level])
        self.glob.freeze(KEEP["global"])

    def summary(self) -> dict:
        """What the data card may quote: rows, CER of the fitted pairs, share of clusters left
        unchanged, share of rows with displaced segments."""
        moved = sum(len(b) for b in self.bucket_moves)
        return {
            "rows": self.rows,
            "cer": round(self.edits / max(1, self.chars), 4),
            "unchanged_share": round(self.glob.same / max(1, self.glob.n), 4),
            "moved_rows_share": round(moved / max(1, self.rows), 4),
        }

    def to_json(self) -> dict:
        return {
            **self.summary(),
            "chars": self.chars,
            "edits": self.edits,
            "exact": {k: t.to_json() for k, t in self.exact.items()},
            "shape": {k: t.to_json() for k, t in self.shape.items()},
            "class": {k: t.to_json() for k, t in self.klass.items()},
            "global": self.glob.to_json(),
            "moves": {
                "bucket_clusters": MOVE_BUCKET,
                "rows": self.bucket_rows,
                "segments": [[[b, o] for b, o in bucket] for bucket in self.bucket_moves],
            },
        }

    @classmethod
    def from_json(cls, d: dict) -> _Source:
        s = cls()
        s.rows, s.chars, s.edits = int(d["rows"]), int(d["chars"]), int(d["edits"])
        s.exact.update({k: _Table.from_json(v, KEEP["exact"]) for k, v in d["exact"].items()})
        s.shape.update({k: _Table.from_json(v, KEEP["shape"]) for k, v in d["shape"].items()})
        s.klass.update({k: _Table.from_json(v, KEEP["class"]) for k, v in d["class"].items()})
        s.glob = _Table.from_json(d["global"], KEEP["global"])
        moves = d["moves"]
        if moves["bucket_clusters"] != MOVE_BUCKET or len(moves["rows"]) != MOVE_BUCKETS:
            raise ValueError("noise model: move table has another bucket layout")
        s.bucket_rows = [int(x) for x in moves["rows"]]
        s.bucket_moves = [
            [([float(x) for x in b], [int(x) for x in o]) for b, o in bucket]
            for bucket in moves["segments"]
        ]
        return s


# ---------------------------------------------------------------------------------------------
# The model


class NoiseModel:
    """Cluster-level noise fitted on real pairs; see the module docstring."""

    def __init__(self, sources: dict[str, _Source]) -> None:
        self._sources = sources
        self._names = sorted(sources)
        weights = [sources[n].rows for n in self._names]
        total = sum(weights)
        self._cum = [sum(weights[: i + 1]) / total for i in range(len(weights))]
        self._cache: dict[str, dict[str, tuple]] = {n: {} for n in self._names}

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(cls, rows: Iterable[dict]) -> NoiseModel:
        """Fit on real pairs (rows with ``input``, ``target``, ``channel`` and optionally
        ``extractor`` or ``engine``). Pass only real pdf/ocr rows. Rows with an empty target,
        or an input far longer than any plausible damage, are skipped."""
        sources: dict[str, _Source] = defaultdict(_Source)
        for row in rows:
            target, damaged = row.get("target"), row.get("input")
            if not isinstance(target, str) or not isinstance(damaged, str) or not target:
                continue
            if len(damaged) > 4 * len(target) + 40:
                continue
            sources[source_name(row)].add_row(target, damaged)
        if not sources:
            raise ValueError("NoiseModel.fit: no usable rows (need non-empty input/target)")
        for src in sources.values():
            src.freeze()
        return cls(dict(sources))

    # -- sampling -----------------------------------------------------------------------------

    def sources(self) -> list[str]:
        return list(self._names)

    def pick_source(self, rng: random.Random) -> str:
        """A source drawn in proportion to the rows it was fitted on."""
        return self._names[bisect.bisect_right(self._cum, rng.random() * self._cum[-1])]

    def sample(
        self,
        text: str,
        rng: random.Random,
        *,
        source: str | None = None,
        strength: float = 1.0,
    ) -> str:
        """Damaged version of ``text`` as ``source`` would damage it (None: drawn at random)."""
        if source is None:
            source = self.pick_source(rng)
        elif source not in self._cache:
            raise ValueError(f"unknown noise source {source!r}; fitted: {self._names}")
        if strength <= 0 or not text:
            return text
        cache = self._cache[source]
        rand = rng.random
        pieces: list[str] = []
        carries: list[tuple[int, str]] = []
        for i, c in enumerate(segment(text)):
            entry = cache.get(c)
            if entry is None:
                if len(cache) > 100_000:
                    cache.clear()
                entry = cache[c] = self._compile(source, c)
            if entry[0] and rand() < entry[0] * strength:
                _, level_cum, tables, maps = entry
                k = bisect.bisect_right(level_cum, rand() * level_cum[-1])
                out, carry, delay = tables[k].draw(rand())
                if maps[k] is not None:  # a template: fill in this cluster's characters
                    out, carry = out.translate(maps[k]), carry.translate(maps[k])
                pieces.append(out)
                if carry:
                    carries.append((i + delay, carry))
            else:
                pieces.append(c)
        _place_carries(pieces, carries)
        self._move(pieces, source, rng, strength)
        return "".join(pieces)

    def _compile(self, source: str, c: str) -> tuple:
        """How cluster ``c`` is damaged: ``(p_change, level_cum, tables, maps)``.

        Witten-Bell interpolation of the context levels: going from the most specific level
        to the most general, a level seen ``n`` times with ``t`` distinct outcomes takes
        ``n / (n + t)`` of the probability mass still unassigned (the last level takes the
        rest). ``p_change`` is the resulting probability of any rewrite; ``level_cum`` the
        cumulative share of it per level, whose table ``tables[k]`` then picks the rewrite and
        ``maps[k]`` (a ``str.translate`` table, None for literal rewrites) fills it in.
        """
        src = self._sources[source]
        roles = _role_map(c)
        levels = [
            (src.exact.get(c), None),
            (src.shape.get(shape(c)), {_REF + i: ch for i, ch in enumerate(c)}),
            (src.klass.get(cluster_class(c)), roles),
            (src.glob, roles),
        ]
        levels = [(t, m) for t, m in levels if t is not None and t.n]
        left, p_change = 1.0, 0.0
        level_cum, tables, maps = [], [], []
        for k, (table, mapping) in enumerate(levels):
            weight = 1.0 if k == len(levels) - 1 else table.n / (table.n + table.types)
            share, left = left * weight, left * (1 - weight)
            if table.outcomes:
                p_change += share * (table.n - table.same) / table.n
                level_cum.append(p_change)
                tables.append(table)
                maps.append(mapping)
        return p_change, level_cum, tables, maps

    def _move(self, pieces: list[str], source: str, rng: random.Random, strength: float) -> None:
        """Displace segments as the fitted extractor does (in place): a fitted row of similar
        length is drawn; if its segments were displaced, the same cut (as fractions of the
        clusters) and order are applied."""
        src = self._sources[source]
        n = len(pieces)
        bucket = min(n // MOVE_BUCKET, MOVE_BUCKETS - 1)
        rows = src.bucket_rows
        if not rows[bucket]:
            bucket = min((b for b in range(MOVE_BUCKETS) if rows[b]), key=lambda b: abs(b - bucket))
        records = src.bucket_moves[bucket]
        if not records or rng.random() >= len(records) / rows[bucket] * strength:
            return
        bounds, order = records[int(rng.random() * len(records))]
        cuts = [min(round(b * n), n) for b in bounds] + [n]
        segments = [pieces[cuts[k] : cuts[k + 1]] for k in range(len(bounds))]
        pieces[:] = [piece for k in order for piece in segments[k]]

    # -- serialization ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-safe form; ``from_dict(to_dict())`` samples identically."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "segmenter": SEGMENTER,
            "sources": {name: self._sources[name].to_json() for name in self._names},
        }

    def summary(self) -> dict[str, dict]:
        """Per source: rows, CER of the fitted pairs, unchanged cluster share, moved rows."""
        return {name: self._sources[name].summary() for name in self._names}

    @classmethod
    def from_dict(cls, d: dict) -> NoiseModel:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        if d.get("version") != VERSION:
            raise ValueError(f"{FORMAT} version {d.get('version')} not supported (want {VERSION})")
        sources = {name: _Source.from_json(s) for name, s in d["sources"].items()}
        if not sources:
            raise ValueError(f"{FORMAT} document has no sources")
        return cls(sources)


def source_name(row: dict) -> str:
    """``channel/extractor`` (or ``channel/engine`` for OCR rows)."""
    channel = row.get("channel") or "given"
    tool = row.get("extractor") or row.get("engine")
    return f"{channel}/{tool}" if tool else str(channel)


# ---------------------------------------------------------------------------------------------
# The channel

STRENGTH_RANGE = (0.7, 1.3)


def make_rows(
    sentences: Sequence[str], *, noise: NoiseModel, seed: int, variants: int = 1
) -> ChannelResult:
    """``variants`` damaged versions of every sentence, deterministic for ``seed``. Each row
    records the source imitated and the strength used."""
    rng = random.Random(f"synthetic:{seed}")
    result = ChannelResult()
    skipped = 0
    for sentence in sentences:
        if not sentence.strip():
            skipped += 1
            continue
        for _ in range(variants):
            source = noise.pick_source(rng)
            strength = round(rng.uniform(*STRENGTH_RANGE), 2)
            noisy = noise.sample(sentence, rng, source=source, strength=strength)
            result.rows.append(
                make_row(noisy, sentence, "synthetic", noise_source=source, strength=strength)
            )
    if skipped:
        result.notes.append(f"skipped {skipped} empty sentences")
    return result
