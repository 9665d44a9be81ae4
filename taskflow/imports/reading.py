"""Reading an import file: UTF-8 CSV, one record at a time, with the line each record starts on.

Python's csv module (strict) is the reference reading of a file: PostgreSQL splits a file's
records itself (taskflow.imports.staging.copy_file) only where taskflow.imports.dialect finds
that it reads them exactly as this reader does; every other file is read here, and only this
reader reports a malformed file's faults. Memory stays
bounded by one line and one record (csv.field_size_limit caps a field, so an unterminated quote
cannot swallow the file). Structural faults come out as `Malformed` with their line; blank
lines are skipped.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from taskflow.imports.columns import MAX_HEADER_BYTES, InvalidHeader, check_header

UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Record:
    line: int
    fields: list[str]


@dataclass(frozen=True)
class Malformed:
    line: int
    reason: str


class _Lines:
    """Decoded lines of a binary file, counting them and the bytes read (for progress)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.number = 0
        self.bytes_read = 0
        self.bad: Malformed | None = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self.source.readline()
        if not raw:
            raise StopIteration
        self.number += 1
        self.bytes_read += len(raw)
        if self.number == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.bad = Malformed(
                self.number,
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
            )
            return "\n"  # stands in for the line, so the parser keeps its line count
        if "\x00" in text:
            self.bad = Malformed(self.number, "contains a NUL character")
            return "\n"
        return text


class CsvRecords:
    """Iterate `Record | Malformed` over a file whose first row is its header."""

    def __init__(self, source: BinaryIO) -> None:
        self.lines = _Lines(source)
        self.reader = csv.reader(self.lines, strict=True)
        self.columns: tuple[str, ...] = ()

    @property
    def bytes_read(self) -> int:
        return self.lines.bytes_read

    def read_header(self) -> tuple[str, ...]:
        """The validated header (InvalidHeader if it is wrong or the file is empty)."""
        try:
            names = next(self.reader, [])
        except csv.Error as exc:
            raise InvalidHeader(f"The header row is not valid CSV: {exc}.") from exc
        if self.lines.bad is not None:
            raise InvalidHeader(f"The header row is {self.lines.bad.reason}; files must be UTF-8.")
        self.columns = check_header(names)
        return self.columns

    def __iter__(self) -> Iterator[Record | Malformed]:
        width = len(self.columns)
        reader, lines = self.reader, self.lines
        end = lines.number
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                end = lines.number
                yield Malformed(start, _quoting_reason(str(exc)))
                continue
            end = lines.number
            if lines.bad is not None:
                bad, lines.bad = lines.bad, None
                yield bad
            elif len(row) == width:
                yield Record(start, row)
            elif row:
                yield Malformed(start, f"has {len(row)} fields; the header has {width}")


def header_of(head: bytes) -> tuple[str, ...]:
    """The checked columns of the first line of `head`, a file's first bytes (InvalidHeader when
    it is wrong): an upload is checked by this as soon as its first line has arrived."""
    line = head.split(b"\n", 1)[0]
    if len(line) > MAX_HEADER_BYTES:
        raise InvalidHeader(f"The header row is longer than {MAX_HEADER_BYTES} bytes.")
    if line.startswith(UTF8_BOM):
        line = line[len(UTF8_BOM) :]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidHeader("The header row is not valid UTF-8; files must be UTF-8.") from exc
    try:
        names = next(csv.reader([text]), [])
    except csv.Error as exc:
        raise InvalidHeader(f"The header row is not valid CSV: {exc}.") from exc
    return check_header(names)


def _quoting_reason(message: str) -> str:
    if "field larger than field limit" in message:
        return (
            f"a field is longer than {csv.field_size_limit()} characters"
            " (a quote that is never closed?)"
        )
    if "unexpected end of data" in message:
        return "a quoted field is never closed"
    return f"bad quoting ({message})"
