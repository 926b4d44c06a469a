"""Bedside devices as vitals sources: IEEE 11073 SDC and HL7 v2 (IHE PCD-01/04) over MLLP.

Each protocol adapter turns what a device reports into `reading` records; one mapping turns
those into vitals codec messages. The adapters know nothing of sessions or peers.
"""
