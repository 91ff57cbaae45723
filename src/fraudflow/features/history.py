"""Real-time window features: each card's and terminal's recent transactions in Feast's online
store, so the scoring service computes the windows at the instant of each request exactly as
the offline tables do (:func:`fraudflow.features.compute.window_features`, one definition).

Three feature views hold the histories (``feature_repo/fraud_features.py``), each fed through
its Feast push source:

- ``customer_history``: a card's lake transactions of the last 30 days (ids, epoch seconds,
  amounts in cents) and ``THROUGH_SECONDS``, the end of the newest lake day they cover.
  Written by the batch path after each day (:func:`push_batch_history`).
- ``customer_live``: the card's transactions scored live since then, written by the scoring
  path for every transaction before it answers, so the card's next request counts it at once.
- ``terminal_history``: a terminal's lake transactions of the last 37 days with their labels
  (``TX_FRAUD``). Written by the batch path only: labels arrive with the daily files, and a
  transaction only enters a terminal window 7 days after it happened, by when its day's file
  is in the lake. So a live transaction counts in its terminal's risk only after the delay.

Merging (the lake is the truth for the days it covers): a card's history is the batch
entries plus the live entries later than the batch's ``THROUGH_SECONDS``, unique by
transaction id. Hence a retried transaction counts once, and the daily batch for a day that
was already pushed live converges to the same state (the lake's copy replaces the live one).
Out of order: a late transaction's own windows are exact (entries after its time are outside
them); a transaction scored before an earlier one arrived did not count it (nothing can).

The batch path writes with Feast's push API; the scoring path reads and writes the same rows
through the online store's own interface (``OnlineStore.online_read`` / ``online_write_batch``):
in Feast 0.67 one ``push`` costs ~50 ms (see docs/features-and-training.md). Known race: two
workers scoring one card within milliseconds can drop one live entry until the next batch.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import WINDOWS, amount_cents, epoch_seconds, window_features
from fraudflow.lake import read_lake
from fraudflow.lineage import record_lineage
from fraudflow.schema import LABEL_DELAY_DAYS
from fraudflow.settings import Settings

CUSTOMER_HISTORY, CUSTOMER_LIVE, TERMINAL_HISTORY = "customer_history", "customer_live", "terminal_history"
HISTORY_VIEWS = (CUSTOMER_HISTORY, CUSTOMER_LIVE, TERMINAL_HISTORY)
CUSTOMER_KEEP_SECONDS = max(WINDOWS) * 86_400  # the longest card window reaches this far back
TERMINAL_KEEP_SECONDS = (LABEL_DELAY_DAYS + max(WINDOWS)) * 86_400
LIVE_KEEP_SECONDS = CUSTOMER_KEEP_SECONDS + 86_400  # a day of slack for out-of-order arrivals


def push_source(view: str) -> str:
    """The Feast push source that feeds ``view`` (named in ``feature_repo``)."""
    return f"{view}_push"


class HistoryPush(BaseModel):
    through: dt.datetime
    customers: int
    terminals: int
    seconds: float


def _entity_lists(frame: pd.DataFrame, entity: str, columns: dict[str, str]) -> pd.DataFrame:
    """One row per entity with each of ``columns`` (source -> target) as a time-ordered list."""
    frame = frame.sort_values([entity, "SECONDS"], kind="stable")
    grouped = frame.groupby(entity, sort=False)
    out = pd.DataFrame({entity: list(grouped.groups)})
    for source, target in columns.items():
        out[target] = list(grouped[source].agg(list))
    return out


def batch_history_rows(lake: pd.DataFrame, through: dt.datetime) -> dict[str, pd.DataFrame]:
    """The rows the batch path pushes for lake transactions up to ``through`` (naive UTC):
    per card the last 30 days, per terminal the last 37 days with labels."""
    through_s = int(epoch_seconds(np.array([np.datetime64(through.replace(tzinfo=None), "us")]))[0])
    tx = lake.assign(
        SECONDS=epoch_seconds(lake["TX_DATETIME"].to_numpy()),
        CENTS=amount_cents(lake["TX_AMOUNT"].to_numpy()),
        ID=lake["TRANSACTION_ID"].astype(str),
        FRAUD=lake["TX_FRAUD"].astype(np.int64),
    )
    tx = tx[tx["SECONDS"] <= through_s]
    customers = _entity_lists(
        tx[tx["SECONDS"] > through_s - CUSTOMER_KEEP_SECONDS],
        "CUSTOMER_ID",
        {"ID": "TX_IDS", "SECONDS": "TX_SECONDS", "CENTS": "TX_CENTS"},
    )
    terminals = _entity_lists(
        tx[tx["SECONDS"] > through_s - TERMINAL_KEEP_SECONDS],
        "TERMINAL_ID",
        {"SECONDS": "TX_SECONDS", "FRAUD": "TX_FRAUD"},
    )
    for frame in (customers, terminals):
        frame["THROUGH_SECONDS"] = through_s
    return {CUSTOMER_HISTORY: customers, TERMINAL_HISTORY: terminals}


def push_batch_history(settings: Settings, store: Any, *, end: dt.datetime, run_id: str | None = None) -> HistoryPush:
    """Push the histories of every card and terminal seen in the lake's last 37 days before
    ``end`` (exclusive: ``end`` is the midnight after the newest lake day)."""
    started = time.perf_counter()
    end = end.astimezone(dt.UTC).replace(tzinfo=None) if end.tzinfo else end
    through = end - dt.timedelta(seconds=1)
    lake = read_lake(
        settings, start=(end - dt.timedelta(seconds=TERMINAL_KEEP_SECONDS + 86_400)).date(), end=through.date()
    )
    rows = batch_history_rows(lake, through)
    written_at = pd.Timestamp.now(tz="UTC")
    for view, frame in rows.items():
        if len(frame):
            store.push(push_source(view), frame.assign(event_timestamp=written_at))
    record_lineage(
        settings,
        stage="push_batch_history",
        run_id=run_id,
        read={"lake_until": through.isoformat(), "days": int(TERMINAL_KEEP_SECONDS / 86_400) + 1},
        wrote={
            "online_store": settings.online_store,
            "views": list(rows),
            "rows": {k: len(v) for k, v in rows.items()},
        },
    )
    return HistoryPush(
        through=through,
        customers=len(rows[CUSTOMER_HISTORY]),
        terminals=len(rows[TERMINAL_HISTORY]),
        seconds=round(time.perf_counter() - started, 3),
    )


@dataclass
class _Card:
    """A card's merged history while a request is scored (ids unique), and its live entries."""

    ids: list[str]
    seconds: list[int]
    cents: list[int]
    through: int
    live: list[tuple[str, int, int]] = field(default_factory=list)
    changed: bool = False

    @classmethod
    def from_rows(cls, get) -> _Card:
        ids, seconds, cents = (
            list(get(CUSTOMER_HISTORY, "TX_IDS")),
            list(get(CUSTOMER_HISTORY, "TX_SECONDS")),
            list(get(CUSTOMER_HISTORY, "TX_CENTS")),
        )
        through = get(CUSTOMER_HISTORY, "THROUGH_SECONDS") or 0
        card = cls(ids, seconds, cents, int(through))
        known = set(ids)
        for i, s, c in zip(
            get(CUSTOMER_LIVE, "TX_IDS"), get(CUSTOMER_LIVE, "TX_SECONDS"), get(CUSTOMER_LIVE, "TX_CENTS"), strict=False
        ):
            if s > card.through:
                card.live.append((i, s, c))
                if i not in known:
                    known.add(i)
                    card.ids.append(i), card.seconds.append(s), card.cents.append(c)
        return card

    def add(self, tx_id: str, seconds: int, cents: int) -> None:
        """Count a scored transaction once (a retry with the same id is not added again). One
        inside the batch's days (a replay of an old transaction) counts for its own windows but
        is not written: the lake is the truth there."""
        if tx_id in self.ids:
            return
        self.ids.append(tx_id), self.seconds.append(seconds), self.cents.append(cents)
        if seconds > self.through:
            self.live.append((tx_id, seconds, cents))
            self.changed = True

    def live_row(self) -> dict[str, list]:
        newest = max(s for _, s, _ in self.live)
        keep = sorted(
            (e for e in self.live if e[1] > max(self.through, newest - LIVE_KEEP_SECONDS)), key=lambda e: e[1]
        )
        return {"TX_IDS": [e[0] for e in keep], "TX_SECONDS": [e[1] for e in keep], "TX_CENTS": [e[2] for e in keep]}


def _windows_of(table: str, histories: list[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
    """The window features of every row of several entities' histories at once (row order:
    the histories concatenated), with one call of the offline tables' function."""
    codes = np.concatenate([np.full(len(s), k, dtype=np.int64) for k, (s, _) in enumerate(histories)])
    seconds = np.concatenate([np.asarray(s, dtype=np.int64) for s, _ in histories])
    values = np.concatenate([np.asarray(v, dtype=np.int64) for _, v in histories])
    order = np.lexsort((seconds, codes))
    columns = window_features(table, codes[order], seconds[order], values[order])
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return {name: column[back] for name, column in columns.items()}


class ServedWindows(BaseModel):
    """The window features of a request's transactions, and what the lookup learnt."""

    features: dict[str, list[float]]
    known_customer: list[bool]
    known_terminal: list[bool]
    live_rows: dict[str, dict[str, list]]  # card -> its new customer_live row (cards that changed)


def served_windows(
    rows: dict[str, list] | None,
    transaction_ids: Sequence[str],
    customers: Sequence[str],
    terminals: Sequence[str],
    when: np.ndarray,
    amounts: np.ndarray,
) -> ServedWindows:
    """The 12 window features of each transaction, in request order, from the entities' online
    rows (``rows``: :meth:`OnlineHistories.read`, the same shape as Feast's ``to_dict()`` with
    full feature names; None when the store could not be read: the request's own transactions
    are then the only history).

    Transactions of one card in one request count each other by time, like separate requests
    in time order would; a transaction id given twice counts once. All cards and terminals of
    a request go through one vectorised call per table.
    """
    n = len(transaction_ids)
    seconds, cents = epoch_seconds(when), amount_cents(amounts)
    ids = [str(t) for t in transaction_ids]

    def getter(i: int):
        def get(view: str, name: str):
            value = None if rows is None else rows[f"{view}__{name}"][i]
            return [] if value is None and name != "THROUGH_SECONDS" else value

        return get

    cards: dict[str, _Card] = {}
    known_customer = [False] * n
    for i in range(n):
        if customers[i] not in cards:
            cards[customers[i]] = _Card.from_rows(getter(i))
            card = cards[customers[i]]
            known_customer[i] = bool(card.ids) or card.through > 0
        else:
            known_customer[i] = True  # an earlier transaction of this request is its history
    for i in range(n):
        cards[customers[i]].add(ids[i], int(seconds[i]), int(cents[i]))
    names = list(cards)
    offsets = np.cumsum([0] + [len(cards[c].ids) for c in names])
    slot = {c: k for k, c in enumerate(names)}
    customer = _windows_of("customer", [(cards[c].seconds, cards[c].cents) for c in names])
    rows_c = [offsets[slot[customers[i]]] + cards[customers[i]].ids.index(ids[i]) for i in range(n)]

    histories: dict[str, tuple[list[int], list[int]]] = {}
    for i in range(n):
        if terminals[i] not in histories:
            get = getter(i)
            histories[terminals[i]] = (
                list(get(TERMINAL_HISTORY, "TX_SECONDS")),
                list(get(TERMINAL_HISTORY, "TX_FRAUD")),
            )
    known_terminal = [bool(histories[terminals[i]][0]) for i in range(n)]
    # Each transaction is scored against its terminal's labelled history (the window ends 7 days
    # before it, so the request's own transactions never count): one block per transaction.
    blocks = [(histories[terminals[i]][0] + [int(seconds[i])], histories[terminals[i]][1] + [0]) for i in range(n)]
    terminal = _windows_of("terminal", blocks)
    ends = np.cumsum([len(b[0]) for b in blocks]) - 1
    features = {name: [float(column[r]) for r in rows_c] for name, column in customer.items()}
    features |= {name: [float(column[e]) for e in ends] for name, column in terminal.items()}
    live_rows = {c: card.live_row() for c, card in cards.items() if card.changed}
    return ServedWindows(
        features=features, known_customer=known_customer, known_terminal=known_terminal, live_rows=live_rows
    )


_FIELDS = {
    CUSTOMER_HISTORY: ("TX_IDS", "TX_SECONDS", "TX_CENTS", "THROUGH_SECONDS"),
    CUSTOMER_LIVE: ("TX_IDS", "TX_SECONDS", "TX_CENTS"),
    TERMINAL_HISTORY: ("TX_SECONDS", "TX_FRAUD", "THROUGH_SECONDS"),
}
_JOIN_KEY = {CUSTOMER_HISTORY: "CUSTOMER_ID", CUSTOMER_LIVE: "CUSTOMER_ID", TERMINAL_HISTORY: "TERMINAL_ID"}


def _python(value) -> Any:
    """A Feast ValueProto's python value (lists for the list types, None when unset)."""
    kind = value.WhichOneof("val") if value is not None else None
    if kind is None:
        return None
    inner = getattr(value, kind)
    return list(inner.val) if kind.endswith("_list_val") else inner


class OnlineHistories:
    """The history rows of Feast's online store, read and written per request through the
    store's own interface (see the module docstring for why not ``push``)."""

    def __init__(self, store: Any) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config

        self.config = store.config
        self.online = get_online_store_from_config(store.config.online_store)
        self.views = {view: store.get_feature_view(view) for view in HISTORY_VIEWS}
        if store.config.online_store.type == "sqlite":
            # The batch path puts the file in WAL mode; there, NORMAL syncs the log at checkpoints
            # instead of on every commit (0.6 ms of fsync per scored transaction). A committed
            # write survives the process being killed; only an OS crash can lose the newest.
            self.online._get_conn(self.config).execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def _key(view: str, value: str):
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return EntityKey(join_keys=[_JOIN_KEY[view]], entity_values=[Value(string_val=value)])

    def read(self, customers: Sequence[str], terminals: Sequence[str]) -> dict[str, list]:
        """``{"<view>__<field>": [value per transaction]}`` (None where the entity has no row)."""
        out: dict[str, list] = {}
        for view, keys in ((CUSTOMER_HISTORY, customers), (CUSTOMER_LIVE, customers), (TERMINAL_HISTORY, terminals)):
            unique = list(dict.fromkeys(keys))
            found = self.online.online_read(
                self.config, self.views[view], [self._key(view, k) for k in unique], list(_FIELDS[view])
            )
            rows = {k: values or {} for k, (_, values) in zip(unique, found, strict=True)}
            for name in _FIELDS[view]:
                out[f"{view}__{name}"] = [_python(rows[k].get(name)) for k in keys]
        return out

    def write_live(self, live_rows: dict[str, dict[str, list]]) -> None:
        """Write the cards' new live rows (before the service answers: an acknowledged
        transaction is in its card's history)."""
        from feast.protos.feast.types.Value_pb2 import Int64List, StringList, Value

        now = dt.datetime.now(dt.UTC)
        data = [
            (
                self._key(CUSTOMER_LIVE, card),
                {
                    "TX_IDS": Value(string_list_val=StringList(val=row["TX_IDS"])),
                    "TX_SECONDS": Value(int64_list_val=Int64List(val=row["TX_SECONDS"])),
                    "TX_CENTS": Value(int64_list_val=Int64List(val=row["TX_CENTS"])),
                },
                now,
                None,
            )
            for card, row in live_rows.items()
        ]
        self.online.online_write_batch(self.config, self.views[CUSTOMER_LIVE], data, None)
