"""Monitoring: drift and matured performance of the champion (``drift``), tiered ``alerts``,
and the lineage of one prediction (``explain``)."""
