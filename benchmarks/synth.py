"""Synthetic surveillance scenes with ground truth, written in the ShanghaiTech layout.

A fixed camera looks at a walkway between two grass strips with benches. Normal videos contain
articulated stick-figure walkers moving left-right / right-left along the walkway at walking
speed. Each test video adds one anomaly (novel object: bicycle or cart, running, falling, loitering
or wrong-way walking) that starts in the middle third, so every test video has normal and abnormal
frames. Everything is deterministic for `SynthConfig.seed`.

Crowd mode (`SynthConfig.crowd = N > 0`): a deeper walkway seen in perspective (a person's size and
walking speed shrink linearly towards the far edge, `perspective` = far / near), a dense far band where
groups of `group_size` walkers keep between 0.7 N and N people in view, walking both ways with a slight
diagonal drift so that they cross and occlude each other, and a sparse near band ("open"). Test video i
places its anomaly in the crowd band or in the open band, alternating so that with 12 test videos every
kind appears in both; every object carries `attributes["zone"]` (`crowd` | `open`, from its foot row).
With `crowd = 0` the set is byte-identical to what this module wrote before crowd mode existed.

Output (see docs/ARCHITECTURE.md):
`training/videos/NN.avi`, `training/boxes/NN.json`, `testing/frames/NN/NNN.jpg`,
`testing/test_frame_mask/NN.npy`, `testing/boxes/NN.json`, `synth.json`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from lpgb.runtime.config import from_dict, to_dict
from lpgb.runtime.atomic import move_in
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.manifest import ALL, MANIFEST, Manifest, owned_entries

ANOMALY_KINDS: tuple[str, ...] = ("bicycle", "cart", "running", "falling", "loitering", "wrong_way")
COLOURS: dict[str, tuple[int, int, int]] = {  # name -> BGR
    "red": (40, 40, 200), "blue": (200, 90, 40), "yellow": (40, 210, 230), "white": (235, 235, 235),
    "black": (35, 35, 35), "orange": (30, 130, 245), "purple": (150, 50, 140), "cyan": (210, 200, 60),
}
MAX_CROWD = 60
CROWD_FIELDS: tuple[str, ...] = ("crowd", "perspective", "group_size")
CROWD_BAND = 0.62  # crowd mode: the far share of the walkway that the crowd walks in (the rest is "open")
PANTS: tuple[tuple[int, int, int], ...] = ((90, 50, 30), (40, 40, 40), (40, 70, 110), (110, 110, 110))
SKIN: tuple[tuple[int, int, int], ...] = ((150, 180, 220), (100, 140, 190), (60, 90, 130))


@dataclass(frozen=True)
class SynthConfig:
    """What `generate` draws. Sizes in pixels, speeds in pixels per frame."""

    seed: int = 0
    width: int = 240
    height: int = 160
    train_videos: int = 8
    test_videos: int = 6
    frames_per_video: int = 120
    fps: float = 25.0
    walkers: tuple[int, int] = (2, 5)  # min / max normal walkers in view
    walker_height: tuple[float, float] = (30.0, 46.0)
    walk_speed: tuple[float, float] = (0.7, 1.5)
    run_speed: tuple[float, float] = (3.5, 4.5)
    bicycle_speed: tuple[float, float] = (4.5, 6.0)
    cart_speed: tuple[float, float] = (1.8, 2.4)
    noise: float = 2.0  # std of per-frame sensor noise (grey levels)
    jpeg_quality: int = 95
    anomaly_kinds: tuple[str, ...] = field(default=ANOMALY_KINDS)
    crowd: int = 0  # 0: the sparse scenes; N > 0: crowd mode with up to N walkers in view (module docstring)
    perspective: float = 0.5  # crowd mode: size (and speed) of a person at the far edge of the walkway / near edge
    group_size: tuple[int, int] = (1, 4)  # crowd mode: min / max walkers that walk together

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64:
            raise LpgbError(f"synthetic frames must be at least 64x64, got {self.width}x{self.height}")
        if self.frames_per_video < 30:
            raise LpgbError(f"frames_per_video must be >= 30, got {self.frames_per_video}")
        if self.train_videos < 0 or self.test_videos < 0 or self.train_videos + self.test_videos == 0:
            raise LpgbError("expected at least one training or test video (counts must be >= 0)")
        if not 1 <= self.walkers[0] <= self.walkers[1]:
            raise LpgbError(f"walkers must be (min, max) with 1 <= min <= max, got {self.walkers}")
        unknown = sorted(set(self.anomaly_kinds) - set(ANOMALY_KINDS))
        if unknown or not self.anomaly_kinds:
            raise LpgbError(f"anomaly_kinds must be a non-empty subset of {', '.join(ANOMALY_KINDS)}")
        if not 0 <= self.crowd <= MAX_CROWD:
            raise LpgbError(f"crowd must be between 0 (sparse scenes) and {MAX_CROWD} walkers, got {self.crowd}")
        if not 0.2 <= self.perspective <= 1.0:
            raise LpgbError(f"perspective (far / near size) must be in [0.2, 1], got {self.perspective}")
        if not 1 <= self.group_size[0] <= self.group_size[1] <= 8:
            raise LpgbError(f"group_size must be (min, max) with 1 <= min <= max <= 8, got {self.group_size}")

    def to_json(self) -> str:
        """JSON of every field; the crowd-mode fields are left out of a sparse set (crowd 0), so its
        `synth.json` reads as before crowd mode existed (`load` fills them with the defaults)."""
        data = to_dict(self)
        if self.crowd == 0:
            for name in CROWD_FIELDS:
                data.pop(name)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: Path) -> "SynthConfig":
        """Read a `synth.json` written by `generate`."""
        return from_dict(cls, json.loads(Path(path).read_text()))


# ------------------------------------------------------------------------------------------------
# scene


@dataclass(frozen=True)
class Scene:
    """Static background `(H, W, 3)` and the walkway band (foot rows a walker may use)."""

    background: np.ndarray
    walk_top: float  # smallest foot y on the walkway
    walk_bottom: float  # largest foot y on the walkway
    path_top: int  # first pixel row of the paved walkway
    path_bottom: int


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency noise `(h, w)` in about [-1, 1]."""
    small = rng.standard_normal((max(h // cell, 2), max(w // cell, 2))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, h: int, w: int, base: tuple[int, int, int], amp: float) -> np.ndarray:
    coarse = _smooth_noise(rng, h, w, 16) * amp
    fine = rng.standard_normal((h, w)).astype(np.float32) * amp * 0.6
    tex = np.asarray(base, np.float32)[None, None, :] + (coarse + fine)[:, :, None]
    return np.clip(tex, 0, 255).astype(np.uint8)


def _draw_bench(img: np.ndarray, x: int, y: int, w: int) -> None:
    wood, dark = (40, 80, 120), (30, 45, 60)
    cv2.rectangle(img, (x, y - 6), (x + w, y - 3), wood, -1)  # seat
    cv2.rectangle(img, (x, y - 12), (x + w, y - 10), wood, -1)  # backrest
    for lx in (x + 2, x + w - 3):
        cv2.line(img, (lx, y - 3), (lx, y), dark, 1)
        cv2.line(img, (lx, y - 12), (lx, y - 6), dark, 1)


def make_scene(cfg: SynthConfig) -> Scene:
    """The one static scene of a synthetic set (same camera for every video)."""
    rng = np.random.default_rng([cfg.seed, 7])
    h, w = cfg.height, cfg.width
    img = _texture(rng, h, w, (55, 125, 70), 14.0)  # grass
    top, bottom = (int(0.50 * h), int(0.90 * h)) if cfg.crowd == 0 else (int(0.30 * h), int(0.96 * h))
    img[top:bottom] = _texture(rng, bottom - top, w, (150, 152, 150), 8.0)  # paving
    tile = max(w // 12, 8)
    for x in range(int(rng.integers(0, tile)), w, tile):
        cv2.line(img, (x, top), (x, bottom - 1), (125, 127, 125), 1)
    for y in range(top, bottom, max(tile // 2, 4)):
        cv2.line(img, (0, y), (w - 1, y), (130, 132, 130), 1)
    cv2.line(img, (0, top), (w - 1, top), (95, 100, 95), 2)
    cv2.line(img, (0, bottom), (w - 1, bottom), (95, 100, 95), 2)
    for _ in range(int(rng.integers(2, 4))):
        _draw_bench(img, int(rng.integers(4, w - 34)), top - 2, int(rng.integers(20, 30)))
    for _ in range(int(rng.integers(3, 7))):  # bushes on the far grass
        cx, cy, r = int(rng.integers(0, w)), int(rng.integers(0, max(top // 3, 2))), int(rng.integers(6, 14))
        cv2.circle(img, (cx, cy), r, (30, 80, 40), -1, cv2.LINE_AA)
    return Scene(img, walk_top=top + 0.12 * (bottom - top), walk_bottom=bottom - 3.0, path_top=top, path_bottom=bottom)


# ------------------------------------------------------------------------------------------------
# tracks: one object's per-frame state, computed before drawing


@dataclass
class Track:
    """Per-frame state of one object; arrays are `(T,)`, `active[t]` says it exists at frame t."""

    kind: str  # walker | bicycle | cart
    colour: str
    size: float  # body height in pixels
    skin: tuple[int, int, int]
    pants: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray  # foot / ground-contact row
    facing: np.ndarray  # +1 right, -1 left
    phase: np.ndarray  # gait or wheel phase (radians)
    swing: np.ndarray  # leg swing amplitude (radians)
    tilt: np.ndarray  # body rotation (radians, + = forward); pi/2 = lying
    active: np.ndarray
    action: list[str]
    anomaly: list[str]
    scale: np.ndarray | None = None  # crowd mode: drawn size at frame t = size * scale[t] (perspective)

    def height(self, t: int) -> float:
        """Body height in pixels at frame t."""
        return self.size if self.scale is None else self.size * float(self.scale[t])


def _new_track(rng: np.random.Generator, cfg: SynthConfig, kind: str, size: float) -> Track:
    t = cfg.frames_per_video
    colour = str(rng.choice(sorted(COLOURS)))
    return Track(kind, colour, size, SKIN[int(rng.integers(len(SKIN)))], PANTS[int(rng.integers(len(PANTS)))],
                 np.zeros(t), np.zeros(t), np.ones(t), np.zeros(t), np.full(t, 0.35), np.zeros(t),
                 np.zeros(t, bool), ["walking"] * t, ["none"] * t)


def _stride(size: float, swing: float) -> float:
    """Distance covered per gait cycle (two steps) for straight legs of length 0.48*size."""
    return 2.0 * 2.0 * 0.48 * size * math.sin(swing)


def _walk_line(track: Track, t0: int, x0: float, y0: float, vx: float, vy: float, cfg: SynthConfig) -> None:
    """Straight constant-speed walk from frame t0 until it leaves the frame (sets active/phase)."""
    margin = track.size * 1.2 + 4
    speed = math.hypot(vx, vy)
    rate = 2 * math.pi * speed / max(_stride(track.size, float(track.swing[t0])), 1e-6)
    for t in range(t0, cfg.frames_per_video):
        k = t - t0
        x, y = x0 + vx * k, y0 + vy * k
        if not (-margin <= x <= cfg.width + margin and -margin <= y <= cfg.height + margin):
            break
        track.x[t], track.y[t], track.active[t] = x, y, True
        track.facing[t] = 1.0 if vx > 0 or (vx == 0 and vy > 0) else -1.0
        track.phase[t] = track.phase[t0] + rate * k


def _walker_height(rng: np.random.Generator, cfg: SynthConfig) -> float:
    return float(rng.uniform(*cfg.walker_height))


def _lane_y(rng: np.random.Generator, scene: Scene) -> float:
    return float(rng.uniform(scene.walk_top, scene.walk_bottom))


def normal_walker(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t0: int, inside: bool) -> Track:
    """A walker along the walkway at walking speed, entering at an edge (or already `inside`)."""
    track = _new_track(rng, cfg, "walker", _walker_height(rng, cfg))
    direction = 1.0 if rng.random() < 0.5 else -1.0
    speed = float(rng.uniform(*cfg.walk_speed))
    margin = track.size * 0.6
    x0 = float(rng.uniform(0, cfg.width)) if inside else (-margin if direction > 0 else cfg.width + margin)
    vy = float(rng.uniform(-0.08, 0.08)) * speed
    track.phase[t0] = float(rng.uniform(0, 2 * math.pi))
    _walk_line(track, t0, x0, _lane_y(rng, scene), direction * speed, vy, cfg)
    return track


def _centre_approach(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t_event: int) -> tuple[Track, float]:
    """A normal walker that reaches the middle of the frame at `t_event`; returns it and its speed."""
    track = _new_track(rng, cfg, "walker", _walker_height(rng, cfg))
    direction = 1.0 if rng.random() < 0.5 else -1.0
    speed = float(rng.uniform(*cfg.walk_speed))
    xc = cfg.width * float(rng.uniform(0.4, 0.6))
    track.phase[0] = float(rng.uniform(0, 2 * math.pi))
    _walk_line(track, 0, xc - direction * speed * t_event, _lane_y(rng, scene), direction * speed, 0.0, cfg)
    return track, speed


def _resume_walk(track: Track, t: int, cfg: SynthConfig, speed: float, x: float, y: float, facing: float) -> None:
    """Walk on from (x, y) at frame t in direction `facing` (replaces the track from t on)."""
    track.active[t:] = False
    track.tilt[t:], track.swing[t:] = 0.0, 0.35
    _walk_line(track, t, x, y, facing * speed, 0.0, cfg)


def running(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t0: int) -> Track:
    track = _new_track(rng, cfg, "walker", _walker_height(rng, cfg))
    direction = 1.0 if rng.random() < 0.5 else -1.0
    track.swing[:] = 0.75
    track.tilt[:] = 0.18
    margin = track.size * 0.6
    _walk_line(track, t0, -margin if direction > 0 else cfg.width + margin, _lane_y(rng, scene),
               direction * float(rng.uniform(*cfg.run_speed)), 0.0, cfg)
    _label(track, track.active, "running", "running")
    return track


def vehicle(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t0: int, kind: str) -> Track:
    """A bicycle (fast, with rider) or a cart (box on wheels) crossing the walkway."""
    track = _new_track(rng, cfg, kind, _walker_height(rng, cfg) * (1.0 if kind == "bicycle" else 0.9))
    direction = 1.0 if rng.random() < 0.5 else -1.0
    speed = float(rng.uniform(*(cfg.bicycle_speed if kind == "bicycle" else cfg.cart_speed)))
    margin = track.size * 0.7
    x0 = -margin if direction > 0 else cfg.width + margin
    _walk_line(track, t0, x0, _lane_y(rng, scene), direction * speed, 0.0, cfg)
    wheel_r = 0.2 * track.size if kind == "bicycle" else 0.12 * track.size
    track.phase[:] = np.cumsum(np.where(track.active, speed / wheel_r, 0.0))
    _label(track, track.active, "riding" if kind == "bicycle" else "rolling", "novel_object")
    return track


def falling(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t0: int) -> Track:
    """Walks in, falls forward at t0, lies still, gets up and walks on."""
    track, speed = _centre_approach(rng, cfg, scene, t0)
    fall, lie, rise = 8, int(rng.integers(20, 36)), 10
    t_end = min(t0 + fall + lie + rise, cfg.frames_per_video)
    for t in range(t0, t_end):
        k = t - t0
        track.x[t], track.y[t], track.facing[t] = track.x[t0], track.y[t0], track.facing[t0]
        track.phase[t], track.swing[t], track.active[t] = 0.0, 0.05, True
        if k < fall:
            track.tilt[t], track.action[t] = (math.pi / 2) * (k + 1) / fall, "falling"
        elif k < fall + lie:
            track.tilt[t], track.action[t] = math.pi / 2, "lying"
        else:
            track.tilt[t], track.action[t] = (math.pi / 2) * (1 - (k - fall - lie + 1) / rise), "getting_up"
        track.anomaly[t] = "falling"
    if t_end < cfg.frames_per_video:
        _resume_walk(track, t_end, cfg, speed, float(track.x[t0]), float(track.y[t0]), float(track.facing[t0]))
    return track


def loitering(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t0: int) -> Track:
    """Walks in, wanders in small circles around one spot for a while, then walks on."""
    track, speed = _centre_approach(rng, cfg, scene, t0)
    duration = int(rng.integers(40, 56))
    radius = float(rng.uniform(6.0, 10.0))
    omega = float(track.facing[t0]) * max(speed, 0.8) / radius
    cx, cy = float(track.x[t0]), float(track.y[t0])
    t_end = min(t0 + duration, cfg.frames_per_video)
    rate = 2 * math.pi * max(speed, 0.8) / _stride(track.size, 0.35)
    for t in range(t0, t_end):
        a = omega * (t - t0)
        track.x[t] = cx + radius * math.sin(a)
        track.y[t] = float(np.clip(cy + 0.5 * radius * (1 - math.cos(a)), scene.walk_top, scene.walk_bottom + 6))
        track.facing[t] = 1.0 if math.cos(a) * omega >= 0 else -1.0
        track.phase[t] = track.phase[t0] + rate * (t - t0)
        track.active[t] = True
        track.action[t], track.anomaly[t] = "loitering", "loitering"
    if t_end < cfg.frames_per_video:
        last = t_end - 1
        _resume_walk(track, t_end, cfg, speed, float(track.x[last]), float(track.y[last]), float(track.facing[t0]))
    return track


def wrong_way(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t0: int) -> Track:
    """Walks vertically across the scene while the normal flow is horizontal."""
    track = _new_track(rng, cfg, "walker", _walker_height(rng, cfg))
    down = rng.random() < 0.5
    speed = float(rng.uniform(1.6, 2.0))
    x = cfg.width * float(rng.uniform(0.25, 0.75))
    y0 = -2.0 if down else cfg.height + track.size + 2.0
    _walk_line(track, t0, x, y0, 0.0, speed if down else -speed, cfg)
    track.facing[:] = 1.0 if rng.random() < 0.5 else -1.0
    _label(track, track.active, "walking", "wrong_way")
    return track


def _label(track: Track, where: np.ndarray, action: str, anomaly: str) -> None:
    for t in np.flatnonzero(where):
        track.action[t], track.anomaly[t] = action, anomaly


def anomaly_track(kind: str, rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t0: int) -> Track:
    if kind in ("bicycle", "cart"):
        return vehicle(rng, cfg, scene, t0, kind)
    return {"running": running, "falling": falling, "loitering": loitering, "wrong_way": wrong_way}[kind](
        rng, cfg, scene, t0)


def normal_tracks(rng: np.random.Generator, cfg: SynthConfig, scene: Scene) -> list[Track]:
    """Walkers keeping between walkers[0] and walkers[1] people in view over the video."""
    lo, hi = cfg.walkers
    tracks = [normal_walker(rng, cfg, scene, 0, inside=True) for _ in range(int(rng.integers(lo, hi + 1)))]
    count = np.sum([tr.active for tr in tracks], axis=0).astype(int)
    for t in range(1, cfg.frames_per_video):
        if count[t] < lo or (count[t] < hi and rng.random() < 0.04):
            tr = normal_walker(rng, cfg, scene, t, inside=False)
            tracks.append(tr)
            count += tr.active
    return tracks


# ------------------------------------------------------------------------------------------------
# crowd mode: perspective, a dense far band of walking groups, a sparse near band


def _crowd_edge(scene: Scene) -> float:
    """Foot row that separates the crowd band (above, far) from the open band (below, near)."""
    return scene.walk_top + CROWD_BAND * (scene.walk_bottom - scene.walk_top)


def _zone(scene: Scene, crowd: bool) -> Scene:
    """`scene` with its walkway band narrowed to the crowd band or the open band (lanes are drawn in it)."""
    edge = _crowd_edge(scene)
    return replace(scene, walk_bottom=edge) if crowd else replace(scene, walk_top=edge)


def perspective_scale(cfg: SynthConfig, scene: Scene, y: np.ndarray | float) -> np.ndarray:
    """Size factor at foot row(s) `y`: `cfg.perspective` at the far edge of the walkway, 1 at the near edge."""
    u = np.clip((np.asarray(y, np.float64) - scene.walk_top) / max(scene.walk_bottom - scene.walk_top, 1e-6), 0, 1)
    return cfg.perspective + (1.0 - cfg.perspective) * u


def _scaled_speeds(cfg: SynthConfig, factor: float) -> SynthConfig:
    """`cfg` with every speed range multiplied by `factor` (objects further away move fewer pixels)."""
    def mul(r: tuple[float, float]) -> tuple[float, float]:
        return (r[0] * factor, r[1] * factor)

    return replace(cfg, walk_speed=mul(cfg.walk_speed), run_speed=mul(cfg.run_speed),
                   bicycle_speed=mul(cfg.bicycle_speed), cart_speed=mul(cfg.cart_speed))


def _set_perspective(track: Track, cfg: SynthConfig, scene: Scene, ref: float) -> None:
    """Drawn size follows the foot row: `scale[t] = s(y[t]) / ref`, `ref` the factor already in `size`."""
    track.scale = np.where(track.active, perspective_scale(cfg, scene, track.y) / ref, 1.0)


def walking_group(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, zone: Scene, t0: int,
                  inside: bool, group: tuple[int, int]) -> list[Track]:
    """A group of walkers that walk together (same direction and speed, partly overlapping), in a lane of
    `zone`, entering at an edge at t0 (followers a few frames later) or already `inside` the frame."""
    lane = _lane_y(rng, zone)
    s = float(perspective_scale(cfg, scene, lane))
    direction = 1.0 if rng.random() < 0.5 else -1.0
    speed = float(rng.uniform(*cfg.walk_speed)) * s
    drift = float(rng.uniform(-0.2, 0.2)) * speed  # diagonal drift: groups cross each other's lanes
    x0 = float(rng.uniform(0, cfg.width)) if inside else 0.0
    tracks = []
    for k in range(int(rng.integers(group[0], group[1] + 1))):
        track = _new_track(rng, cfg, "walker", _walker_height(rng, cfg) * s)
        gap = k * float(rng.uniform(0.15, 0.45)) * track.size  # behind the one before: overlapping bodies
        y = float(np.clip(lane + rng.uniform(-0.08, 0.08) * track.size, scene.walk_top, scene.walk_bottom))
        vx = direction * speed * float(rng.uniform(0.97, 1.03))
        start = t0
        if inside:
            x = x0 - direction * gap
        else:
            x = -track.size * 0.6 if direction > 0 else cfg.width + track.size * 0.6
            start = t0 + int(round(gap / max(abs(vx), 1e-3)))
        if start >= cfg.frames_per_video:
            break
        track.phase[start] = float(rng.uniform(0, 2 * math.pi))
        _walk_line(track, start, x, y, vx, drift, cfg)
        _set_perspective(track, cfg, scene, s)
        tracks.append(track)
    return tracks


def _keep_count(rng: np.random.Generator, cfg: SynthConfig, scene: Scene, zone: Scene, lo: int, hi: int,
                group: tuple[int, int]) -> list[Track]:
    """Groups in `zone` keeping between lo and hi walkers in view (new groups enter at the edges)."""
    tracks: list[Track] = []
    count = np.zeros(cfg.frames_per_video, int)
    target = int(rng.integers(lo, hi + 1))
    while count[0] < target:
        for tr in walking_group(rng, cfg, scene, zone, 0, True, group):
            tracks.append(tr)
            count += tr.active
    for t in range(1, cfg.frames_per_video):
        if count[t] < lo or (count[t] < hi and rng.random() < 0.08):
            for tr in walking_group(rng, cfg, scene, zone, t, False, group):
                tracks.append(tr)
                count += tr.active
    return tracks


def crowd_tracks(rng: np.random.Generator, cfg: SynthConfig, scene: Scene) -> list[Track]:
    """Crowd mode's normal walkers: 0.7 crowd .. crowd in the crowd band, `walkers` in the open band."""
    hi = cfg.crowd
    lo = max(1, int(round(0.7 * hi)))
    tracks = _keep_count(rng, cfg, scene, _zone(scene, True), lo, hi, cfg.group_size)
    return tracks + _keep_count(rng, cfg, scene, _zone(scene, False), *cfg.walkers, (1, 2))


def anomaly_in_crowd(cfg: SynthConfig, index: int) -> bool:
    """Crowd mode: whether test video `index` places its anomaly in the crowd band (else in the open);
    alternates so that test videos k and k + len(anomaly_kinds) put the same kind in both bands."""
    return (index + index // len(cfg.anomaly_kinds)) % 2 == 0


def crowd_anomaly(kind: str, rng: np.random.Generator, cfg: SynthConfig, scene: Scene, t0: int,
                  in_crowd: bool) -> Track:
    """An anomaly of `kind` in the crowd band or the open band, its speeds and size in that band's perspective."""
    zone = _zone(scene, in_crowd)
    factor = float(perspective_scale(cfg, scene, 0.5 * (zone.walk_top + zone.walk_bottom)))
    track = anomaly_track(kind, rng, _scaled_speeds(cfg, factor), scene if kind == "wrong_way" else zone, t0)
    _set_perspective(track, cfg, scene, 1.0)
    return track


# ------------------------------------------------------------------------------------------------
# drawing: local coordinates have x forward, y up, origin at the ground contact point


def _to_image(track: Track, t: int, pts: np.ndarray) -> np.ndarray:
    """Local `(N, 2)` points -> image pixel coordinates `(N, 2)` for frame t (tilt + facing)."""
    th = float(track.tilt[t])
    c, s = math.cos(th), math.sin(th)
    fx = pts[:, 0] * c + pts[:, 1] * s
    fy = -pts[:, 0] * s + pts[:, 1] * c
    return np.stack([track.x[t] + track.facing[t] * fx, track.y[t] - fy], axis=1)


class _Canvas:
    """Draws primitives on a frame and tracks their bounding box."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.box = [math.inf, math.inf, -math.inf, -math.inf]

    def _grow(self, x: float, y: float, pad: float) -> None:
        b = self.box
        b[0], b[1] = min(b[0], x - pad), min(b[1], y - pad)
        b[2], b[3] = max(b[2], x + pad), max(b[3], y + pad)

    def line(self, a: np.ndarray, b: np.ndarray, colour: tuple[int, int, int], width: float) -> None:
        thick = max(int(round(width)), 1)
        cv2.line(self.img, (int(round(a[0])), int(round(a[1]))), (int(round(b[0])), int(round(b[1]))),
                 colour, thick, cv2.LINE_AA)
        for p in (a, b):
            self._grow(float(p[0]), float(p[1]), thick / 2)

    def circle(self, c: np.ndarray, r: float, colour: tuple[int, int, int], filled: bool = True) -> None:
        rad = max(int(round(r)), 1)
        cv2.circle(self.img, (int(round(c[0])), int(round(c[1]))), rad, colour, -1 if filled else 1, cv2.LINE_AA)
        self._grow(float(c[0]), float(c[1]), rad + 0.5)

    def poly(self, pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        cv2.fillConvexPoly(self.img, np.round(pts).astype(np.int32), colour, cv2.LINE_AA)
        for p in pts:
            self._grow(float(p[0]), float(p[1]), 0.5)


def _draw_walker(cv: _Canvas, tr: Track, t: int) -> None:
    h = tr.height(t)
    a = float(tr.swing[t]) * math.sin(float(tr.phase[t]))
    leg = 0.48 * h
    knee = 0.25 * abs(a) if tr.action[t] == "running" else 0.0
    local = np.array([
        [0.0, 0.48 * h],  # 0 hip
        [0.0, 0.80 * h],  # 1 neck
        [0.0, 0.89 * h],  # 2 head centre
        [leg * math.sin(a), 0.48 * h - leg * math.cos(a)],  # 3 foot A
        [-leg * math.sin(a), 0.48 * h - leg * math.cos(a)],  # 4 foot B
        [0.5 * leg * math.sin(a) + knee * h, 0.48 * h - 0.5 * leg * math.cos(a)],  # 5 knee A
        [-0.5 * leg * math.sin(a) + knee * h, 0.48 * h - 0.5 * leg * math.cos(a)],  # 6 knee B
        [0.0, 0.76 * h],  # 7 shoulder
        [-0.32 * h * math.sin(0.8 * a), 0.76 * h - 0.32 * h * math.cos(0.8 * a)],  # 8 hand A
        [0.32 * h * math.sin(0.8 * a), 0.76 * h - 0.32 * h * math.cos(0.8 * a)],  # 9 hand B
    ])
    p = _to_image(tr, t, local)
    shirt = COLOURS[tr.colour]
    for k, f in ((5, 3), (6, 4)):
        cv.line(p[0], p[k], tr.pants, 0.09 * h)
        cv.line(p[k], p[f], tr.pants, 0.08 * h)
    cv.line(p[7], p[8], shirt, 0.06 * h)
    cv.line(p[0], p[1], shirt, 0.17 * h)
    cv.line(p[7], p[9], shirt, 0.06 * h)
    cv.circle(p[2], 0.1 * h, tr.skin)


def _draw_bicycle(cv: _Canvas, tr: Track, t: int) -> None:
    h = tr.height(t)
    r = 0.2 * h
    ph = float(tr.phase[t])
    local = np.array([
        [-0.32 * h, r], [0.32 * h, r],  # 0 rear hub, 1 front hub
        [0.0, r],  # 2 crank
        [-0.08 * h, 0.58 * h],  # 3 seat / hip
        [0.26 * h, 0.66 * h],  # 4 handlebar
        [0.06 * h, 0.92 * h],  # 5 shoulder
        [0.1 * h, 1.04 * h],  # 6 head
        [0.1 * h * math.cos(ph), r + 0.1 * h * math.sin(ph)],  # 7 pedal A
        [-0.1 * h * math.cos(ph), r - 0.1 * h * math.sin(ph)],  # 8 pedal B
    ])
    p = _to_image(tr, t, local)
    metal, shirt = (60, 60, 60), COLOURS[tr.colour]
    for hub in (p[0], p[1]):
        cv.circle(hub, r, (20, 20, 20), filled=False)
        for k in range(2):
            d = np.array([math.cos(ph + k * math.pi / 2), math.sin(ph + k * math.pi / 2)]) * r
            cv.line(hub - d, hub + d, metal, 1)
    for a, b in ((0, 2), (2, 3), (0, 3), (3, 4), (2, 4), (4, 1)):
        cv.line(p[a], p[b], metal, max(0.04 * h, 1))
    for pedal in (p[7], p[8]):
        knee = (p[3] + pedal) / 2 + np.array([tr.facing[t] * 0.1 * h, -0.05 * h])
        cv.line(p[3], knee, tr.pants, 0.08 * h)
        cv.line(knee, pedal, tr.pants, 0.07 * h)
    cv.line(p[3], p[5], shirt, 0.16 * h)
    cv.line(p[5], p[4], shirt, 0.06 * h)
    cv.circle(p[6], 0.1 * h, tr.skin)


def _draw_cart(cv: _Canvas, tr: Track, t: int) -> None:
    h = tr.height(t)
    r = 0.12 * h
    local = np.array([[-0.45 * h, 0.15 * h], [0.45 * h, 0.15 * h], [0.45 * h, 0.62 * h], [-0.45 * h, 0.62 * h],
                      [-0.3 * h, r], [0.3 * h, r], [-0.45 * h, 0.6 * h], [-0.62 * h, 0.85 * h]])
    p = _to_image(tr, t, local)
    colour = COLOURS[tr.colour]
    cv.poly(p[:4], colour)
    mid_a, mid_b = (p[0] + p[3]) / 2, (p[1] + p[2]) / 2
    cv.line(mid_a, mid_b, tuple(int(c * 0.6) for c in colour), max(0.05 * h, 1))
    cv.line(p[6], p[7], (70, 70, 70), max(0.05 * h, 1))  # handle
    for hub in (p[4], p[5]):
        cv.circle(hub, r, (25, 25, 25))
        d = np.array([math.cos(float(tr.phase[t])), math.sin(float(tr.phase[t]))]) * r * 0.8
        cv.line(hub - d, hub + d, (120, 120, 120), 1)


_DRAW = {"walker": _draw_walker, "bicycle": _draw_bicycle, "cart": _draw_cart}


def _size_name(size: float, cfg: SynthConfig) -> str:
    lo, hi = cfg.walker_height
    if size < lo + (hi - lo) / 3:
        return "small"
    return "medium" if size < lo + 2 * (hi - lo) / 3 else "large"


def render_frame(scene: Scene, tracks: list[Track], t: int, cfg: SynthConfig,
                 noise: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Frame t `(H, W, 3)` uint8 BGR and its ground-truth objects (visible ones only)."""
    img = scene.background.copy()
    objects: list[dict[str, Any]] = []
    for tr in sorted((tr for tr in tracks if tr.active[t]), key=lambda tr: float(tr.y[t])):
        cv = _Canvas(img)
        _DRAW[tr.kind](cv, tr, t)
        x1, y1 = max(cv.box[0], 0.0), max(cv.box[1], 0.0)
        x2, y2 = min(cv.box[2], cfg.width - 1.0), min(cv.box[3], cfg.height - 1.0)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        place = "walkway" if scene.path_top <= tr.y[t] <= scene.path_bottom else "grass"
        objects.append({
            "box": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)], "kind": tr.kind,
            "anomaly": tr.anomaly[t],
            "attributes": {"action": tr.action[t], "colour": tr.colour, "size": _size_name(tr.size, cfg),
                           "place": place},
        })
        if cfg.crowd:
            objects[-1]["attributes"]["zone"] = "crowd" if tr.y[t] <= _crowd_edge(scene) else "open"
    frame = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return frame, objects


# ------------------------------------------------------------------------------------------------
# videos and files


def video_tracks(cfg: SynthConfig, scene: Scene, split: str, index: int) -> list[Track]:
    """All tracks of one video; test videos get one anomaly starting in the middle third."""
    rng = np.random.default_rng([cfg.seed, 1 if split == "training" else 2, index])
    tracks = normal_tracks(rng, cfg, scene) if cfg.crowd == 0 else crowd_tracks(rng, cfg, scene)
    if split == "testing":
        order = np.random.default_rng([cfg.seed, 3]).permutation(len(cfg.anomaly_kinds))
        kind = cfg.anomaly_kinds[int(order[index % len(order)])]
        n = cfg.frames_per_video
        t0 = int(rng.integers(n // 3, max(n // 2, n // 3 + 1)))
        if cfg.crowd == 0:
            tracks.append(anomaly_track(kind, rng, cfg, scene, t0))
        else:
            tracks.append(crowd_anomaly(kind, rng, cfg, scene, t0, in_crowd=anomaly_in_crowd(cfg, index)))
    return tracks


def render_video(cfg: SynthConfig, scene: Scene, split: str,
                 index: int) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
    """Yield `(frame, objects)` for every frame of one video."""
    tracks = video_tracks(cfg, scene, split, index)
    rng = np.random.default_rng([cfg.seed, 4, index])
    bank = [np.round(rng.standard_normal((cfg.height, cfg.width, 3)) * cfg.noise).astype(np.int16)
            for _ in range(4)]
    for t in range(cfg.frames_per_video):
        yield render_frame(scene, tracks, t, cfg, bank[int(rng.integers(len(bank)))])


def _write_avi(path: Path, frames: list[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise LpgbError(f"cannot write {path}: OpenCV has no MJPG AVI writer")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


def _write_training(root: Path, cfg: SynthConfig, scene: Scene, index: int) -> None:
    name = f"{index + 1:02d}"
    frames, boxes = zip(*render_video(cfg, scene, "training", index))
    _write_avi(root / "training" / "videos" / f"{name}.avi", list(frames), cfg.fps)
    (root / "training" / "boxes" / f"{name}.json").write_text(json.dumps(list(boxes)))


def _write_testing(root: Path, cfg: SynthConfig, scene: Scene, index: int) -> None:
    name = f"{index + 1:02d}"
    folder = root / "testing" / "frames" / name
    folder.mkdir(parents=True)
    digits = max(3, len(str(cfg.frames_per_video - 1)))
    boxes, mask = [], []
    for t, (frame, objects) in enumerate(render_video(cfg, scene, "testing", index)):
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        if not ok:
            raise LpgbError(f"cannot encode frame {t} of test video {name} as JPEG")
        (folder / f"{t:0{digits}d}.jpg").write_bytes(data.tobytes())
        boxes.append(objects)
        mask.append(int(any(o["anomaly"] != "none" for o in objects)))
    np.save(root / "testing" / "test_frame_mask" / f"{name}.npy", np.asarray(mask, np.uint8))
    (root / "testing" / "boxes" / f"{name}.json").write_text(json.dumps(boxes))


SET_ENTRIES: tuple[str, ...] = ("training", "testing", "synth.json")  # what `generate` writes in OUT
COMMAND = "lpgb-data synth"  # the name its manifest is recorded under (OUT/.lpgb-manifest.json)


def check_target(out: Path, overwrite: bool) -> list[str]:
    """The entries of an earlier set in `out` that `generate` will replace. LpgbError unless `out` is
    absent, empty, or (with `overwrite`) holds a set this command wrote: replaced are only the entries
    its manifest lists, and only when every file under them is listed; other files in `out` stay."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LpgbError(f"output {out} exists and is not a folder")
    if not (out.is_dir() and any(out.iterdir())):
        return []
    if not overwrite:
        raise LpgbError(f"output folder {out} is not empty; pass --overwrite to replace it")
    manifest = Manifest.read(out, COMMAND)
    if manifest is None and (out / "synth.json").is_file():
        raise LpgbError(f"refusing to overwrite {out}: its synthetic set predates {MANIFEST} (the record of what "
                        "lpgb-data synth wrote); delete its training/, testing/ and synth.json yourself")
    if manifest is None:
        raise LpgbError(f"refusing to overwrite {out}: it is not a synthetic set (no synth.json)")
    return owned_entries(out, COMMAND, SET_ENTRIES)


def _install(tmp: Path, out: Path, old: list[str]) -> None:
    """Move the finished set in `tmp` into `out`: a new `out` is `tmp` renamed; otherwise the `old` entries
    of an earlier set wait aside until the new ones are in (put back on a failure), other files stay."""
    new = Manifest.of(tmp, COMMAND, SET_ENTRIES)
    if not out.exists():
        new.write(tmp)
        os.replace(tmp, out)
        return
    aside = out.with_name(f".{out.name}.old-{os.getpid()}")
    aside.mkdir()
    moved: list[str] = []
    try:
        new.merged(Manifest(COMMAND, tuple(old), tuple(f"{n}{ALL}" for n in old))).write(out)
        move_in(out, aside, old)
        for name in new.entries:
            os.replace(tmp / name, out / name)
            moved.append(name)
        new.write(out)
    except BaseException:
        for name in moved:
            os.replace(out / name, tmp / name)
        move_in(aside, out, [n for n in old if (aside / n).exists()])
        aside.rmdir()
        raise
    shutil.rmtree(aside)


def generate(out: Path, cfg: SynthConfig, progress: Callable[[int, int], None] | None = None,
             overwrite: bool = False) -> None:
    """Write a synthetic dataset to `out` (ShanghaiTech layout, see module docstring).

    The set is built in a temporary sibling folder and renamed into place, so `out` never holds
    a half-written set. A non-empty `out` is refused unless `overwrite` and it holds a previous
    synthetic set (`check_target`: only that set's own files are replaced, listed in
    OUT/.lpgb-manifest.json). `progress(done, total)` is called after every video.
    """
    out = Path(out).expanduser().absolute()
    old = check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for sub in ("training/videos", "training/boxes", "testing/frames", "testing/test_frame_mask",
                    "testing/boxes"):
            (tmp / sub).mkdir(parents=True)
        scene = make_scene(cfg)
        total, done = cfg.train_videos + cfg.test_videos, 0
        for i in range(cfg.train_videos):
            _write_training(tmp, cfg, scene, i)
            done += 1
            if progress:
                progress(done, total)
        for i in range(cfg.test_videos):
            _write_testing(tmp, cfg, scene, i)
            done += 1
            if progress:
                progress(done, total)
        (tmp / "synth.json").write_text(cfg.to_json())
        _install(tmp, out, old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


__all__ = ["SynthConfig", "ANOMALY_KINDS", "crowd_tracks", "crowd_anomaly", "anomaly_in_crowd", "perspective_scale", "COLOURS", "Scene", "Track", "make_scene", "video_tracks",
           "render_video", "render_frame", "generate", "check_target"]
