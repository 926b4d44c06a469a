"""PATIENT_STATUS (CONTROL command 5) now lives in p2pmed.vitals.codec; this module only keeps
the old import path working for p2pmed/ui.py until it imports from the codec."""

from p2pmed.vitals.codec import PatientStatus, Stream

__all__ = ["PatientStatus", "Stream"]
