"""squall/store/sqlite.py on a real SQLite file: a duplicate check that stays an
index lookup however long the history grows. What every store does is in
test_store.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support import run_async

from squall.store.sqlite import SQLiteStore, earlier_copies_sql


def test_the_duplicate_check_is_an_index_lookup(tmp_path: Path) -> None:
    path = tmp_path / "squall.db"
    store = SQLiteStore(str(path))

    async def create() -> None:
        await store.open()
        await store.close()

    run_async(create())
    with sqlite3.connect(path) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN " + earlier_copies_sql(3), ["r", "n", "c"] * 3
        ).fetchall()
    details = " | ".join(str(row[-1]) for row in plan)
    assert "USING INDEX messages_by_client_id" in details, details
    assert "SCAN m" not in details and "SCAN messages" not in details, details
