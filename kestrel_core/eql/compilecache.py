"""Persistent compile cache: each rule's parsed and lowered IR, on disk.

Loading a pack spends most of its time in the EQL parser (lark; every query
is parsed twice: once by the rule-file check, once by the compiler) and in
lowering the AST to IR (cProfile of a 1,000-rule pack: ~70% of the load).
The cache keeps the lowered :class:`~kestrel_core.eql.ir.Query` of each
query, keyed by the sha256 of its text and the strictness, in one file per
engine build (``ir-<engine build>.marshal``): a later start with the same
build reads the IR instead of parsing and lowering again, and the rule-file
check skips the parse of a text the cache holds.

A cache file is an input, so it is checked before anything in it is used:

* **Trust.** The directory and the file must belong to the user running
  Kestrel and must not be writable by group or others (the trust model of
  CPython's own ``__pycache__``); otherwise the cache is not read nor
  written, with a warning.
* **Plain data for the IR.** IR entries are ``marshal`` dumps of tuples of
  str, int, float, bool and None -- never pickle (which runs code on load)
  -- and every entry is checked for exactly that shape before the first one
  is used.
* **Code like a .pyc.** After parsing, compiling the host runtime's
  generated Python dominates (``compile()``, ~0.3 s per 600 predicates), so
  the code object of each generated source is kept too, keyed by the
  sha256 of that source: it is only ever used for the exact source it was
  compiled from, by the same engine build and Python version (the build
  key includes ``importlib.util.MAGIC_NUMBER``).  Running it is trusting the
  file the way CPython trusts ``__pycache__``, which the ownership and
  permission rule above is for.
* **Integrity.** The file carries a magic line and the sha256 of its
  payload; a truncated, corrupted, other-format or other-build file is
  ignored with a warning (and rewritten), never trusted.
* **Schema.** An entry records the type of each field it read; if the
  running schema types a field differently, the entry is not used.

Queries with warnings, or whose constants are not plain data, are not cached
(they compile every time).  Enable it with ``[rules] compile_cache = DIR``
or ``KESTREL_COMPILE_CACHE=DIR``.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import types
from pathlib import Path
from typing import Any

from .. import cachefile
from ..cachefile import untrusted
from . import ir

log = logging.getLogger("kestrel")

FORMAT = 1
MAGIC = b"KESTREL-IR-CACHE 1\n"
_PLAIN = (str, int, float, bool, type(None))


def _build() -> str:
    global _BUILD
    if _BUILD is None:
        from ..buildid import engine_build_id

        from importlib.util import MAGIC_NUMBER  # marshal's code format is per Python version

        _BUILD = hashlib.sha256(engine_build_id().encode() + MAGIC_NUMBER).hexdigest()[:20]
    return _BUILD


_BUILD: str | None = None


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _plain(v: Any) -> bool:
    if v.__class__ is tuple:
        return all(map(_plain, v))
    return isinstance(v, _PLAIN)


def _check_entry(e: Any) -> None:
    """Raise ValueError unless ``e`` has exactly the shape :meth:`CompileCache.put` writes."""
    if not (isinstance(e, tuple) and len(e) == 7):
        raise ValueError("an entry is not a 7-tuple")
    kind, nodes, steps, until, maxspan, pipes, fields = e
    if kind not in ("event", "sequence") or not (maxspan is None or isinstance(maxspan, int)):
        raise ValueError("bad kind or maxspan")
    if not (isinstance(nodes, tuple) and isinstance(steps, tuple) and isinstance(pipes, tuple)
            and isinstance(fields, tuple)):
        raise ValueError("bad tables")
    n = len(nodes)
    for i, node in enumerate(nodes):
        if not (isinstance(node, tuple) and len(node) == 7):
            raise ValueError("bad node")
        op, args, value, ci, path, typ, multi = node
        if not (isinstance(op, str) and isinstance(args, tuple) and all(isinstance(a, int) and 0 <= a < i for a in args)
                and _plain(value) and isinstance(ci, bool) and (path is None or isinstance(path, str))
                and isinstance(typ, str) and isinstance(multi, bool)):
            raise ValueError(f"bad node {i}")
    for s in steps + ((until,) if until is not None else ()):
        if not (isinstance(s, tuple) and len(s) == 6):
            raise ValueError("bad step")
        sid, cat, pred, keys, nullable, missing = s
        if not (isinstance(sid, int) and (cat is None or isinstance(cat, str)) and isinstance(pred, int)
                and 0 <= pred < n and isinstance(keys, tuple) and all(isinstance(k, int) and 0 <= k < n for k in keys)
                and isinstance(nullable, tuple) and len(nullable) == len(keys)
                and all(isinstance(b, bool) for b in nullable) and isinstance(missing, bool)):
            raise ValueError("bad step fields")
    for p in pipes:
        if not (isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int)):
            raise ValueError("bad pipe")
    for f in fields:
        if not (isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], str) and isinstance(f[1], str)):
            raise ValueError("bad field")


class CompileCache:
    """The compiled IR of queries, persisted in ``directory`` (see the module doc)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).expanduser()
        self.path = self.dir / f"ir-{_build()}.marshal"
        self.entries: dict[str, dict[str, tuple]] = {}
        """text sha256 -> strictness -> entry."""
        self.codes: dict[str, bytes] = {}
        """sha256 of a host predicate's generated source -> marshal of its code object."""
        self.counts = {"hits": 0, "misses": 0, "stored": 0, "uncacheable": 0, "schema_mismatch": 0,
                       "code_hits": 0, "code_stored": 0}
        self.dirty = False
        self.disabled = ""
        """Why the cache is not used at all ('' when it is)."""
        why = untrusted(self.dir) or untrusted(self.path)
        if why:
            self.disabled = why
            log.warning("compile cache %s is not used: %s", self.dir, why)
            return
        self._load()

    # ------------------------------------------------------------ file
    def _load(self) -> None:
        raw = cachefile.read(self.path, "compile cache")
        if raw is None:
            return
        try:
            if not raw.startswith(MAGIC):
                raise ValueError("not a Kestrel IR cache (bad magic line)")
            digest, payload = raw[len(MAGIC):len(MAGIC) + 32], raw[len(MAGIC) + 32:]
            if hashlib.sha256(payload).digest() != digest:
                raise ValueError("checksum mismatch (truncated or corrupted)")
            data = marshal.loads(payload)
            if not isinstance(data, tuple) or len(data) != 4 or data[0] != FORMAT or data[1] != _build():
                raise ValueError("another format or engine build")
            entries, codes = data[2], data[3]
            if not isinstance(entries, dict) or not isinstance(codes, dict):
                raise ValueError("entries are not a table")
            if not all(isinstance(h, str) and len(h) == 64 and isinstance(b, bytes) for h, b in codes.items()):
                raise ValueError("bad code entry")
            for h, by_strict in entries.items():
                if not (isinstance(h, str) and len(h) == 64 and isinstance(by_strict, dict)):
                    raise ValueError("bad entry key")
                for strict, e in by_strict.items():
                    if strict not in ir.STRICTNESS:
                        raise ValueError("bad strictness")
                    _check_entry(e)
            self.entries, self.codes = entries, codes
        except Exception as exc:  # damaged: never trusted
            log.warning("compile cache %s is damaged (%s): ignored, it will be rebuilt", self.path, exc)
            self.entries, self.codes = {}, {}
            self.dirty = True

    def save(self) -> None:
        if not self.dirty or self.disabled:
            return
        payload = marshal.dumps((FORMAT, _build(), self.entries, self.codes))
        if cachefile.write(self.path, MAGIC + hashlib.sha256(payload).digest() + payload, "compile cache"):
            self.dirty = False

    # ------------------------------------------------------------ entries
    def known(self, text: str) -> bool:
        """Whether ``text`` compiled before without errors or warnings (so it parses)."""
        return text_key(text) in self.entries

    def get(self, text: str, schema: Any, strict: str) -> ir.Query | None:
        e = self.entries.get(text_key(text), {}).get(strict)
        if e is None:
            self.counts["misses"] += 1
            return None
        kind, nodes, steps, until, maxspan, pipes, fields = e
        for path, typ in fields:
            if schema.field(schema.resolve(path)).type.name != typ:
                self.counts["schema_mismatch"] += 1
                return None
        resolve = schema.resolve
        ns = tuple(ir.Node(i, op, args, value, ci, None if path is None else resolve(path), typ, multi)
                   for i, (op, args, value, ci, path, typ, multi) in enumerate(nodes))

        def step(s: tuple) -> ir.Step:
            return ir.Step(s[0], s[1], s[2], s[3], s[4], s[5])

        self.counts["hits"] += 1
        return ir.Query(kind, ns, tuple(map(step, steps)), step(until) if until is not None else None, maxspan,
                        pipes, tuple(p for p, _ in fields), text, ())

    def put(self, text: str, schema: Any, strict: str, q: ir.Query) -> None:
        if q.warnings or q.source != text:
            self.counts["uncacheable"] += 1
            return
        nodes = []
        for n in q.nodes:
            if not _plain(n.value) or (n.field_id is not None and n.op != "field"):
                self.counts["uncacheable"] += 1
                return
            nodes.append((n.op, tuple(n.args), n.value, bool(n.ci), n.value if n.field_id is not None else None,
                          n.type, bool(n.multi)))

        def step(s: ir.Step) -> tuple:
            return (s.id, s.category, s.pred, tuple(s.keys), tuple(s.keys_nullable), bool(s.missing))

        fields = tuple((p, schema.field(schema.resolve(p)).type.name) for p in q.fields)
        e = (q.kind, tuple(nodes), tuple(map(step, q.steps)), step(q.until) if q.until else None, q.maxspan_ns,
             tuple(tuple(p) for p in q.pipes), fields)
        _check_entry(e)
        self.entries.setdefault(text_key(text), {})[strict] = e
        self.counts["stored"] += 1
        self.dirty = True


    def code(self, src: str, filename: str) -> types.CodeType:
        """``compile(src, filename, "exec")``, from the cache when this exact source
        was compiled before (by this engine build and Python version)."""
        h = text_key(filename + "\0" + src)
        b = self.codes.get(h)
        if b is not None:
            try:
                code = marshal.loads(b)
                if code.__class__ is types.CodeType and code.co_filename == filename:
                    self.counts["code_hits"] += 1
                    return code
            except Exception:  # noqa: BLE001 - a bad entry is a miss
                pass
            log.warning("compile cache %s: a code entry is damaged: recompiled", self.path)
        code = compile(src, filename, "exec")
        self.codes[h] = marshal.dumps(code)
        self.counts["code_stored"] += 1
        self.dirty = True
        return code


# --------------------------------------------------------------------------- the process's cache

_ACTIVE: CompileCache | None = None
_CONFIGURED = False


def configure(directory: str | os.PathLike[str] | None) -> CompileCache | None:
    """Use the compile cache in ``directory`` from now on (None: none)."""
    global _ACTIVE, _CONFIGURED
    _CONFIGURED = True
    if _ACTIVE is not None:
        _ACTIVE.save()
    _ACTIVE = CompileCache(directory) if directory else None
    return _ACTIVE


def active() -> CompileCache | None:
    """The configured cache; the first call reads ``KESTREL_COMPILE_CACHE`` if nothing was configured."""
    if not _CONFIGURED:
        configure(os.environ.get("KESTREL_COMPILE_CACHE") or None)
    return _ACTIVE if _ACTIVE is not None and not _ACTIVE.disabled else None


_ASTS: dict[tuple[str, str | None], Any] = {}
_ASTS_MAX = 8192


def parse_checked(text: str, source_name: str | None) -> Any:
    """Parse ``text`` (raises the located EqlError) and keep the tree for the
    compile that usually follows (the rule-file check and the engine each
    parsed every query: half of a cold pack load)."""
    from .parser import parse

    tree = parse(text, source_name)
    if len(_ASTS) >= _ASTS_MAX:
        _ASTS.pop(next(iter(_ASTS)))
    _ASTS[(text, source_name)] = tree
    return tree


def compile_query(text: str, schema: Any, *, strict: str = "warn", source_name: str | None = None) -> ir.Query:
    """:func:`kestrel_core.eql.ir.compile_query` through the active cache (and the
    tree :func:`parse_checked` kept, used once)."""
    cache = active()
    q = cache.get(text, schema, strict) if cache is not None else None
    if q is None:
        q = ir.compile_query(_ASTS.pop((text, source_name), None) or text, schema, strict=strict,
                             source_name=source_name)
        if cache is not None:
            cache.put(text, schema, strict, q)
    return q


_CODES: dict[tuple[str, str], types.CodeType] = {}
_CODES_MAX = 4096


def compile_code(src: str, filename: str) -> types.CodeType:
    """``compile(src, filename, "exec")`` through the active cache (host predicates).

    Also memoized in the process: rules of one shape generate the same source
    (their constants are bound as globals, not inlined), so a 1,000-rule pack
    compiles a few dozen distinct sources, not 600."""
    code = _CODES.get((filename, src))
    if code is not None:
        return code
    cache = active()
    code = compile(src, filename, "exec") if cache is None else cache.code(src, filename)
    if len(_CODES) >= _CODES_MAX:
        _CODES.pop(next(iter(_CODES)))
    _CODES[(filename, src)] = code
    return code


def save() -> None:
    """Write the active cache if it learned anything (after an engine is built)."""
    if _ACTIVE is not None:
        _ACTIVE.save()
