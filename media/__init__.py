"""Headless aiortc media: synthetic tracks, frame-counting sinks and a peer that joins rooms."""

from .link import LinkStats, PeerLink
from .peer import HeadlessPeer
from .sink import FrameCounter
from .tracks import SineAudioTrack, SyntheticMedia, SyntheticVideoTrack, read_frame_index

__all__ = [
    "FrameCounter",
    "HeadlessPeer",
    "LinkStats",
    "PeerLink",
    "SineAudioTrack",
    "SyntheticMedia",
    "SyntheticVideoTrack",
    "read_frame_index",
]
