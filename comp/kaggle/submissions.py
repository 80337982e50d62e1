"""`comp submissions`: the competition's recent submissions on Kaggle beside the ledger's OOF scores.

`list_submissions` only reads; `refresh_scores` also writes the statuses and public scores Kaggle
now knows into the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from rich.text import Text

from comp.kaggle.client import SubmissionStatus, check_slug, create_session, status_name
from comp.kaggle.ledger import oof_by_ref, update_entry
from comp.runs import LEDGER


@dataclass
class SubmissionRow:
    ref: str
    date: str
    file_name: str
    description: str
    status: SubmissionStatus
    public_score: str
    private_score: str
    oof_score: str  # from the ledger, when comp submitted this one


@dataclass
class Submissions:
    competition: str
    rows: list[SubmissionRow]  # newest first

    def __rich__(self) -> Table:
        table = Table(
            "date",
            "ref",
            "file",
            "message",
            "status",
            "public",
            "private",
            "OOF",
            title=f"{self.competition}: {len(self.rows)} recent submission(s)",
        )
        for r in self.rows:
            cells = (r.date, r.ref, r.file_name, r.description, r.status, r.public_score, r.private_score, r.oof_score)
            table.add_row(*map(Text, cells))
        return table


def list_submissions(competition: str, limit: int = 20, ledger_path: Path = LEDGER) -> Submissions:
    """The competition's `limit` most recent submissions, with the ledger's OOF score of each it knows."""
    session = create_session(check_slug(competition))
    with session.calling("listing submissions"):
        found = session.api.competition_submissions(competition, page_size=limit) or []
    oof = oof_by_ref(ledger_path)
    rows = [
        SubmissionRow(
            str(sub.ref),
            sub.date.strftime("%Y-%m-%d %H:%M") if sub.date else "",
            sub.file_name or "",
            sub.description or "",
            status_name(sub),
            sub.public_score or "",
            sub.private_score or "",
            oof.get(str(sub.ref), ""),
        )
        for sub in found
    ]
    return Submissions(competition, rows)


def refresh_scores(competition: str, limit: int = 20, ledger_path: Path = LEDGER) -> Submissions:
    """list_submissions, then write each listed submission's status and public score into the ledger
    (rows of submissions comp sent; the others are left alone)."""
    listed = list_submissions(competition, limit, ledger_path)
    for row in listed.rows:
        update_entry(row.ref, {"status": row.status, "public_score": row.public_score}, ledger_path)
    return listed
