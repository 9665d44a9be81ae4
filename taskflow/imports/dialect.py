"""Whether PostgreSQL's CSV parser reads an import file's records exactly as the strict reader does.

The fast staging path (taskflow.imports.staging.copy_file) hands the file's bytes to
COPY ... (FORMAT csv) and lets PostgreSQL split the records. PostgreSQL's dialect is more lenient
than Python's strict csv reader (taskflow.imports.reading), and silently so: a quote inside an
unquoted field opens a quoted section there (`ab"c,d"` is one field), text after a closing quote
is glued on (`"ab"c`), a lone carriage return ends a record. So only bytes that match the strict
grammar, with exactly the header's number of fields per record, are ever handed over: each chunk
is matched by one regular-expression call (possessive, so it never backtracks), never record by
record in Python. What this grammar cannot see, PostgreSQL refuses with an error (invalid UTF-8,
NUL bytes, mixed line endings) or the staging checks afterwards (a field longer than the strict
reader's limit); either sends the file to the strict reader, which alone reports faults.

Blank lines are refused too: the strict reader skips them, PostgreSQL errors on them (they would
also shift the line numbers); only trailing ones at the end of the file are dropped here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# A field as the strict reader and PostgreSQL both read it: quoted (quotes inside doubled, any
# other byte, line breaks included) or unquoted (no quote, comma or line break at all).
_QUOTED = rb'"(?:[^"]++|"")*+"'
_UNQUOTED = rb'[^",\r\n]*+'
_FIELD = rb"(?:" + _QUOTED + rb"|" + _UNQUOTED + rb")"
# Bytes a record may be cut at by a chunk's end: fields, then a field begun (a quoted one maybe
# unclosed, or closed and followed by the CR of a CRLF).
_BEGUN = rb'(?:"(?:[^"]++|"")*+"?|' + _UNQUOTED + rb")\r?"
# Only line breaks: blank lines at the end of a file (the strict reader skips them).
_BREAKS = re.compile(rb"[\r\n]*")
# Above any record the strict reader accepts (a field is at most csv.field_size_limit() long):
# a record still unfinished after this many bytes goes to the strict reader.
MAX_PENDING = 16 * 1024 * 1024


class NotSameDialect(Exception):
    """The file's bytes could read differently under PostgreSQL's CSV parser: use the strict one."""


@dataclass(frozen=True)
class Grammar:
    records: re.Pattern[bytes]  # whole records, each ended by LF or CRLF
    record: re.Pattern[bytes]  # one record without its line break (the file's last)
    begun: re.Pattern[bytes]  # the beginning of a record, cut by a chunk's end


@functools.cache
def grammar(width: int) -> Grammar:
    """The strict grammar of records of `width` fields (built once per width)."""
    record = _FIELD + rb"(?:," + _FIELD + rb"){%d}" % (width - 1)
    return Grammar(
        records=re.compile(rb"(?:" + record + rb"\r?\n)*+"),
        record=re.compile(record),
        begun=re.compile(rb"(?:" + _FIELD + rb",){0,%d}" % (width - 1) + _BEGUN + rb"\Z"),
    )


class Checked:
    """Feed a file's bytes (after its header) chunk by chunk; get back the prefix of whole records
    that read the same under both parsers, or NotSameDialect. Counts the line breaks handed on."""

    def __init__(self, width: int) -> None:
        self.grammar = grammar(width)
        self.pending = b""
        self.lines = 0  # physical lines of the records handed on
        self.longest_line = 0  # in bytes: no field is longer unless its record spans lines

    def feed(self, chunk: bytes) -> bytes:
        """The whole records now complete; the rest waits for the next chunk."""
        data = self.pending + chunk if self.pending else chunk
        whole = self.grammar.records.match(data)
        assert whole is not None  # zero records match anything
        end = whole.end()
        rest = data[end:]
        if rest and not (self.grammar.begun.match(rest) or _BREAKS.fullmatch(rest)):
            raise NotSameDialect
        if len(rest) > MAX_PENDING:
            raise NotSameDialect
        self.pending = rest
        done = data[:end] if end < len(data) else data
        self.lines += done.count(b"\n")
        self._measure(done)
        return done

    def _measure(self, records: bytes) -> None:
        if records:
            self.longest_line = max(self.longest_line, *map(len, records.split(b"\n")))

    def finish(self) -> bytes:
        """The file's last record (it may lack its line break), once the file has ended."""
        rest = self.pending
        self.pending = b""
        last = rest.rstrip(b"\r\n")
        if not last:
            return b""
        if not self.grammar.record.fullmatch(last):
            raise NotSameDialect
        self.lines += last.count(b"\n") + 1
        self._measure(last)
        return last
