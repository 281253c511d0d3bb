"""Write tables to CSV or Parquet atomically: a temporary file in the same folder, then a rename.

A failure (disk full, interrupted) never leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from daq.errors import DaqError
from daq.export.table import RunTable


class ExportError(DaqError):
    """An export could not be written."""


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    final = Path(final)
    folder = final.parent if str(final.parent) else Path(".")
    if not folder.exists():
        raise ExportError(f"output folder {folder} does not exist; create it or choose another --out")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=folder)
    os.close(fd)
    # mkstemp makes 0600 files; an export is an ordinary file, readable as the umask allows
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {final}: {exc.strerror or exc}; nothing was left under that name") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fmt(v: object) -> object:
    if v is None:
        return ""
    if isinstance(v, float):
        return format(v, ".12g")
    return v


def write_csv(table: RunTable, out: Path, *, header: list[str] | None = None) -> None:
    with atomic_path(out) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header or table.columns)
        cols = [table.data[c] for c in table.columns]
        for row in zip(*cols, strict=True):
            writer.writerow([_fmt(v) for v in row])


def write_parquet(
    table: RunTable, out: Path, *, header: list[str] | None = None, metadata: dict[str, str] | None = None
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = header or table.columns
    arrays = [pa.array(table.data[c]) for c in table.columns]
    fields = [
        pa.field(n, a.type, metadata={"unit": u} if u else None)
        for n, a, u in zip(names, arrays, table.units, strict=True)
    ]
    pa_table = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))
    with atomic_path(out) as tmp:
        pq.write_table(pa_table, tmp)


WRITERS: dict[str, Callable[..., None]] = {"csv": write_csv, "parquet": write_parquet}
