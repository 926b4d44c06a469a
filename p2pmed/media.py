"""Patient audio/video: a generated test pattern (default), a media file, or a camera.

Each peer connection gets its own subscription to the one source (MediaRelay), so several
clinicians can watch the same camera. The clinician can record what it receives (MediaRecorder).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import os
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaBlackhole, MediaPlayer, MediaRecorder, MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

CAMERA_DEVICE = "/dev/video0"


class MediaSpecError(ValueError):
    """A --media value that cannot be used."""


@dataclass(frozen=True)
class MediaSpec:
    kind: str  # "none" | "testpattern" | "camera" | "file"
    path: str = ""


def parse_media(value: str) -> MediaSpec:
    if value in ("none", "testpattern", "camera"):
        return MediaSpec(value)
    if value.startswith("file:"):
        path = value[len("file:") :]
        if not path:
            raise MediaSpecError("--media file: needs a path, e.g. file:/tmp/clip.mp4")
        if not os.path.isfile(path):
            raise MediaSpecError(f"--media file: no such file: {path}")
        return MediaSpec("file", path)
    raise MediaSpecError(f"--media must be testpattern, camera, file:PATH or none, got {value!r}")


class TestPatternTrack(MediaStreamTrack):
    """Colour bars with a moving white bar and a frame counter block, 320x240 at 15 fps."""

    kind = "video"
    fps = 15
    width = 320
    height = 240

    def __init__(self) -> None:
        super().__init__()
        self._frames = _pattern_frames(self.width, self.height, self.fps)
        self._n = 0
        self._start = 0.0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._n == 0:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._n / self.fps - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(self._frames[self._n % len(self._frames)], "yuv420p")
        frame.pts = self._n * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


def _pattern_frames(w: int, h: int, count: int) -> list[np.ndarray]:
    bars_y = np.array([235, 210, 170, 145, 106, 81, 41, 16], dtype=np.uint8)
    x = np.arange(w) * len(bars_y) // w
    frames = []
    for i in range(count):
        y = np.tile(bars_y[x], (h, 1))
        col = (i * w // count) % w
        y[:, col : col + 8] = 255
        uv = np.full((h // 2, w), 128, dtype=np.uint8)
        frames.append(np.vstack([y, uv]))
    return frames


class SineToneTrack(MediaStreamTrack):
    """A 440 Hz tone, 48 kHz mono, 20 ms frames."""

    kind = "audio"
    rate = 48000
    samples = 960

    def __init__(self, freq: float = 440.0) -> None:
        super().__init__()
        self._freq = freq
        self._pos = 0
        self._start = 0.0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pos == 0:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._pos / self.rate - time.monotonic()))
        t = (np.arange(self.samples) + self._pos) / self.rate
        pcm = (0.2 * 32767 * np.sin(2 * math.pi * self._freq * t)).astype("<i2")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pos
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pos += self.samples
        return frame


class MediaSource:
    """Adds the patient's tracks to each new peer connection."""

    def __init__(self, spec: MediaSpec) -> None:
        self.spec = spec
        self._player: MediaPlayer | None = None
        self._relay = MediaRelay()
        if spec.kind == "camera":
            if not os.path.exists(CAMERA_DEVICE):
                raise MediaSpecError(f"--media camera: no camera at {CAMERA_DEVICE}")
            self._player = MediaPlayer(
                CAMERA_DEVICE, format="v4l2", options={"video_size": "640x480"}
            )
        elif spec.kind == "file":
            try:
                self._player = MediaPlayer(spec.path)
            except (av.FFmpegError, OSError) as exc:
                raise MediaSpecError(f"--media file: cannot open {spec.path}: {exc}") from exc

    def add_tracks(self, pc: RTCPeerConnection) -> None:
        """Add transceivers WITHOUT tracks: no media leaves before the direct path is bound
        (docs/protocol.md); attach() puts the tracks in after the binding. They are sendrecv
        so that the clinician can answer with its own camera and microphone."""
        for kind in self._kinds():
            pc.addTransceiver(kind, direction="sendrecv")

    def _kinds(self) -> list[str]:
        if self.spec.kind == "none":
            return []
        if self.spec.kind == "testpattern":
            return ["video", "audio"]
        assert self._player is not None
        return [t.kind for t in (self._player.video, self._player.audio) if t is not None]

    def attach(self, pc: RTCPeerConnection) -> int:
        """The direct path of `pc` is bound: start sending. Returns the tracks attached."""
        attached = 0
        for transceiver in pc.getTransceivers():
            sender = transceiver.sender
            if transceiver.direction not in ("sendonly", "sendrecv") or sender.track is not None:
                continue
            track = self._new_track(transceiver.kind)
            if track is not None:
                sender.replaceTrack(track)
                attached += 1
        return attached

    def _new_track(self, kind: str) -> MediaStreamTrack | None:
        if self.spec.kind == "testpattern":
            return TestPatternTrack() if kind == "video" else SineToneTrack()
        if self._player is None:
            return None
        source = self._player.video if kind == "video" else self._player.audio
        return None if source is None else self._relay.subscribe(source, buffered=False)

    async def close(self) -> None:
        if self._player is not None:
            for track in (self._player.video, self._player.audio):
                if track is not None:
                    track.stop()


class MediaSink:
    """Consumes a clinician's received tracks: recorded to a file, else discarded."""

    def __init__(self, record_path: str | None) -> None:
        self.record_path = record_path
        self._segment = 0

    def new_connection(self) -> MediaRecorder | MediaBlackhole:
        """A sink for the tracks of one peer connection (one file segment per connection)."""
        if self.record_path:
            self._segment += 1
            path = self.record_path
            if self._segment > 1:
                root, ext = os.path.splitext(path)
                path = f"{root}.{self._segment}{ext}"
            return MediaRecorder(path)
        return MediaBlackhole()
