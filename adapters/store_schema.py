"""Versioned schema of the event store: an ordered list of migrations.

A migration is applied once, in its own transaction, and recorded in
``schema_migrations``. Never edit a released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "events log, positions projection",
        """
        CREATE TABLE events (
            id             INTEGER PRIMARY KEY AUTOINCREMENT,
            ts_ms          INTEGER NOT NULL,
            type           TEXT    NOT NULL,
            actor          TEXT    NOT NULL,
            position_id    TEXT,
            correlation_id TEXT,
            symbol         TEXT,
            exchange       TEXT,
            severity       INTEGER NOT NULL,
            data           TEXT    NOT NULL
        );
        CREATE INDEX ix_events_position ON events(position_id, id) WHERE position_id IS NOT NULL;
        CREATE INDEX ix_events_type_ts ON events(type, ts_ms);
        CREATE INDEX ix_events_ts ON events(ts_ms);
        CREATE INDEX ix_events_actor ON events(actor, id);
        CREATE INDEX ix_events_correlation ON events(correlation_id) WHERE correlation_id IS NOT NULL;

        CREATE TABLE positions (
            position_id    TEXT    PRIMARY KEY,
            exchange       TEXT    NOT NULL,
            symbol         TEXT    NOT NULL,
            state          TEXT    NOT NULL,
            is_open        INTEGER NOT NULL,
            data           TEXT    NOT NULL,
            updated_ts_ms  INTEGER NOT NULL,
            last_event_id  INTEGER NOT NULL
        );
        CREATE INDEX ix_positions_open ON positions(is_open, exchange, symbol);
        """,
    ),
    (
        2,
        "incarnations: fencing epochs of named actors",
        # One row per incarnation. AUTOINCREMENT: an epoch is never reused, even
        # after retention deleted old rows, so epochs only grow across restarts.
        """
        CREATE TABLE incarnations (
            epoch       INTEGER PRIMARY KEY AUTOINCREMENT,
            name        TEXT    NOT NULL,
            started_ms  INTEGER NOT NULL,
            urn         TEXT    NOT NULL
        );
        CREATE INDEX ix_incarnations_name ON incarnations(name, epoch);
        """,
    ),
]

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version        INTEGER PRIMARY KEY,
    description    TEXT    NOT NULL,
    applied_ts_ms  INTEGER NOT NULL
);
"""

LATEST_VERSION = MIGRATIONS[-1][0]
