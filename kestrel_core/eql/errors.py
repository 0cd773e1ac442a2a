"""Located EQL errors.

Every problem with a query (syntax, semantics, an unsupported construct) is
one :class:`EqlError` carrying the 1-based line and column of the offending
token, the name of the source (a rule file, ``<query>``) and the source line,
so ``str(err)`` reads like a compiler diagnostic::

    rules/x.toml:12:30: error: expected ')' or ',', got 'where'
      process where process.name in ("a" where
                                         ^
"""

from __future__ import annotations

SHOW_WIDTH = 120
"""Longest source line shown under a diagnostic; longer ones are cut around the column."""


class EqlError(Exception):
    """A located error in an EQL query.

    :ivar message: what is wrong, one sentence, no location.
    :ivar line: 1-based line (in ``source_name``'s coordinates).
    :ivar column: 1-based column.
    :ivar source_name: file or pseudo-name (``<query>``) the query came from.
    :ivar source_line: the text of the offending line, for the caret display.
    :ivar severity: ``"error"`` or ``"warning"``.
    """

    kind = "error"

    def __init__(
        self,
        message: str,
        line: int = 1,
        column: int = 1,
        source_name: str | None = None,
        source_line: str | None = None,
        *,
        severity: str = "error",
        length: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.source_name = source_name
        self.source_line = source_line
        self.severity = severity
        self.length = max(1, length)

    def located(self) -> str:
        name = self.source_name or "<query>"
        return f"{name}:{self.line}:{self.column}"

    def __str__(self) -> str:
        head = f"{self.located()}: {self.severity}: {self.message}"
        if self.source_line is None:
            return head
        line = self.source_line.rstrip("\r\n").expandtabs(1)
        col, length = self.column, self.length
        if len(line) > SHOW_WIDTH:  # a window around the column: a 4,000-digit literal is not worth printing
            start = max(0, col - 1 - SHOW_WIDTH // 4)
            end = start + SHOW_WIDTH
            line = ("…" if start else "") + line[start:end] + ("…" if end < len(line) else "")
            col = col - start + (1 if start else 0)
            length = min(length, SHOW_WIDTH - (col - 1))
        caret = " " * (col - 1) + "^" * min(length, max(1, len(line) - col + 1))
        return f"{head}\n  {line}\n  {caret}"

    def relocate(self, source_name: str | None, line_offset: int, col_offset: int, text_lines: list[str] | None) -> "EqlError":
        """Shift the position into a containing file (query embedded in a rule file).

        ``line_offset`` is added to every line; ``col_offset`` only to positions on
        the query's first line (the query starts mid-line in the file)."""
        if self.line == 1:
            self.column += col_offset
        self.line += line_offset
        self.source_name = source_name
        if text_lines is not None and 1 <= self.line <= len(text_lines):
            self.source_line = text_lines[self.line - 1]
        return self


class EqlSyntaxError(EqlError):
    """The query does not parse."""


class EqlSemanticError(EqlError):
    """The query parses but is wrong: unknown field, type mismatch, bad arity."""


class EqlWarning(EqlSemanticError):
    """A semantic problem reported, not raised (strictness ``warn``)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("severity", "warning")
        super().__init__(*args, **kwargs)
