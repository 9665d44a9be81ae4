"""Malformed CSV fails the job with the lines at fault, and nothing is written, in either mode."""

from __future__ import annotations

import pytest

from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows

pytestmark = pytest.mark.worker

GOOD = csv_bytes(generated_rows(3, "P1"))  # header + lines 2-4


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        pytest.param(
            b'X-1,P1,"quoted"title,,,,,\n',
            [["5", "", "bad quoting (',' expected after '\"')"]],
            id="text after a closing quote",
        ),
        pytest.param(
            b'X-1,P1,"never closed,,,,,\nX-2,P1,t,,,,,\n',
            [["5", "", "a quoted field is never closed"]],
            id="unterminated quote",
        ),
        pytest.param(
            b"X-1,P1,caf\xe9,,,,,\nX-2,P1,ok,,,,,\nX-3,P1,\xff\xfe,,,,,\n",
            [
                ["5", "", "not valid UTF-8 (byte 0xe9 at column 11)"],
                ["7", "", "not valid UTF-8 (byte 0xff at column 8)"],
            ],
            id="latin-1 bytes",
        ),
        pytest.param(
            b"X-1,P1,too few\nX-2,P1,ok,,,,,\nX-3,P1,too,many,,,,,,\n",
            [
                ["5", "", "has 3 fields; the header has 8"],
                ["7", "", "has 10 fields; the header has 8"],
            ],
            id="ragged rows",
        ),
        pytest.param(
            b"X-1,P1,nul\x00byte,,,,,\n",
            [["5", "", "contains a NUL character"]],
            id="NUL byte",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["all_or_nothing", "skip_invalid"])
def test_malformed_csv_fails_with_line_numbers_and_writes_nothing(
    import_tenant: ImportTenant, worker: object, tail: bytes, expected: list[list[str]], mode: str
) -> None:
    job = import_tenant.import_and_wait(GOOD + tail, mode=mode)
    assert job["status"] == "failed", job
    assert job["error"].startswith("The file is not well-formed CSV; nothing was written.")
    assert f"Line {expected[0][0]}: " in job["error"]
    assert import_tenant.errors(job["id"])[1:] == expected
    assert import_tenant.tasks() == []


def test_quoted_newlines_are_data_and_lines_stay_physical(
    import_tenant: ImportTenant, worker: object
) -> None:
    body = (
        b"external_id,project,title,description\r\n"
        b'M-1,P1,multi,"first\r\nsecond\r\nthird"\r\n'  # lines 2-4
        b"\r\n"  # line 5: blank, skipped
        b"M-2,NOPE,bad project,x\r\n"  # line 6
    )
    job = import_tenant.import_and_wait(body, mode="skip_invalid")
    assert job["status"] == "succeeded", job
    assert import_tenant.errors(job["id"])[1:] == [
        ["6", "project", "no live project has this key", "M-2", "NOPE", "bad project", "x"]
    ]
    assert import_tenant.tasks()[0].description == "first\r\nsecond\r\nthird"


def test_utf8_bom_and_any_column_order_are_accepted(
    import_tenant: ImportTenant, worker: object
) -> None:
    body = "\ufefftitle,Project,EXTERNAL_ID\nÜberprüfung ✓,P1,U-1\n".encode()
    job = import_tenant.import_and_wait(body)
    assert job["status"] == "succeeded", job
    assert [(t.external_id, t.title) for t in import_tenant.tasks()] == [("U-1", "Überprüfung ✓")]


def test_faults_after_quoted_newlines_name_physical_lines_in_report_and_summary(
    import_tenant: ImportTenant, worker: object
) -> None:
    """A file PostgreSQL splits itself (no blank line, nothing it could read otherwise): the
    records spanning lines move every later line number, the repeat's "also on line" too."""
    body = (
        b"external_id,project,title,description\n"
        b'Q-1,P1,multi,"first\nsecond, ""quoted""\nthird"\n'  # lines 2-4
        b"Q-2,NOPE,bad project,x\n"  # line 5
        b'Q-3,P1,"two\nlines",y\n'  # lines 6-7
        b"Q-1,P1,repeat,z\n"  # line 8
    )
    job = import_tenant.import_and_wait(body, mode="skip_invalid")
    assert job["status"] == "succeeded", job
    assert (job["rows_read"], job["inserted"], job["rejected"]) == (4, 1, 3)
    assert "Line 2, external_id: is repeated in the file (also on line 8)." in job["error"]
    assert import_tenant.errors(job["id"])[1:] == [
        ["2", "external_id", "is repeated in the file (also on line 8)", "Q-1", "P1", "multi",
         'first\nsecond, "quoted"\nthird'],
        ["5", "project", "no live project has this key", "Q-2", "NOPE", "bad project", "x"],
        ["8", "external_id", "is repeated in the file (also on line 2)", "Q-1", "P1", "repeat",
         "z"],
    ]  # fmt: skip
    assert [(t.external_id, t.title) for t in import_tenant.tasks()] == [("Q-3", "two\nlines")]


def test_a_file_postgresql_would_read_otherwise_is_read_by_the_strict_reader(
    import_tenant: ImportTenant, worker: object
) -> None:
    """A quote inside an unquoted field is a character to the strict reader; PostgreSQL would
    open a quoted section there and glue the next field on. The file is read as the strict
    reader reads it, with its physical lines."""
    body = (
        b"external_id,project,title,description\n"
        b'S-1,P1,"multi\nline",x\n'  # lines 2-3
        b'S-2,P1,5" screen,say "hi"\n'  # line 4
        b"S-3,NOPE,bad,y\n"  # line 5
    )
    job = import_tenant.import_and_wait(body, mode="skip_invalid")
    assert job["status"] == "succeeded", job
    assert import_tenant.errors(job["id"])[1:] == [
        ["5", "project", "no live project has this key", "S-3", "NOPE", "bad", "y"]
    ]
    assert [(t.title, t.description) for t in import_tenant.tasks()] == [
        ("multi\nline", "x"),
        ('5" screen', 'say "hi"'),
    ]
