"""Streaming event detection with hysteresis on the frame score curve.

An event starts at the first frame whose score reaches `cal.threshold` and lasts while the score
stays at or above the release level `hysteresis * threshold` (for a negative threshold:
`threshold - (1 - hysteresis) * |threshold|`, so release is always below the start level).
Events shorter than `min_event_frames` are dropped. Feed it the score you display (usually smoothed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lpgb.runtime.config import ScoringConfig
from lpgb.runtime.scoring import Calibration


@dataclass(frozen=True)
class Event:
    start_frame: int
    end_frame: int  # inclusive: the last frame at or above the release level
    start_time: float  # seconds
    end_time: float
    peak_score: float
    peak_frame: int

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventDetector:
    def __init__(self, cal: Calibration, cfg: ScoringConfig) -> None:
        self.start_level = float(cal.threshold)
        self.release_level = self.start_level - (1.0 - float(cfg.hysteresis)) * abs(self.start_level)
        self.min_frames = max(1, int(cfg.min_event_frames))
        self.events: list[Event] = []  # completed events so far
        self._open: dict[str, Any] | None = None
        self._last: tuple[int, float] | None = None

    @property
    def active(self) -> bool:
        return self._open is not None

    def push(self, frame_idx: int, time_s: float, score: float) -> None:
        ev = self._open
        if ev is None:
            if score >= self.start_level:
                self._open = {"start_frame": frame_idx, "start_time": time_s, "end_frame": frame_idx,
                              "end_time": time_s, "peak_score": score, "peak_frame": frame_idx}
        elif score >= self.release_level:
            ev["end_frame"], ev["end_time"] = frame_idx, time_s
            if score > ev["peak_score"]:
                ev["peak_score"], ev["peak_frame"] = score, frame_idx
        else:
            self._close()
        self._last = (frame_idx, time_s)

    def _close(self) -> None:
        ev, self._open = self._open, None
        if ev is None:
            return
        event = Event(start_frame=int(ev["start_frame"]), end_frame=int(ev["end_frame"]),
                      start_time=float(ev["start_time"]), end_time=float(ev["end_time"]),
                      peak_score=float(ev["peak_score"]), peak_frame=int(ev["peak_frame"]))
        if event.num_frames >= self.min_frames:
            self.events.append(event)

    def finish(self) -> list[Event]:
        """Close an open event at the last frame pushed and return all events."""
        self._close()
        return list(self.events)


__all__ = ["Event", "EventDetector"]
