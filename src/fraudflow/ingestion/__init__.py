"""Ingestion: a day's landing file -> checksummed staging snapshot -> GX validation -> the lake.

``landing`` finds and snapshots the file, ``validation`` runs the GX checkpoint, ``quarantine``
keeps what the gate rejects (with a report), ``publish`` writes the accepted day atomically.
"""
