"""Uploads streamed to disk: never whole in memory, size-limited, hashed, header checked early.

The header row is checked as soon as it has arrived, so a file with wrong columns is refused
before the rest of it is stored. Two DRF parsers feed the same writer: a text/csv body and a
multipart form whose `file` field goes to disk through a Django upload handler.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, DataAndFiles

from control_plane.imports import conf
from taskflow.imports.entry import MAX_HEADER_BYTES, header_of
from tenants.binding import tenant_of
from tenants.problems import Problem

CHUNK_BYTES = 256 * 1024
MULTIPART_OVERHEAD = 64 * 1024


class UploadTooLarge(Problem):
    status = 413
    title = "Payload too large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Import files may be at most {limit} bytes.", max_upload_bytes=limit)


class UploadMissing(Problem):
    status = 400
    title = "Invalid input"

    def __init__(self) -> None:
        super().__init__(
            "Send the CSV file as a text/csv body, or as the multipart form field `file`.",
            errors=[{"field": "file", "message": "This field is required."}],
        )


class EmptyUpload(Problem):
    """A text/csv body of no bytes: a CSV without even its header line (422, like a wrong
    header; a multipart form without its `file` field is a malformed request, 400)."""

    status = 422
    title = "Invalid CSV header"

    def __init__(self) -> None:
        super().__init__(
            "The CSV body is empty: a header row is required.",
            errors=[{"field": "file", "message": "The file is empty."}],
        )


@dataclass(frozen=True)
class StoredUpload:
    path: Path
    name: str
    size: int
    sha256: str
    columns: tuple[str, ...]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class UploadWriter:
    """Writes one upload to a new file under the upload folder; aborts on any fault."""

    def __init__(self, *, tenant_id: int, name: str = "", limit: int | None = None) -> None:
        self.limit = conf.max_upload_bytes() if limit is None else limit
        folder = conf.upload_dir() / str(tenant_id)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{uuid.uuid4().hex}.csv"
        self.partial = self.path.with_suffix(".part")
        self.name = Path(name).name[:255] or "upload.csv"
        self.file: IO[bytes] | None = self.partial.open("xb")
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()
        self.columns: tuple[str, ...] | None = None

    def write(self, chunk: bytes) -> None:
        try:
            self.size += len(chunk)
            if self.size > self.limit:
                raise UploadTooLarge(self.limit)
            if self.columns is None:
                self._sniff_header(chunk)
            assert self.file is not None
            self.file.write(chunk)
            self.digest.update(chunk)
        except BaseException:
            self.abort()
            raise

    def _sniff_header(self, chunk: bytes) -> None:
        self.head += chunk[: MAX_HEADER_BYTES + 1]
        if b"\n" in self.head or len(self.head) > MAX_HEADER_BYTES:
            self.columns = header_of(bytes(self.head))

    def finish(self) -> StoredUpload:
        try:
            if self.columns is None:
                self.columns = header_of(bytes(self.head))
            assert self.file is not None
            self.file.close()
            self.file = None
            self.partial.rename(self.path)
        except BaseException:
            self.abort()
            raise
        return StoredUpload(self.path, self.name, self.size, self.digest.hexdigest(), self.columns)

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.partial.unlink(missing_ok=True)


def store_chunks(
    chunks: Iterable[bytes], *, tenant_id: int, name: str = "", limit: int | None = None
) -> StoredUpload:
    """Store an upload given as chunks (a request body, a local file)."""
    writer = UploadWriter(tenant_id=tenant_id, name=name, limit=limit)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def read_chunks(stream: Any, size: int = CHUNK_BYTES) -> Iterable[bytes]:
    while chunk := stream.read(size):
        yield chunk


def _tenant_id(parser_context: Mapping[str, Any] | None) -> int:
    request = (parser_context or {})["request"]
    return int(tenant_of(request).pk)


def _refuse_declared_size(meta: dict[str, Any], overhead: int = 0) -> None:
    """413 before reading a byte when Content-Length already says the file is too large."""
    limit = conf.max_upload_bytes()
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + overhead:
        raise UploadTooLarge(limit)


class CsvBodyParser(BaseParser):
    """A text/csv request body, streamed to disk."""

    media_type = "text/csv"

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> DataAndFiles:
        request = (parser_context or {})["request"]
        _refuse_declared_size(request.META)
        if stream is None:
            raise UploadMissing
        stored = store_chunks(read_chunks(stream), tenant_id=_tenant_id(parser_context))
        return DataAndFiles({}, {"file": StoredFile(stored)})


class StoredFile(UploadedFile):
    """What request.FILES holds for an import upload: the stored file, already closed."""

    def __init__(self, stored: StoredUpload) -> None:
        super().__init__(file=None, name=stored.name, size=stored.size)
        self.stored = stored

    def close(self) -> None:
        """Nothing is open: the writer closed the file on disk when the upload completed."""


class DiskUploadHandler(FileUploadHandler):
    """Sends the multipart field `file` straight to an UploadWriter; other files are refused."""

    chunk_size = CHUNK_BYTES

    def __init__(self, tenant_id: int) -> None:
        super().__init__()
        self.tenant_id = tenant_id
        self.writer: UploadWriter | None = None

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        if field_name != "file" or self.writer is not None:
            raise UploadMissing
        self.writer = UploadWriter(tenant_id=self.tenant_id, name=file_name)
        raise StopFutureHandlers

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        assert self.writer is not None
        self.writer.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> StoredFile | None:
        assert self.writer is not None
        return StoredFile(self.writer.finish())

    def upload_interrupted(self) -> None:
        if self.writer is not None:
            self.writer.abort()


class MultipartCsvParser(BaseParser):
    """multipart/form-data with the CSV in the field `file` (and optional form fields)."""

    media_type = "multipart/form-data"

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> DataAndFiles:
        request = (parser_context or {})["request"]
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        _refuse_declared_size(meta, MULTIPART_OVERHEAD)
        handler = DiskUploadHandler(_tenant_id(parser_context))
        try:
            parser = DjangoMultiPartParser(meta, stream, [handler], "utf-8")
            data, files = parser.parse()
        except MultiPartParserError as exc:  # a 400, as DRF's own multipart parser has it
            handler.upload_interrupted()
            raise ParseError(f"Multipart form parse error - {exc}") from exc
        except BaseException:
            handler.upload_interrupted()
            raise
        if "file" not in files and isinstance(data.get("file"), str):
            # RFC 7578 makes a part's filename optional: `file` sent as a plain field (as some
            # clients and generators do for a binary property) is the CSV all the same. Such a
            # part was read into memory within Django's DATA_UPLOAD_MAX_MEMORY_SIZE.
            data = data.copy()
            content = data.pop("file")[-1]
            files = files.copy()
            files["file"] = StoredFile(
                store_chunks([content.encode()], tenant_id=_tenant_id(parser_context))
            )
        return DataAndFiles(data, files)


def uploaded(files: Any, content_type: str = "") -> StoredUpload:
    """The stored upload of a parsed request: 422 for an empty text/csv body, else 400."""
    item = files.get("file") if files is not None else None
    if not isinstance(item, StoredFile):
        if content_type.split(";")[0].strip().lower() == CsvBodyParser.media_type:
            raise EmptyUpload
        raise UploadMissing
    return item.stored
