"""Procedural anime-style faces, so training works without downloading a dataset."""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from vae.files import atomic_path

# Bump whenever the drawing changes, so materialized sets on disk get regenerated.
GENERATOR_VERSION = 1
SIZES = (16, 32, 64, 128, 256)
SUPERSAMPLE = 4
MANIFEST = "manifest.json"
# Where train.py renders them when --data is not given (git-ignored).
SYNTHETIC_DIR = Path(__file__).resolve().parents[2] / "data" / "synthetic"

SKIN_TONES = {
    "porcelain": (255, 241, 233),
    "fair": (253, 229, 212),
    "peach": (250, 216, 192),
    "warm": (240, 200, 168),
    "tan": (214, 162, 122),
}
HAIR_COLORS = {
    "black": (40, 38, 50),
    "dark_brown": (82, 54, 42),
    "brown": (142, 92, 58),
    "blonde": (240, 206, 120),
    "platinum": (238, 230, 196),
    "orange": (236, 140, 62),
    "red": (198, 48, 54),
    "pink": (244, 152, 184),
    "blue": (62, 98, 196),
    "light_blue": (140, 188, 234),
    "silver": (198, 200, 214),
    "green": (74, 160, 100),
    "teal": (56, 146, 152),
    "purple": (126, 84, 178),
    "lavender": (186, 160, 222),
}
EYE_COLORS = {
    "blue": (50, 96, 214),
    "sky": (86, 170, 232),
    "green": (56, 150, 76),
    "teal": (30, 142, 136),
    "red": (204, 40, 52),
    "brown": (134, 76, 44),
    "amber": (214, 152, 36),
    "purple": (132, 70, 196),
    "pink": (228, 90, 152),
    "grey": (108, 110, 132),
}
CLOTHES_COLORS = (
    (38, 48, 92), (246, 246, 246), (40, 40, 46), (192, 50, 62), (120, 162, 222),
    (242, 172, 192), (80, 132, 92), (122, 82, 60), (240, 212, 122), (122, 92, 162),
)
ACCESSORY_COLORS = ((230, 60, 80), (250, 250, 250), (80, 120, 220), (250, 200, 60), (60, 40, 50), (240, 140, 190))
FRAME_COLORS = ((40, 36, 44), (150, 40, 50), (110, 70, 40), (60, 70, 140))

# Categorical attributes: options and relative weights (real portraits are mostly dark/brown-haired,
# pale-skinned and on white backgrounds, but every option must show up often enough to learn).
_CHOICES = {
    "skin_tone": (tuple(SKIN_TONES), (25, 30, 25, 12, 8)),
    "hair_color": (tuple(HAIR_COLORS), (12, 10, 10, 9, 4, 6, 6, 8, 7, 5, 5, 5, 4, 6, 4)),
    "hair_style": (("short", "bob", "long", "twintails"), (25, 30, 33, 12)),
    "fringe": (("straight", "parted", "spiky", "swept"), (1, 1, 1, 1)),
    "eye_color": (tuple(EYE_COLORS), (1,) * len(EYE_COLORS)),
    "eye_shape": (("round", "standard", "narrow"), (35, 45, 20)),
    "mouth": (("closed", "smile", "open"), (40, 35, 25)),
    "accessory": (("none", "ribbon", "pin", "headband"), (55, 15, 15, 15)),
    "background": (("white", "tint", "color", "gradient"), (45, 20, 15, 20)),
}
_CUMULATIVE = {name: list(itertools.accumulate(weights)) for name, (_, weights) in _CHOICES.items()}
# Boolean attributes and their probabilities; continuous ones and their ranges.
_FLAGS = {"side_locks": 0.7, "ahoge": 0.25, "hair_highlight": 0.6, "blush": 0.4, "glasses": 0.12}
_RANGES = {"face_width": (0, 1), "chin": (0, 1), "eye_size": (0, 1), "yaw": (-1, 1), "tilt": (-8, 8),
           "scale": (1.04, 1.24), "offset_x": (-0.04, 0.04), "offset_y": (-0.07, 0.0)}

# How far the back hair reaches down, and how far it flares out past the crown, by hair style.
_HAIR_LENGTH = {"short": (0.7, 0.8), "bob": (0.84, 0.95), "long": (1.12, 1.12), "twintails": (0.7, 0.8)}
_HAIR_FLARE = {"short": (-0.01, -0.01), "bob": (0.03, 0.03), "long": (0.04, 0.12), "twintails": (-0.01, -0.01)}

ATTRIBUTES = (
    "skin_tone", "face_width", "chin", "hair_color", "hair_style", "fringe", "side_locks", "ahoge",
    "hair_highlight", "eye_color", "eye_size", "eye_shape", "mouth", "blush", "glasses", "accessory",
    "background", "yaw", "tilt", "scale", "offset_x", "offset_y",
)

# Points on the unit circle every 11.25 degrees (y points down, so 270 degrees is the top). All the
# trigonometry comes from such tables built with `math` (libm) rather than numpy's SIMD kernels, whose
# last bits can differ between CPUs and would break cross-machine determinism.
_CIRCLE = np.array([(math.cos(2 * math.pi * k / 32), math.sin(2 * math.pi * k / 32)) for k in range(33)])
_ROUND = _CIRCLE[:32:2]
_SQUIRCLE = np.sign(_ROUND) * np.sqrt(np.abs(_ROUND))


def _arc(start: float, stop: float) -> np.ndarray:
    """Unit-circle points from `start` to `stop` degrees (multiples of 11.25)."""
    return _CIRCLE[round(start / 11.25):round(stop / 11.25) + 1]


_UPPER = _arc(180, 360)
_T = np.linspace(0.0, 1.0, 5)[:, None]
_BEZIER = ((1 - _T) * (1 - _T), 2 * (1 - _T) * _T, _T * _T)
_U = np.linspace(-1.0, 1.0, 13)
_LID_TOP = np.array([(1 - u * u) ** 0.4 for u in _U])
_LID_BOTTOM = np.array([(1 - u * u) ** 0.7 for u in _U])
_PIVOT = np.array((0.5, 0.5))


class _Dice:
    """Uniform draws for one face, taken from blocks of a seeded generator (scalar draws are slow)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.pool = []
        self.used = 0

    def take(self, count: int) -> list:
        start, self.used = self.used, self.used + count
        while len(self.pool) < self.used:
            self.pool.extend(self.rng.random(256).tolist())
        return self.pool[start:self.used]

    def one(self) -> float:
        if self.used == len(self.pool):
            self.pool.extend(self.rng.random(256).tolist())
        self.used += 1
        return self.pool[self.used - 1]

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.one()

    def uniforms(self, low: float, high: float, count: int) -> np.ndarray:
        return low + (high - low) * np.array(self.take(count))

    def chance(self, p: float) -> bool:
        return self.one() < p

    def sign(self) -> float:
        return 1.0 if self.one() < 0.5 else -1.0

    def integer(self, low: int, high: int) -> int:
        return low + int((high - low) * self.one())

    def pick(self, options):
        return options[self.integer(0, len(options))]


def sample_attributes(seed: int, index: int) -> dict:
    """The random attributes of face `index` of the set with this `seed` (plain Python values)."""
    return _sample(_dice(seed, index))


def render_face(seed: int, index: int, size: int = 64) -> np.ndarray:
    """Face `index` of the set `seed` as a (size, size, 3) uint8 RGB array."""
    return np.asarray(_render(seed, index, size))


def _dice(seed: int, index: int) -> _Dice:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return _Dice(np.random.default_rng([seed, index]))


def _check_size(size: int) -> None:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(map(str, SIZES))}, got {size}")


def _sample(dice: _Dice) -> dict:
    draws = iter(dice.take(len(ATTRIBUTES)))
    values = {}
    for name in ATTRIBUTES:
        u = next(draws)
        if name in _CHOICES:
            cumulative = _CUMULATIVE[name]
            values[name] = _CHOICES[name][0][bisect.bisect_right(cumulative, u * cumulative[-1])]
        elif name in _FLAGS:
            values[name] = u < _FLAGS[name]
        else:
            low, high = _RANGES[name]
            values[name] = round(low + (high - low) * u, 4)
    return values


def _shade(color, factor):
    (r, g, b), (fr, fg, fb) = color[:3], factor if isinstance(factor, tuple) else (factor, factor, factor)
    return min(255, int(r * fr)), min(255, int(g * fg)), min(255, int(b * fb))


def _mix(color, other, t):
    (r, g, b), (r2, g2, b2) = color[:3], other
    return round(r + (r2 - r) * t), round(g + (g2 - g) * t), round(b + (b2 - b) * t)


def _jitter(dice, color, amount):
    u = dice.take(4)
    return _shade(color, tuple(1 + amount * (2 * u[0] - 1) + amount * (v - 0.5) for v in u[1:]))


@dataclass
class _Face:
    """Layout and palette of one face, in unit coordinates of the upright frame."""

    half_width: float
    chin_y: float
    pointy: float
    yaw: float
    eye_y: float
    eye_dx: float
    eye_a: float
    eye_h: float
    eye_slant: float
    gaze: float
    light: int
    fringe_y: float
    hair_cy: float
    hair_rx: float
    hair_ry: float
    hair_outer: float
    hair_length: float
    skin: tuple
    skin_shade: tuple
    skin_line: tuple
    hair: tuple
    hair_back: tuple
    hair_dark: tuple
    hair_line: tuple
    hair_light: tuple
    eye_line: tuple
    iris: tuple


def _layout(a: dict, dice) -> _Face:
    half_width = 0.27 + 0.06 * a["face_width"]
    skin = _jitter(dice, SKIN_TONES[a["skin_tone"]], 0.02)
    hair = _jitter(dice, HAIR_COLORS[a["hair_color"]], 0.08)
    hair_line = _mix(_shade(hair, 0.42), (30, 20, 30), 0.3)
    hair_rx = half_width + dice.uniform(0.14, 0.22)
    style = a["hair_style"]
    return _Face(
        half_width=half_width,
        chin_y=dice.uniform(0.87, 0.93),
        pointy=a["chin"],
        yaw=a["yaw"],
        eye_y=dice.uniform(0.54, 0.58),
        eye_dx=half_width * dice.uniform(0.58, 0.64),
        eye_a=0.095 + 0.025 * a["eye_size"],
        eye_h=(0.15 + 0.06 * a["eye_size"]) * {"round": 1.12, "standard": 1.0, "narrow": 0.72}[a["eye_shape"]],
        eye_slant={"round": 0.0, "standard": 0.08, "narrow": 0.2}[a["eye_shape"]],
        gaze=dice.uniform(-0.12, 0.12),
        light=int(dice.sign()),
        fringe_y=dice.uniform(0.37, 0.44),
        hair_cy=0.44,
        hair_rx=hair_rx,
        hair_ry=0.44,
        hair_outer=hair_rx + dice.uniform(*_HAIR_FLARE[style]),
        hair_length=dice.uniform(*_HAIR_LENGTH[style]),
        skin=skin,
        skin_shade=_shade(skin, (0.95, 0.86, 0.85)),
        skin_line=_shade(skin, (0.6, 0.42, 0.4)),
        hair=hair,
        hair_back=_shade(hair, 0.74),
        hair_dark=_shade(hair, 0.58),
        hair_line=hair_line,
        hair_light=_mix(hair, (255, 255, 255), 0.55),
        eye_line=_mix(hair_line, (44, 26, 28), 0.7),
        iris=_jitter(dice, EYE_COLORS[a["eye_color"]], 0.08),
    )


class _Canvas:
    """Display list of unit-frame shapes, painted in one pass through the face's pose.

    Transforming all points at once, instead of shape by shape, is what makes rendering fast.
    """

    def __init__(self, pixels: int, a: dict):
        self.scale = pixels * a["scale"]
        angle = math.radians(a["tilt"])
        self.cos, self.sin = self.scale * math.cos(angle), self.scale * math.sin(angle)
        self.shift = pixels * (_PIVOT + (a["offset_x"], a["offset_y"])) \
            - _PIVOT[0] * np.array((self.cos, self.sin)) - _PIVOT[1] * np.array((-self.sin, self.cos))
        self.points, self.styles = [], []  # styles: (point count, colour, line width in pixels or 0 to fill)

    def fill(self, points, color, outline=None, width=0.0):
        points = np.asarray(points, dtype=float)
        self.points.append(points)
        self.styles.append((len(points), color, 0))
        if outline is not None:
            self.line(np.concatenate((points, points[:1])), outline, width)

    def line(self, points, color, width):
        points = np.asarray(points, dtype=float)
        self.points.append(points)
        self.styles.append((len(points), color, max(1, round(width * self.scale))))

    def paint(self, image: Image.Image) -> None:
        points = np.concatenate(self.points)
        xy = points[:, :1] * (self.cos, self.sin) + points[:, 1:] * (-self.sin, self.cos) + self.shift
        flat = np.rint(xy).astype(np.int32).ravel().tolist()
        solid, blend = ImageDraw.Draw(image), ImageDraw.Draw(image, "RGBA")
        start = 0
        for count, color, width in self.styles:
            end = start + 2 * count
            draw = blend if len(color) == 4 else solid
            if width:
                draw.line(flat[start:end], fill=color, width=width)
            else:
                draw.polygon(flat[start:end], fill=color)
            start = end


def _ellipses(params, table=_ROUND):
    """Ellipse outlines for rows of (cx, cy, rx, ry): shape (rows, len(table), 2)."""
    params = np.asarray(params, dtype=float).reshape(-1, 4)
    return table * params[:, None, 2:] + params[:, None, :2]


def _bezier(p0, p1, p2):
    """Quadratic Bezier curves through (..., 2) control points: shape (..., len(_T), 2)."""
    w0, w1, w2 = _BEZIER
    return w0 * np.asarray(p0)[..., None, :] + w1 * np.asarray(p1)[..., None, :] + w2 * np.asarray(p2)[..., None, :]


def _mirror(points):
    out = np.array(points, dtype=float)
    out[:, 0] = 1.0 - out[:, 0]
    return out


def _chaikin(points):
    """One round of corner cutting on a closed outline: every edge becomes two points, corners round off."""
    nxt = np.roll(points, -1, axis=0)
    return np.stack((0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt), axis=1).reshape(-1, 2)


def _strand(root, tip, root_half, tip_half, bulge):
    """Tapered, slightly curved locks of hair from (..., 2) roots to tips; bulge bows them sideways."""
    root, tip = np.asarray(root, dtype=float), np.asarray(tip, dtype=float)
    mid = (root + tip) / 2
    mid[..., 0] += bulge
    dx, tx = np.array((root_half, 0.0)), np.array((tip_half, 0.0))
    return np.concatenate((_bezier(root - dx, mid - 0.8 * dx, tip - tx), _bezier(tip + tx, mid + 0.8 * dx, root + dx)),
                          axis=-2)


def _background(a: dict, dice, n: int) -> Image.Image:
    kind = a["background"]
    if kind == "white":
        return Image.new("RGB", (n, n), (255, 255, 255))
    if kind == "tint":
        return Image.new("RGB", (n, n), tuple(int(v) for v in dice.uniforms(232, 256, 3)))
    color = dice.uniforms(90, 256, 3).astype(int)
    if kind == "color":
        return Image.new("RGB", (n, n), tuple(color.tolist()))
    ramp = np.linspace(0.0, 1.0, n)[:, None]
    column = np.rint(color + (dice.uniforms(200, 256, 3).astype(int) - color) * ramp).astype(np.uint8)
    return Image.fromarray(column[:, None, :]).resize((n, n), Image.Resampling.NEAREST)


def _clothes(c: _Canvas, f: _Face, dice):
    color = dice.pick(CLOTHES_COLORS)
    neck_top = f.chin_y - 0.12
    c.fill([(0.41, neck_top), (0.59, neck_top), (0.6, 1.1), (0.4, 1.1)], f.skin_shade)
    dip = f.chin_y + dice.uniform(0.06, 0.14)
    collar = [(-0.1, 1.1), (-0.05, 0.99), (0.16, 0.95), (0.38, f.chin_y + 0.04), (0.5, dip)]
    c.fill(np.concatenate((collar, _mirror(collar)[::-1])), color, _shade(color, 0.5), 0.006)
    if dice.chance(0.4):
        trim = _mix(color, (255, 255, 255), 0.85)
        c.line([(0.34, f.chin_y + 0.05), (0.5, dip + 0.005), (0.66, f.chin_y + 0.05)], trim, 0.02)


def _hair_back(c: _Canvas, f: _Face, a: dict, dice):
    sides = np.array(((-1.0,), (1.0,)))
    if a["hair_style"] == "twintails":
        roots = np.concatenate((0.5 + sides * f.hair_rx * 0.75, np.full((2, 1), f.hair_cy - f.hair_ry * 0.6)), axis=1)
        tips = np.concatenate((0.5 + sides * (f.hair_rx + 0.02), np.full((2, 1), 1.15)), axis=1)
        for tail in _strand(roots, tips, 0.09, 0.02, sides[:, 0] * 0.12):
            c.fill(tail, f.hair_back, f.hair_line, 0.007)
    # Both halves of the outline, from the crown round to under the face, as (distance from the centre
    # line, y). The hem alternates notches and tips; each notch has a zero-width slit up into the hair,
    # which the outline draws as a strand line.
    count = dice.integer(2, 5)
    outer, length = f.hair_outer, f.hair_length
    inner = f.half_width * dice.uniforms(0.5, 0.8, 2)[:, None]
    top = _arc(270, 360) * (f.hair_rx, f.hair_ry) + (0, f.hair_cy)
    fall = _bezier((f.hair_rx, f.hair_cy), (outer + 0.03, (f.hair_cy + length) / 2), (outer, length))
    hem_x = outer + (inner - outer) * np.arange(1, 2 * count + 1) / (2 * count)
    hem = np.empty((2, count, 4, 2))
    hem[..., 0] = hem_x[:, 0::2, None]
    hem[:, :, 3, 0] = hem_x[:, 1::2]
    hem[..., 1] = length - dice.uniforms(0.05, 0.12, 2 * count).reshape(2, count, 1)
    hem[:, :, 1, 1] -= dice.uniforms(0.15, 0.3, 2 * count).reshape(2, count)
    hem[:, :, 3, 1] = length
    under = np.concatenate((inner * 0.9, np.full((2, 1), 0.6)), axis=1)[:, None]
    halves = np.concatenate((np.broadcast_to(np.concatenate((top, fall)), (2, len(top) + len(fall), 2)),
                             hem.reshape(2, -1, 2), under), axis=1)
    halves[..., 0] = 0.5 + sides * halves[..., 0]
    c.fill(np.concatenate((halves[1], halves[0][::-1])), f.hair_back, f.hair_line, 0.007)


def _face(c: _Canvas, f: _Face):
    w, p, chin, e = f.half_width, f.pointy, f.chin_y, f.eye_y
    half = [(0.5 + w * 0.9, 0.2), (0.5 + w, 0.42), (0.5 + w * 0.98, e + 0.03),
            (0.5 + w * (0.84 - 0.22 * p), e + (chin - e) * 0.55),
            (0.5 + w * (0.42 - 0.22 * p), chin - 0.045 + 0.015 * p), (0.5 + w * 0.1 * (1 - p), chin - 0.004),
            (0.5, chin)]
    outline = _chaikin(np.concatenate((half, _mirror(half[:-1])[::-1])))
    # A turned head swings the jaw and chin towards the turn; the forehead stays put.
    outline[:, 0] += 0.07 * f.yaw * np.clip((outline[:, 1] - e) / (chin - e), 0, 1)
    c.fill(outline, f.skin)
    # Shade the cheek away from the light with a crescent that hugs the contour. A Chaikin round
    # turns each control segment into two points, so [2:12] is the right cheek and [12:22] the left.
    dark = outline[2:12] if f.light < 0 else outline[12:22]
    t = (dark[:, 1:] - 0.42) / (chin - 0.42)
    inner = dark + (0.28 * f.light, 0.0) * t * (1 - t)
    c.fill(np.concatenate((dark, inner[::-1])), f.skin_shade)
    c.line(np.concatenate((outline, outline[:1])), f.skin_line, 0.009)


def _eye_parts(h: float, lift: float) -> list:
    """One eye's white, upper lid with lash flick, lower lid and brow, in the local frame of _eyes."""
    base = -lift * _U
    top = base - h * 0.62 * _LID_TOP * (1 + 0.1 * _U)
    bottom = base + h * 0.38 * _LID_BOTTOM
    thick = 0.016 + 0.006 * (_U + 1)

    def curve(y, u=_U):
        return np.stack((u, y), axis=1)

    flick = [(1.22, -lift - h * 0.14), (1.06, -lift + h * 0.02)]
    return [
        np.concatenate((curve(top), curve(bottom)[::-1])),
        np.concatenate((curve(top - thick), flick, curve(top + 0.004)[::-1])),
        curve(bottom + 0.003)[7:],
        curve(top - h * 0.35 - 0.04 - 0.01 * _LID_TOP, 0.95 * _U)[1:11],
    ]


# The eye outlines are linear in eye height and corner lift, so each face just mixes three fixed arrays.
_EYE_BOUNDS = np.cumsum([0] + [len(part) for part in _eye_parts(0, 0)]).tolist()
_EYE_BASE, _EYE_PER_HEIGHT, _EYE_PER_LIFT = (np.concatenate(_eye_parts(*hl)) for hl in ((0, 0), (1, 0), (0, 1)))
_EYE_PER_HEIGHT, _EYE_PER_LIFT = _EYE_PER_HEIGHT - _EYE_BASE, _EYE_PER_LIFT - _EYE_BASE
# Iris layers, back to front: dark rim, iris, light lower crescent, pupil, highlight, second highlight.
# Per layer: centre below the eye centre and vertical radius (both in eye heights), horizontal radius
# (in eye half-widths) and how far the highlights sit towards the light.
_IRIS = np.array([(0.06, 0.62, 0.72, 0.0), (0.17, 0.47, 0.6, 0.0), (0.37, 0.22, 0.45, 0.0),
                  (0.07, 0.29, 0.3, 0.0), (-0.13, 0.16, 0.22, 0.24), (0.3, 0.074, 0.1, -0.2)])
_IRIS_U = (_ROUND[None, :, 0] * _IRIS[:, 2:3]).ravel()
_IRIS_V = (_ROUND[None, :, 1] * _IRIS[:, 1:2] + _IRIS[:, 0:1]).ravel()
_IRIS_LIGHT = np.repeat(_IRIS[:, 3], len(_ROUND))


def _eyes(c: _Canvas, f: _Face, second_highlight: bool):
    """Both eyes, built once in a local frame and stamped mirrored into place.

    Local u runs from the inner corner (-1) to the outer one (1) and local v is y below the eye centre;
    clamping v between the lid curves clips every iris layer to the eye opening in one step.
    """
    h = f.eye_h
    parts = _EYE_BASE + h * _EYE_PER_HEIGHT + f.eye_slant * h * _EYE_PER_LIFT
    n, lid = _EYE_BOUNDS[-1], len(_U)
    top, bottom = parts[:lid, 1], parts[2 * lid - 1:lid - 1:-1, 1]
    # Gaze and light are directions on the page, so in each eye's mirrored u they flip sign.
    sides = np.array(((-1.0,), (1.0,)))
    u = np.clip(_IRIS_U + sides * (f.gaze + f.light * _IRIS_LIGHT), -1, 1)
    v = np.clip(h * _IRIS_V, np.interp(u, _U, top), np.interp(u, _U, bottom))
    colors = (_shade(f.iris, 0.5), f.iris, _mix(f.iris, (255, 255, 255), 0.45), _shade(f.iris, 0.22),
              (255, 255, 255), (255, 255, 255))[:6 if second_highlight else 5]
    k = len(_ROUND)
    lower_color = _mix(f.eye_line, f.skin, 0.35)
    # On a turned head the far eye looks narrower and everything slides towards the turn.
    frames = np.array([(side * f.eye_a * (1 - 0.25 * max(0.0, side * f.yaw)), 1.0) for side in (-1, 1)])
    origins = np.array([(0.5 + side * f.eye_dx + 0.05 * f.yaw, f.eye_y) for side in (-1, 1)])
    shapes = np.concatenate((np.broadcast_to(parts, (2, n, 2)), np.stack((u, v), axis=-1)), axis=1)
    for placed in shapes * frames[:, None] + origins[:, None]:
        white, lid_line, lower_lid, brow = (placed[i:j] for i, j in zip(_EYE_BOUNDS, _EYE_BOUNDS[1:]))
        c.fill(white, (255, 255, 255))
        for j, color in enumerate(colors):
            c.fill(placed[n + j * k:n + (j + 1) * k], color)
        c.fill(lid_line, f.eye_line)
        c.line(lower_lid, lower_color, 0.006)
        c.line(brow, f.hair_line, 0.008)


def _nose_mouth(c: _Canvas, f: _Face, a: dict, dice):
    nx = 0.5 + 0.08 * f.yaw + dice.uniform(-0.008, 0.008)
    ny = f.eye_y + (f.chin_y - f.eye_y) * 0.42
    c.line([(nx + 0.008, ny - 0.014), (nx, ny + 0.006)], f.skin_line, 0.007)
    mx, my = 0.5 + 0.065 * f.yaw + dice.uniform(-0.008, 0.008), f.eye_y + (f.chin_y - f.eye_y) * 0.72
    mw = dice.uniform(0.025, 0.05)
    lip = _mix(f.skin_line, (150, 40, 50), 0.4)
    if a["mouth"] == "closed":
        c.line(_bezier((mx - mw, my), (mx, my + 0.008), (mx + mw, my - 0.002)), lip, 0.007)
    elif a["mouth"] == "smile":
        c.line(_bezier((mx - mw, my - 0.012), (mx, my + 0.022), (mx + mw, my - 0.012)), lip, 0.008)
    else:
        depth = dice.uniform(0.03, 0.055)
        upper = _bezier((mx - mw, my - 0.006), (mx, my + 0.002), (mx + mw, my - 0.006))
        lower = _bezier((mx + mw, my - 0.006), (mx, my + 2 * depth), (mx - mw, my - 0.006))
        c.fill(np.concatenate((upper, lower)), (150, 52, 62), lip, 0.006)
        tongue = _bezier((mx + mw * 0.6, my + depth * 0.7), (mx, my + depth * 1.7), (mx - mw * 0.6, my + depth * 0.7))
        c.fill(np.concatenate((tongue, _bezier(tongue[-1], (mx, my + depth * 0.35), tongue[0]))), (236, 128, 136))


def _blush(c: _Canvas, f: _Face, dice):
    color = (255, 110, 130, dice.integer(60, 120))
    y = f.eye_y + f.eye_h * 0.55 + 0.03
    for side in (-1, 1):
        c.fill(_ellipses((0.5 + side * (f.eye_dx + 0.01) + 0.05 * f.yaw, y, 0.065, 0.024))[0], color)


def _glasses(c: _Canvas, f: _Face, dice):
    frame = dice.pick(FRAME_COLORS)
    table = _SQUIRCLE if dice.chance(0.6) else _ROUND
    rx, ry = f.eye_a * 1.4, f.eye_h * 0.72
    centres = 0.5 + np.array((-1, 1)) * f.eye_dx + 0.05 * f.yaw
    for side, cx in zip((-1, 1), centres):
        lens = _ellipses((cx, f.eye_y + 0.005, rx, ry), table)[0]
        c.fill(lens, (235, 245, 255, 50), frame, 0.009)
        temple = [(cx + side * rx, f.eye_y - ry * 0.4), (0.5 + side * (f.half_width + 0.05), f.eye_y - ry * 0.5)]
        c.line(temple, frame, 0.009)
    c.line([(centres[0] + rx, f.eye_y - 0.01), ((centres[0] + centres[1]) / 2, f.eye_y - 0.02),
            (centres[1] - rx, f.eye_y - 0.01)], frame, 0.008)


def _side_locks(c: _Canvas, f: _Face, dice):
    sides = np.array((-1.0, 1.0))
    ends = dice.uniforms(0.72, 1.02, 2)
    roots = np.stack((0.5 + sides * (f.half_width - 0.01), np.full(2, 0.3)), axis=1)
    tips = np.stack((0.5 + sides * (f.half_width - dice.uniforms(0.02, 0.06, 2)), ends), axis=1)
    locks = _strand(roots, tips, 0.05, 0.004, sides * 0.03)
    # A zero-width slit from the tip halfway up each lock splits it into two strands in the outline.
    slits = (roots + tips) / 2
    slits[:, 0] += sides * 0.03
    half = locks.shape[1] // 2
    for lock, tip, slit in zip(locks, tips, slits):
        c.fill(np.concatenate((lock[:half], [tip, slit, tip], lock[half:])), f.hair, f.hair_line, 0.006)


def _fringe_tips(f: _Face, a: dict, dice):
    """Strand tips across the forehead (x, y), notch depths between them and the parting's x."""
    style = a["fringe"]
    count = dice.integer(*{"straight": (9, 14), "parted": (7, 11), "spiky": (6, 9), "swept": (7, 10)}[style])
    t = np.linspace(-1, 1, count) + dice.uniforms(-0.04, 0.04, count)
    x = 0.5 + t * (f.half_width - 0.03)
    y = f.fringe_y + 0.07 * t * t
    depth = dice.uniforms(0.07, 0.12, count + 3)
    part = 0.5
    if style == "straight":
        return x, f.fringe_y + dice.uniforms(-0.006, 0.006, count), 0.4 * depth, part
    # A few strands hang longer than the rest, as in drawn fringes.
    y = y + (dice.uniforms(0, 1, count) < 0.2) * dice.uniforms(0.03, 0.09, count)
    if style == "parted":
        part_t = dice.uniform(-0.3, 0.3)
        y = y - 0.12 * np.clip(1 - 2.5 * np.abs(t - part_t), 0, 1)
        x = x + 0.03 * np.sign(t - part_t)
        part = 0.5 + part_t * f.half_width
    elif style == "spiky":
        y = y + dice.uniforms(-0.04, 0.07, count)
        depth = depth + 0.04
    else:
        lean = dice.sign()
        x = x + 0.04 * lean
        y = y + 0.07 * t * lean + dice.uniforms(-0.015, 0.015, count)
        part = 0.5 - lean * 0.6 * f.half_width
    return x, y, depth, part


def _fringe(c: _Canvas, f: _Face, a: dict, dice):
    x, y, depth, part = _fringe_tips(f, a, dice)
    edge, outer = f.half_width - 0.005, (f.half_width + f.hair_rx) / 2 + 0.02
    side_y = f.fringe_y + dice.uniforms(0.1, 0.2, 2)
    outer_y = np.minimum(side_y + dice.uniforms(0.05, 0.2, 2), f.hair_length - 0.05)
    tips = np.stack((np.concatenate(([0.5 - outer, 0.5 - edge], x, [0.5 + edge, 0.5 + outer])),
                     np.concatenate(([outer_y[0], side_y[0]], y, [side_y[1], outer_y[1]]))), axis=1)
    notches = np.stack(((tips[:-1, 0] + tips[1:, 0]) / 2, np.minimum(tips[:-1, 1], tips[1:, 1]) - depth), axis=1)
    corners = np.empty((2 * len(tips) - 1, 2))
    corners[::2], corners[1::2] = tips, notches
    # The parting between two strands is a zero-width slit up from the notch: the outline draws it as a line.
    slits = notches + 0.3 * ((part, f.hair_cy - f.hair_ry + 0.06) - notches)
    slits[[0, -1]] = notches[[0, -1]]
    zigzag = np.concatenate((np.stack((tips[:-1], notches, slits, notches), axis=1).reshape(-1, 2), tips[-1:]))

    above = f.fringe_y - 0.15
    shadow = np.concatenate((corners + (0.006, 0.02), [(0.5 + outer, above), (0.5 - outer, above)]))
    shadow[:, 0] = np.clip(shadow[:, 0], 0.5 - 0.85 * f.half_width, 0.5 + 0.85 * f.half_width)
    c.fill(shadow, f.skin_shade)

    crown = _UPPER * (f.hair_rx, f.hair_ry) + (0.5, f.hair_cy)
    right = _bezier(crown[-1], (0.5 + f.hair_rx + 0.01, f.hair_cy + 0.1), zigzag[-1])[1:-1]
    left = _bezier(zigzag[0], (0.5 - f.hair_rx - 0.01, f.hair_cy + 0.1), crown[0])[1:-1]
    boundary = np.concatenate((right, zigzag[::-1], left))
    c.fill(np.concatenate((crown, boundary)), f.hair)
    # The crown's outline is already drawn with the back hair, which shares it.
    c.line(boundary, f.hair_line, 0.006)

    if a["hair_highlight"]:
        _highlight(c, f, dice)


def _highlight(c: _Canvas, f: _Face, dice):
    """The glossy band ("angel ring") across the crown, with ragged edges like the strands it lies on."""
    arc = _arc(213.75, 326.25)
    band = dice.uniform(0.56, 0.68)
    # Cubing makes most spikes short and a few long, which reads as strands rather than a saw blade.
    spikes = dice.uniforms(0, 1, 2 * len(arc))
    spikes = spikes * spikes * spikes
    upper = band - 0.1 * spikes[:len(arc)]
    lower = band + 0.04 + 0.14 * spikes[len(arc):]
    radii = np.concatenate((upper, lower[::-1]))[:, None]
    ring = np.concatenate((arc, arc[::-1])) * radii * (f.hair_rx, f.hair_ry) + (0.5, f.hair_cy)
    c.fill(ring, (*f.hair_light, 120))


def _ahoge(c: _Canvas, f: _Face, dice):
    side = dice.sign()
    base = np.array((0.5 + dice.uniform(-0.08, 0.08), f.hair_cy - f.hair_ry + 0.04))
    spine = _bezier(base, base + (side * 0.02, -0.16), base + (side * 0.11, -0.09))
    half = 0.016 * (1 - _T)
    c.fill(np.concatenate((spine - half * (1.0, 0.0), (spine + half * (0.3, 1.0))[::-1])), f.hair, f.hair_line, 0.005)


def _accessory(c: _Canvas, f: _Face, a: dict, dice):
    color = _jitter(dice, dice.pick(ACCESSORY_COLORS), 0.05)
    line = _shade(color, 0.55)
    side = dice.sign()
    if a["accessory"] == "ribbon":
        x, y, r = 0.5 + side * f.hair_rx * 0.72, f.hair_cy - f.hair_ry * 0.68, dice.uniform(0.07, 0.1)
        for wing in (-1, 1):
            c.fill([(x, y), (x + wing * r, y - r * 0.7), (x + wing * r * 1.1, y + r * 0.6)], color, line, 0.006)
        c.fill(_ellipses((x, y, r * 0.25, r * 0.25))[0], color, line, 0.006)
    elif a["accessory"] == "pin":
        x, y = 0.5 + side * f.half_width * dice.uniform(0.4, 0.7), f.fringe_y - 0.1
        for tilt in (0.03, -0.03):
            c.line([(x - 0.05, y + tilt), (x + 0.05, y - tilt)], color, 0.014)
    else:
        arc = _arc(191.25, 348.75)
        outer, inner = arc * (f.hair_rx * 0.98, f.hair_ry * 0.98), arc * (f.hair_rx * 0.88, f.hair_ry * 0.86)
        c.fill(np.concatenate((outer, inner[::-1])) + (0.5, f.hair_cy), color, line, 0.006)


def _render(seed: int, index: int, size: int) -> Image.Image:
    _check_size(size)
    dice = _dice(seed, index)
    a = _sample(dice)
    f = _layout(a, dice)
    image = _background(a, dice, size * SUPERSAMPLE)
    c = _Canvas(image.width, a)
    _clothes(c, f, dice)
    _hair_back(c, f, a, dice)
    _face(c, f)
    _eyes(c, f, second_highlight=dice.chance(0.5))
    _nose_mouth(c, f, a, dice)
    if a["blush"]:
        _blush(c, f, dice)
    if a["glasses"]:
        _glasses(c, f, dice)
    if a["side_locks"]:
        _side_locks(c, f, dice)
    _fringe(c, f, a, dice)
    if a["ahoge"]:
        _ahoge(c, f, dice)
    if a["accessory"] != "none":
        _accessory(c, f, a, dice)
    c.paint(image)
    return image.reduce(SUPERSAMPLE)


def contact_sheet(path, size: int = 64, seed: int = 0, grid: int = 8, gap: int = 2) -> Path:
    """Save faces 0..grid*grid-1 as one grid image with white gaps."""
    step = size + gap
    sheet = Image.new("RGB", (grid * step - gap, grid * step - gap), (255, 255, 255))
    for index in range(grid * grid):
        sheet.paste(_render(seed, index, size), ((index % grid) * step, (index // grid) * step))
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def _face_name(index: int) -> str:
    return f"face_{index:06d}.png"


def _write_faces(job) -> int:
    folder, seed, start, stop, size = job
    for index in range(start, stop):
        _render(seed, index, size).save(os.path.join(folder, _face_name(index)))
    return stop - start


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _describe(settings: dict) -> str:
    return f"{settings.get('num')} faces of {settings.get('size')}px (seed {settings.get('seed')})"


def _render_all(folder: Path, num: int, size: int, seed: int, workers: int, progress: bool) -> None:
    chunk = max(1, min(256, num // (4 * workers)))
    jobs = [(str(folder), seed, start, min(start + chunk, num), size) for start in range(0, num, chunk)]
    with tqdm(total=num, desc="synthetic faces", unit="face", file=sys.stderr, disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                bar.update(_write_faces(job))
            return
        # Fork on Linux: spawned workers would each re-import the package, and with it TensorFlow.
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
        with context.Pool(workers) as pool:
            for done in pool.imap_unordered(_write_faces, jobs):
                bar.update(done)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    # The old manifest goes first and the new one comes last, so a half-replaced folder never looks complete.
    if out_dir.is_dir():
        (out_dir / MANIFEST).unlink(missing_ok=True)
        for old in out_dir.glob("face_*.png"):
            old.unlink()
        if not any(out_dir.iterdir()):
            out_dir.rmdir()
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    for face in staging.glob("face_*.png"):
        os.replace(face, out_dir / face.name)
    os.replace(staging / MANIFEST, out_dir / MANIFEST)


def materialize(out_dir, num: int, size: int = 64, seed: int = 0, workers: int | None = None,
                progress: bool = True) -> Path:
    """Write faces 0..num-1 as PNG files under out_dir; reuse an existing identical set; return out_dir."""
    _check_size(size)
    if num <= 0:
        raise ValueError(f"num must be positive, got {num}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out_dir = Path(out_dir)
    settings = {"generator_version": GENERATOR_VERSION, "num": num, "size": size, "seed": seed}
    existing = _read_manifest(out_dir)
    if existing == settings and all((out_dir / _face_name(i)).is_file() for i in range(num)):
        return out_dir
    if existing == settings:
        print(f"{out_dir} is missing some of its {_describe(settings)}; regenerating the set", flush=True)
    elif existing is not None:
        older = "" if existing.get("generator_version") == GENERATOR_VERSION else " from another generator version"
        print(f"{out_dir} holds {_describe(existing)}{older}; regenerating {_describe(settings)}", flush=True)
    elif any(out_dir.glob("face_*.png")):
        print(f"{out_dir} holds faces without a manifest; regenerating {_describe(settings)}", flush=True)
    workers = max(1, min(workers or os.cpu_count() or 1, num))
    staging = out_dir.parent / f"{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _render_all(staging, num, size, seed, workers, progress)
        (staging / MANIFEST).write_text(json.dumps(settings, indent=2) + "\n")
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as one line on stderr, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse(argv) -> argparse.Namespace:
    parser = _Parser(prog="python -m vae.data.synthetic", description=__doc__)
    parser.add_argument("--num", type=int, help="number of faces to write (faces 0..num-1)")
    parser.add_argument("--out", help="folder to write face_NNNNNN.png and manifest.json into")
    parser.add_argument("--contact_sheet", metavar="PNG", help="instead, save faces 0..63 as an 8x8 grid to this file")
    parser.add_argument("--size", type=int, default=64,
                        help=f"side of each face in pixels, one of {', '.join(map(str, SIZES))} (default 64)")
    parser.add_argument("--seed", type=int, default=0,
                        help="which set of faces; the same seed gives the same faces (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU core)")
    args = parser.parse_args(argv)
    if args.size not in SIZES:
        parser.error(f"--size must be one of {', '.join(map(str, SIZES))}, got {args.size}")
    if args.seed < 0:
        parser.error(f"--seed must be non-negative, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.contact_sheet is None:
        if args.num is None or args.out is None:
            parser.error("give --num and --out, or --contact_sheet")
        if args.num <= 0:
            parser.error(f"--num must be positive, got {args.num}")
    elif args.num is not None or args.out is not None:
        parser.error("--contact_sheet does not go with --num or --out")
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        if args.contact_sheet is not None:
            print(contact_sheet(args.contact_sheet, size=args.size, seed=args.seed))
        else:
            print(materialize(args.out, args.num, size=args.size, seed=args.seed, workers=args.workers))
    except OSError as error:
        print(f"python -m vae.data.synthetic: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
