"""p2pmed: WebRTC peer-to-peer telemedicine node."""

__version__ = "0.1.0"
