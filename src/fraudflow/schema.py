"""The raw transaction schema (Fraud Detection Handbook layout) and its normalisation.

Every zone after landing holds transactions in exactly this schema, so features, training
and serving never guess at types. Ids are kept as strings: the published data uses ints,
users' files may use strings, and one type across all partitions beats either.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa

# A transaction's label (TX_FRAUD) is known only this many days after it happened (the
# handbook's delay for investigations to conclude). Terminal risk features, training windows and
# the matured-performance check all honour it; it is part of the feature definition, so a
# change means a new feature service version, not a setting.
LABEL_DELAY_DAYS = 7

RAW_COLUMNS: tuple[str, ...] = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)

LAKE_SCHEMA = pa.schema(
    [
        ("TRANSACTION_ID", pa.int64()),
        ("TX_DATETIME", pa.timestamp("us")),
        ("CUSTOMER_ID", pa.string()),
        ("TERMINAL_ID", pa.string()),
        ("TX_AMOUNT", pa.float64()),
        ("TX_TIME_SECONDS", pa.int64()),
        ("TX_TIME_DAYS", pa.int64()),
        ("TX_FRAUD", pa.int8()),
        ("TX_FRAUD_SCENARIO", pa.int8()),
    ]
)


class SchemaError(ValueError):
    """A batch cannot be brought to the raw schema; the message names the columns."""


def partition_id(day: dt.date) -> str:
    """The lake's name for one day of transactions, cited in lineage records."""
    return f"transactions/date={day.isoformat()}"


def check_columns(frame: pd.DataFrame) -> None:
    """Fail with the missing and unexpected column names, if any."""
    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    extra = [c for c in frame.columns if c not in RAW_COLUMNS]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        raise SchemaError("; ".join(parts))


def _as_id_strings(values: pd.Series, column: str) -> pd.Series:
    if pd.api.types.is_float_dtype(values):
        if not (values.dropna() % 1 == 0).all():
            raise SchemaError(f"{column} holds non-integer numbers")
        values = values.astype("Int64")
    return values.astype("string").astype(object)


def normalise_transactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast a parsed batch to the lake schema, in canonical column order.

    Raises:
        SchemaError: a column is missing or extra, or a value cannot take its type.
    """
    check_columns(frame)
    out = pd.DataFrame(index=frame.index)
    try:
        out["TRANSACTION_ID"] = pd.to_numeric(frame["TRANSACTION_ID"], errors="raise").astype("int64")
        out["TX_DATETIME"] = pd.to_datetime(frame["TX_DATETIME"], errors="raise").astype("datetime64[us]")
        out["CUSTOMER_ID"] = _as_id_strings(frame["CUSTOMER_ID"], "CUSTOMER_ID")
        out["TERMINAL_ID"] = _as_id_strings(frame["TERMINAL_ID"], "TERMINAL_ID")
        for column, dtype in (
            ("TX_AMOUNT", "float64"),
            ("TX_TIME_SECONDS", "int64"),
            ("TX_TIME_DAYS", "int64"),
            ("TX_FRAUD", "int8"),
            ("TX_FRAUD_SCENARIO", "int8"),
        ):
            if not pd.api.types.is_numeric_dtype(frame[column]):
                raise SchemaError(f"{column} is {frame[column].dtype}, expected a number")
            out[column] = frame[column].astype(dtype)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(str(exc)) from exc
    return out.reset_index(drop=True)


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=LAKE_SCHEMA, preserve_index=False)
