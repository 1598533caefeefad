"""A sweep's table on disk (``results.parquet`` and its folder): the rows of finished trials, each
written whole and renamed into place, the consolidated table, and what makes a rerun a resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .files import write_atomic
from .sweep_grid import SweepError, Trial


@dataclass
class Table:
    """A sweep's table on disk: ``path`` and its folder ``path.d`` (rows, outputs, ``sweep.json``);
    ``columns``: name -> Arrow type, in order."""

    path: Path
    columns: dict[str, str] = field(default_factory=dict)

    def schema(self):
        import pyarrow as pa

        return pa.schema([(name, getattr(pa, kind)()) for name, kind in self.columns.items()])

    @property
    def folder(self) -> Path:
        return self.path.with_name(self.path.name + ".d")

    @property
    def rows(self) -> Path:
        return self.folder / "rows"

    def outputs(self, trial: Trial) -> Path:
        return self.folder / f"trial-{trial.key}.npz"

    def existing(self, identity: dict, force: bool) -> dict[str, dict]:
        """The rows this sweep already recorded here (none for a new output); another sweep's table,
        or a file that is none, is refused unless ``force``.  Writes nothing."""
        if not self.path.parent.is_dir():
            raise SweepError(f"the folder {self.path.parent} does not exist (--output)")
        if self.path.is_dir():
            raise SweepError(f"{self.path} is a directory (--output)")
        if not (self.path.exists() or self.folder.exists()):
            return {}
        if self._holds(identity):
            return self.recorded()
        if not force:
            what = ("holds the table of another sweep (its spec, grid, seeds, hyperparameters, steps, backend or "
                    "metrics differ)" if (self.folder / "sweep.json").exists() else "exists and is no sweep's table")
            raise SweepError(f"{self.path} {what}; pass --force to replace it, or choose another --output")
        return {}

    def prepare(self, identity: dict) -> None:
        """Make the folder ready for this sweep: another sweep's table and folder go (``existing`` has
        checked that they may), and ``sweep.json`` says which sweep this is."""
        if not self._holds(identity):
            shutil.rmtree(self.folder, ignore_errors=True)
            self.path.unlink(missing_ok=True)
        self.rows.mkdir(parents=True, exist_ok=True)
        text = json.dumps(identity, indent=1, sort_keys=True)
        write_atomic(self.folder / "sweep.json", lambda tmp: tmp.write_text(text))

    def _holds(self, identity: dict) -> bool:
        try:
            return json.loads((self.folder / "sweep.json").read_text()) == identity
        except (OSError, ValueError):
            return False

    def recorded(self) -> dict[str, dict]:
        """The rows written so far, by trial key (an ``ok`` row whose outputs are missing is not kept)."""
        import pyarrow.parquet as pq

        out = {}
        for part in sorted(self.rows.glob("trial-*.parquet")):
            row = pq.read_table(part).to_pylist()[0]
            if row["status"] == "ok" and not (self.path.parent / row["outputs"]).exists():
                continue
            out[row["trial"]] = row
        return out

    def write_row(self, row: dict, arrays: dict | None) -> None:
        """One finished trial: its outputs, then its row (each written whole, then renamed into place)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if arrays is not None:
            write_atomic(self.path.parent / row["outputs"], lambda tmp: _savez(tmp, arrays))
        table = pa.Table.from_pylist([row], schema=self.schema())
        write_atomic(self.rows / f"trial-{row['trial']}.parquet", lambda tmp: pq.write_table(table, tmp))

    def consolidate(self, order: Sequence[str]) -> int:
        """Rewrite the table from the rows written, in trial order; returns its number of rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self.recorded()
        table = pa.Table.from_pylist([rows[k] for k in order if k in rows], schema=self.schema())
        write_atomic(self.path, lambda tmp: pq.write_table(table, tmp))
        return table.num_rows


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a path
        np.savez(f, **arrays)


def spec_digest(path: Path) -> str:
    """The digest of the spec's text (an edited spec is another sweep)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["Table", "spec_digest"]
