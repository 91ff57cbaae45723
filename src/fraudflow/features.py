"""The 15 model inputs of the Fraud Detection Handbook, computed from the lake, vectorised.

(Work in progress: the feature computation lands with the training issue.)
"""

from __future__ import annotations

WINDOWS = (1, 7, 30)
LABEL_DELAY_DAYS = 7
REQUEST_FEATURES = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
CUSTOMER_FEATURES = [f"CUSTOMER_ID_{kind}_{n}DAY_WINDOW" for n in WINDOWS for kind in ("NB_TX", "AVG_AMOUNT")]
TERMINAL_FEATURES = [f"TERMINAL_ID_{kind}_{n}DAY_WINDOW" for n in WINDOWS for kind in ("NB_TX", "RISK")]
MODEL_INPUTS = REQUEST_FEATURES + CUSTOMER_FEATURES + TERMINAL_FEATURES
LABEL = "TX_FRAUD"
