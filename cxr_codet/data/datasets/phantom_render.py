"""Renders one synthetic chest-radiograph-like image with VinDr-CXR findings and their tight boxes (numpy + cv2).

Everything is built in an "attenuation" image (bright = dense) in normalised coordinates (x right, y down,
0..1; the patient's left is on the image right): torso, lungs with vascular markings and a domed diaphragm,
heart, mediastinum and aortic knob, spine, ribs, clavicles. Each finding is a drawer that picks a typical
location, draws its own appearance as an additive layer (optionally hiding lung markings) and reports the
pixels that make up the visible lesion; its box is the tight box of those pixels. Exposure, contrast, blur and
noise vary per image. The same seed always gives the same image.

A `PhantomStyle` sets how the image is finished: the default ("synthetic") is the look every phantom result
in MODEL_ZOO.md was measured on; "nih_like" moves lesion contrast, box looseness and the intensity histogram
toward the NIH ChestX-ray14 box images (figures in datasets/README.md).
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..classes import VINDR_CXR_CLASSES

LUNG_DARKNESS = 0.30  # how much darker aerated lung is than soft tissue
MARKING_CONTRAST = 0.08  # vascular markings inside the lungs
MAX_PLACEMENT_TRIES = 12
MAX_BOX_OVERLAP = 0.15  # a new lesion's box may share at most this fraction of its area with earlier boxes


@dataclass(frozen=True)
class PhantomStyle:
    """How a rendered image is finished; the anatomy, findings and their placement do not depend on it."""

    lesion_gain: float = 1.0  # scales every lesion's attenuation: lower gives fainter lesions (lower CNR)
    box_padding: Tuple[float, float] = (0.0, 0.0)  # each box side grows by U(lo, hi) x the box's size, clipped
    tone: Sequence[Tuple[float, float]] = ()  # (input, output) intensity knots of a monotone tone curve; () = none


# Built-in styles. "nih_like" is fitted to the 438 NIH ChestX-ray14 box images (tools/phantom_realism.py; figures
# in datasets/README.md): its tone curve maps the synthetic style's intensity percentiles p5/p25/p50/p75/p95 onto
# NIH's; its box padding (loose, annotator-style boxes) and lesion gain are the pair, on a small grid (gain 0.4-0.8,
# padding up to 0.3-0.75), nearest to NIH's box-side and lesion-CNR percentiles (mean absolute difference).
PHANTOM_STYLES: Dict[str, PhantomStyle] = {
    "synthetic": PhantomStyle(),
    "nih_like": PhantomStyle(
        lesion_gain=0.55,
        box_padding=(0.1, 0.6),
        tone=((0.0, 0.0), (0.012, 0.016), (0.15, 0.31), (0.49, 0.49), (0.65, 0.68), (0.80, 0.86), (1.0, 1.0)),
    ),
}
DEFAULT_STYLE = "synthetic"


def phantom_style(name: str) -> PhantomStyle:
    """The built-in style called `name`, with an error listing the known ones."""
    if name not in PHANTOM_STYLES:
        raise KeyError(f"unknown cxr_phantom style {name!r}; known styles: {sorted(PHANTOM_STYLES)}")
    return PHANTOM_STYLES[name]


@dataclass
class LesionLayer:
    """One drawn lesion: its additive attenuation, where it hides lung markings, and its visible pixels."""

    add: np.ndarray
    extent: np.ndarray
    hide_markings: Optional[np.ndarray] = None


@dataclass
class PhantomImage:
    """A rendered image (uint8 HxW) with COCO boxes [(category_id, [x, y, w, h])] in VinDr-CXR class order."""

    image: np.ndarray
    boxes: List[Tuple[int, List[int]]]
    background: Optional[np.ndarray] = None  # the same image rendered without lesions, when requested
    unplaced: List[int] = field(default_factory=list)  # planned findings that found no room (not drawn, no box)

    @property
    def findings(self) -> List[str]:
        """Sorted unique finding names present in the image."""
        return [VINDR_CXR_CLASSES[c] for c in sorted({c for c, _ in self.boxes})]


def _soft(signed_distance: np.ndarray, edge: float) -> np.ndarray:
    """0..1 ramp of width `edge` centred on zero: 1 where signed_distance > 0 (inside)."""
    return np.clip(signed_distance / edge + 0.5, 0.0, 1.0)


def _bandpass_lines(rng: np.random.Generator, shape, fine_sigma: float, coarse_sigma: float, width: float):
    """A random network of thin lines (zero crossings of band-passed noise), values 0..1."""
    noise = rng.standard_normal(shape).astype(np.float32)
    band = cv2.GaussianBlur(noise, (0, 0), fine_sigma) - cv2.GaussianBlur(noise, (0, 0), coarse_sigma)
    band /= band.std() + 1e-6
    return np.clip(1.0 - np.abs(band) / width, 0.0, 1.0)


class Canvas:
    """The anatomy of one image: coordinate grids, lung geometry and the fields that lesions are drawn against."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")
        scale = rng.uniform(0.93, 1.05)
        shift_x, shift_y = rng.uniform(-0.02, 0.02, size=2)
        self.mid_x = 0.5 + shift_x
        # Lung k = 0 is the image-left lung (patient's right), k = 1 the image-right lung.
        self.lungs = []
        for side, half_width in ((-1, 0.155), (1, 0.148)):
            cx = self.mid_x + side * 0.19 * scale + rng.uniform(-0.01, 0.01)
            cy = 0.47 + shift_y + rng.uniform(-0.01, 0.01)
            ax, ay = half_width * scale * rng.uniform(0.95, 1.05), 0.34 * scale * rng.uniform(0.95, 1.05)
            base = cy + 0.80 * ay - (0.015 if side < 0 else 0.0)
            self.lungs.append((side, cx, cy, ax, ay, base))
        self.dome = rng.uniform(0.035, 0.06)
        self.diaphragm_top = min(base - self.dome for _, _, _, _, _, base in self.lungs)
        self.lung_r = [self._lung_radius(lung) for lung in self.lungs]
        self.lung_shape = [self._lung_shape(k) for k in range(2)]
        self.heart = self.heart_mask(rng.uniform(0.135, 0.15) * scale)
        self.mediastinum = self._mediastinum()
        self.knob_radius = rng.uniform(0.026, 0.032) * scale
        self.knob_center = (self.mid_x + 0.055 * scale, self.lungs[1][2] - 0.55 * self.lungs[1][4])
        self.knob = self.disc(*self.knob_center, self.knob_radius, edge=0.006)
        self.aerated = self.lung_field(self.heart)
        self.markings = self._markings(rng)
        self.tissue = self._tissue(rng, scale)

    # -- geometry helpers ----------------------------------------------------------------------------------
    def disc(self, cx, cy, radius, edge=0.005, aspect=1.0):
        """A soft disc (ellipse with vertical semi-axis radius * aspect), 0..1."""
        r = np.sqrt(((self.x - cx) / radius) ** 2 + ((self.y - cy) / (radius * aspect)) ** 2)
        return _soft((1.0 - r) * radius, edge)

    def _lung_radius(self, lung):
        """Normalised superellipse radius of a lung (1 on its outline), narrowing toward the apex."""
        _, cx, cy, ax, ay, _ = lung
        t = (self.y - cy) / ay
        taper = 1.0 - 0.45 * np.clip(-t, 0.0, 1.0) ** 1.6
        return (np.abs((self.x - cx) / (ax * taper)) ** 2.4 + np.abs(t) ** 2.4) ** (1 / 2.4)

    def diaphragm_y(self, k):
        """The hemidiaphragm line under lung k: lowest at the costophrenic angles, domed in the middle."""
        _, cx, _, ax, _, base = self.lungs[k]
        return base - self.dome * np.clip(1.0 - ((self.x - cx) / ax) ** 2, 0.0, 1.0)

    def _lung_shape(self, k):
        """Lung k (0..1) inside its outline and above its hemidiaphragm, before anything is laid over it."""
        r = self.lung_r[k]
        return _soft((1.0 - r) * self.lungs[k][3], 0.006) * _soft(self.diaphragm_y(k) - self.y, 0.006)

    def heart_mask(self, half_width):
        """The heart shadow of a given half width, cut at the top of the diaphragm; it grows to the image right."""
        cx = self.mid_x + 0.03 + 0.45 * (half_width - 0.14)
        cy = self.diaphragm_top - 0.06
        r = np.sqrt(((self.x - cx) / half_width) ** 2 + ((self.y - cy) / 0.14) ** 2)
        return _soft((1.0 - r) * half_width, 0.006) * _soft(self.diaphragm_top + 0.01 - self.y, 0.004)

    def _mediastinum(self):
        """The central soft-tissue column, widening toward the heart."""
        half_width = 0.05 + 0.03 * np.clip((self.y - 0.25) / 0.3, 0.0, 1.0)
        return _soft(half_width - np.abs(self.x - self.mid_x), 0.008) * _soft(self.y - 0.05, 0.02)

    def lung_field(self, heart, extra_cover=None):
        """Aerated lung (0..1) once the heart, mediastinum, aortic knob and `extra_cover` are laid over it."""
        field = np.maximum(self.lung_shape[0], self.lung_shape[1])
        cover = np.maximum(np.maximum(heart, self.mediastinum), self.knob)
        if extra_cover is not None:
            cover = np.maximum(cover, extra_cover)
        return field * (1.0 - cover)

    # -- anatomy -------------------------------------------------------------------------------------------
    def _markings(self, rng):
        """Vascular markings: thin branching lines, denser near the hila."""
        lines = _bandpass_lines(rng, (self.size, self.size), 0.008 * self.size, 0.025 * self.size, 0.5)
        hilum_weight = np.zeros_like(lines)
        for _, cx, cy, ax, _, _ in self.lungs:
            hilum_x = cx + (0.55 * ax if cx < self.mid_x else -0.55 * ax)
            distance = np.sqrt((self.x - hilum_x) ** 2 + (self.y - cy) ** 2)
            hilum_weight = np.maximum(hilum_weight, np.exp(-distance / 0.16))
        return lines * (0.35 + hilum_weight)

    def _tissue(self, rng, scale):
        """Everything except the lungs' darkness: torso, abdomen, bones, mediastinal and cardiac density."""
        x, y = self.x, self.y
        torso = self.disc(self.mid_x, 0.62, 0.47 * scale, edge=0.03, aspect=1.35)
        neck = _soft(0.09 - np.abs(x - self.mid_x), 0.02) * _soft(0.2 - y, 0.05)
        body = np.maximum(torso, neck)
        tissue = 0.03 + 0.39 * body
        below = np.minimum(_soft(y - self.diaphragm_y(0), 0.01), _soft(y - self.diaphragm_y(1), 0.01))
        abdomen = below * _soft(0.40 - np.abs(x - self.mid_x), 0.03)
        tissue += 0.05 * abdomen * body
        tissue += 0.03 * self.heart + 0.05 * self.mediastinum + 0.05 * self.knob
        spine = _soft(0.032 - np.abs(x - self.mid_x), 0.006) * _soft(y - 0.04, 0.02)
        tissue += spine * (0.11 + 0.03 * np.cos(2 * np.pi * y / rng.uniform(0.04, 0.05)))
        # Posterior ribs: arcs leaving the spine, rising slightly, then curving down laterally.
        lateral = np.abs(x - self.mid_x)
        phase = (y + 0.45 * lateral - 1.6 * lateral ** 2) / rng.uniform(0.065, 0.078) + rng.uniform(0, 1)
        ribs = np.clip((np.cos(2 * np.pi * phase) - 0.35) / 0.65, 0.0, 1.0)
        over_lungs = 0.3 + 0.7 * np.maximum(self.lung_shape[0], self.lung_shape[1])
        above_diaphragm = _soft(self.diaphragm_top + 0.04 - y, 0.02)
        tissue += 0.05 * ribs * body * over_lungs * _soft(lateral - 0.03, 0.01) * above_diaphragm
        # Clavicles: oblique bands from the sternal notch up to the shoulders.
        for side in (-1, 1):
            along = side * (x - self.mid_x)
            centre_y = 0.2 * scale - 0.25 * along + 0.35 * along ** 2
            span = _soft(along - 0.04, 0.01) * _soft(0.36 - along, 0.02)
            tissue += 0.12 * _soft(0.012 - np.abs(y - centre_y), 0.004) * span
        return tissue.astype(np.float32)

    # -- placement -----------------------------------------------------------------------------------------
    def window(self, point, reach):
        """The (rows, cols) slices of the square of half side `reach` around `point`, clipped to the image."""
        lo_x, hi_x = (int(np.floor((point[0] + d * reach) * self.size)) for d in (-1, 1))
        lo_y, hi_y = (int(np.floor((point[1] + d * reach) * self.size)) for d in (-1, 1))
        return (slice(max(lo_y, 0), min(hi_y + 2, self.size)), slice(max(lo_x, 0), min(hi_x + 2, self.size)))

    def embed(self, window, local):
        """A full-size array that is `local` inside `window` and zero elsewhere."""
        full = np.zeros((self.size, self.size), local.dtype)
        full[window] = local
        return full

    def point_in_lung(self, rng, k, t_range, lateral_range=(-0.75, 0.75)):
        """A point of lung k at relative height t (-1 apex .. 1 base) and relative lateral offset (+ = lateral)."""
        side, cx, cy, ax, ay, _ = self.lungs[k]
        for _ in range(MAX_PLACEMENT_TRIES):
            t = rng.uniform(*t_range)
            width = ax * (1.0 - 0.45 * np.clip(-t, 0.0, 1.0) ** 1.6) * (1.0 - abs(t) ** 2.4) ** (1 / 2.4)
            u = rng.uniform(*lateral_range)
            px, py = cx + side * u * width, cy + t * ay
            i, j = int(py * self.size), int(px * self.size)
            if 0 <= i < self.size and 0 <= j < self.size and self.aerated[i, j] > 0.99:
                return px, py
        return None


# ------------------------------------------------------------------------------------------------------------
# Finding drawers: (canvas, rng) -> LesionLayer or None (no room). Sizes are fractions of the image side.


@dataclass
class Patch:
    """Local frame of an in-lung lesion: its window's grids, elliptic radius r (1 on the outline), lung and size."""

    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    radius: float
    lung: int
    point: Tuple[float, float]


def _lung_patch(canvas, rng, profile, t_range, diameter_range, aspect_range=(0.8, 1.2), lateral_range=(-0.75, 0.75),
                angle_range=(0.0, 0.0)):
    """Place an in-lung lesion and draw `profile(patch) -> (add, extent)` in a window around it, clipped to the lung.

    The lesion's outline is an ellipse of half axes (radius, radius * aspect) turned by an angle in `angle_range`.
    """
    k = int(rng.integers(2))
    point = canvas.point_in_lung(rng, k, t_range, lateral_range)
    if point is None:
        return None
    radius = rng.uniform(*diameter_range) / 2
    aspect = rng.uniform(*aspect_range)
    angle = rng.uniform(*angle_range)
    reach = 1.3 * radius * max(1.0, aspect)
    window = canvas.window(point, reach)
    x, y = canvas.x[window], canvas.y[window]
    dx, dy = x - point[0], y - point[1]
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    r = np.sqrt((along / radius) ** 2 + (across / (radius * aspect)) ** 2)
    add, extent = profile(Patch(x=x, y=y, r=r, radius=radius, lung=k, point=point))
    lung = canvas.aerated[window]
    return LesionLayer(add=canvas.embed(window, add * lung), extent=canvas.embed(window, extent & (lung > 0.5)))


def _noise(rng, shape, sigma_px):
    """Smooth random field (unit standard deviation) with correlation length `sigma_px`."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma_px)
    return field / (field.std() + 1e-6)


def draw_nodule(canvas, rng):
    """Nodule/Mass: a round, well-circumscribed opacity, 10-33 px on a 256 px image."""
    contrast = rng.uniform(0.22, 0.3)

    def profile(p):
        disc = _soft((1.0 - p.r) * p.radius, 0.004)
        return contrast * disc * (1.0 - 0.15 * p.r ** 2), disc > 0.5

    return _lung_patch(canvas, rng, profile, (-0.7, 0.6), (0.038, 0.13))


def draw_other_lesion(canvas, rng):
    """Other lesion: a thick-walled cavity (bright ring around an air-dark centre)."""
    contrast = rng.uniform(0.25, 0.3)
    hole = rng.uniform(0.4, 0.6)

    def profile(p):
        outer = _soft((1.0 - p.r) * p.radius, 0.004)
        inner = _soft((hole - p.r) * p.radius, 0.004)
        return contrast * outer - (contrast + 0.08) * inner, outer > 0.5

    return _lung_patch(canvas, rng, profile, (-0.7, 0.4), (0.06, 0.11))


def draw_lung_opacity(canvas, rng):
    """Lung Opacity: a smooth, faint ground-glass patch fading toward its edge."""
    contrast = rng.uniform(0.15, 0.19)

    def profile(p):
        ramp = np.clip((1.0 - p.r) / 0.35, 0.0, 1.0)
        return contrast * ramp, ramp > 0.1

    return _lung_patch(canvas, rng, profile, (-0.6, 0.6), (0.1, 0.18))


def draw_consolidation(canvas, rng):
    """Consolidation: a dense homogeneous opacity with a lobulated margin and dark air bronchograms."""
    contrast = rng.uniform(0.26, 0.32)

    def profile(p):
        wobble = _noise(rng, p.r.shape, 0.03 * canvas.size)
        body = _soft((1.0 - p.r + 0.05 * wobble) * p.radius, 0.006)
        bronchi = _bandpass_lines(rng, p.r.shape, 0.004 * canvas.size, 0.015 * canvas.size, 0.3)
        return contrast * body * (1.0 - 0.4 * bronchi * _soft((0.7 - p.r) * p.radius, 0.01)), body > 0.5

    return _lung_patch(canvas, rng, profile, (-0.1, 0.6), (0.14, 0.22))


def draw_infiltration(canvas, rng):
    """Infiltration: ill-defined patchy, mottled haze."""
    contrast = rng.uniform(0.2, 0.25)

    def profile(p):
        blotches = np.clip(0.6 * _noise(rng, p.r.shape, 0.012 * canvas.size) + 0.6, 0.0, 1.0)
        envelope = _soft((1.0 - p.r) * p.radius, 0.01)
        return contrast * envelope * blotches, (envelope > 0.5) & (blotches > 0.15)

    return _lung_patch(canvas, rng, profile, (-0.4, 0.4), (0.12, 0.2))


def draw_ild(canvas, rng):
    """ILD: a fine reticular net of interstitial lines in a lower, peripheral zone."""
    contrast = rng.uniform(0.18, 0.22)

    def profile(p):
        net = _bandpass_lines(rng, p.r.shape, 0.004 * canvas.size, 0.012 * canvas.size, 0.5)
        envelope = _soft((1.0 - p.r) * p.radius, 0.008)
        return contrast * envelope * (0.35 + 0.65 * net), envelope > 0.5

    return _lung_patch(canvas, rng, profile, (0.15, 0.6), (0.17, 0.25), (0.9, 1.3), lateral_range=(0.0, 0.6))


def draw_fibrosis(canvas, rng):
    """Pulmonary fibrosis: coarse streaks radiating toward the hilum, in an upper zone."""
    contrast = rng.uniform(0.2, 0.26)
    streak_count = rng.uniform(14, 20)

    def profile(p):
        _, cx, cy, _, _, _ = canvas.lungs[p.lung]
        angle = np.arctan2(p.y - cy, p.x - cx) + 0.25 * _noise(rng, p.r.shape, 0.02 * canvas.size)
        streaks = np.clip(1.0 - np.abs(np.sin(angle * streak_count)) / 0.45, 0.0, 1.0)
        coarse = _bandpass_lines(rng, p.r.shape, 0.01 * canvas.size, 0.03 * canvas.size, 0.35)
        envelope = _soft((1.0 - p.r) * p.radius, 0.008)
        return contrast * envelope * (0.25 + 0.75 * np.maximum(streaks, coarse)), envelope > 0.5

    return _lung_patch(canvas, rng, profile, (-0.65, -0.2), (0.16, 0.24), (0.9, 1.3), lateral_range=(-0.3, 0.6))


def draw_atelectasis(canvas, rng):
    """Atelectasis: a plate-like linear band, near-horizontal, in a lower or middle zone."""
    contrast = rng.uniform(0.24, 0.3)

    def profile(p):
        band = _soft((1.0 - p.r) * p.radius * 0.3, 0.003)
        return contrast * band, band > 0.5

    return _lung_patch(canvas, rng, profile, (0.0, 0.55), (0.13, 0.2), (0.25, 0.35), (-0.5, 0.5), (-0.35, 0.35))


def draw_calcification(canvas, rng):
    """Calcification: one to three tiny, bone-bright, sharp dots."""
    contrast = rng.uniform(0.38, 0.45)
    dot_count = int(rng.integers(1, 4))

    def profile(p):
        dots = np.zeros_like(p.r)
        for offset in [np.zeros(2)] + [rng.uniform(-0.018, 0.018, size=2) for _ in range(dot_count - 1)]:
            radius = rng.uniform(0.017, 0.022)
            distance = np.sqrt((p.x - p.point[0] - offset[0]) ** 2 + (p.y - p.point[1] - offset[1]) ** 2)
            dots = np.maximum(dots, _soft(radius - distance, 0.003))
        return contrast * dots, dots > 0.5

    return _lung_patch(canvas, rng, profile, (-0.6, 0.5), (0.06, 0.06))


def draw_pleural_effusion(canvas, rng):
    """Pleural effusion: fluid filling the lung base up to a meniscus that climbs the lateral chest wall."""
    k = int(rng.integers(2))
    side, cx, cy, ax, ay, base = canvas.lungs[k]
    height = rng.uniform(0.08, 0.15)
    lateral = np.clip(side * (canvas.x - cx) / ax, -1.0, 1.0)
    meniscus = base - height - 0.6 * height * np.clip(lateral, 0.0, 1.0) ** 2 + 0.3 * height * np.clip(-lateral, 0, 1)
    fluid = _soft(canvas.y - meniscus, 0.008) * canvas.lung_shape[k]
    visible = fluid * (1.0 - np.maximum(canvas.heart, canvas.mediastinum))
    return LesionLayer(add=(LUNG_DARKNESS + 0.03) * visible, extent=visible > 0.5, hide_markings=fluid)


def draw_pleural_thickening(canvas, rng):
    """Pleural thickening: a soft-tissue band along the lateral chest wall or capping the apex."""
    k = int(rng.integers(2))
    side, cx, cy, ax, ay, _ = canvas.lungs[k]
    thickness = rng.uniform(0.032, 0.042)
    inner = canvas.lung_r[k] > 1.0 - thickness / ax
    if rng.random() < 0.5:
        start = rng.uniform(-0.5, 0.1)
        t = (canvas.y - cy) / ay
        region = (side * (canvas.x - cx) > 0.3 * ax) & (t > start) & (t < start + rng.uniform(0.5, 0.7))
    else:
        region = canvas.y < cy - 0.72 * ay
    band = canvas.lung_shape[k] * (inner & region)
    band = band * (1.0 - np.maximum(canvas.mediastinum, canvas.heart))
    return LesionLayer(add=(LUNG_DARKNESS + 0.04) * band, extent=band > 0.5, hide_markings=band)


def draw_pneumothorax(canvas, rng):
    """Pneumothorax: an apical-lateral crescent of air without lung markings, edged by a thin pleural line."""
    k = int(rng.integers(2))
    side, cx, cy, ax, ay, _ = canvas.lungs[k]
    depth = rng.uniform(0.22, 0.34)
    lower = cy + rng.uniform(-0.1, 0.3) * ay
    r = canvas.lung_r[k]
    lateral_or_apical = (side * (canvas.x - cx) > -0.2 * ax) | (canvas.y < cy - 0.6 * ay)
    gate = _soft(lower - canvas.y, 0.01) * lateral_or_apical * (1.0 - canvas.mediastinum)
    air = _soft((r - (1.0 - depth)) * ax, 0.004) * canvas.lung_shape[k] * gate
    line = np.exp(-(((r - (1.0 - depth)) * ax) / 0.003) ** 2) * canvas.lung_shape[k] * gate
    return LesionLayer(add=-0.1 * air + 0.12 * line, extent=air > 0.5, hide_markings=air)


def draw_cardiomegaly(canvas, rng):
    """Cardiomegaly: a heart shadow wider than half the chest; its box surrounds the whole heart."""
    big_heart = canvas.heart_mask(rng.uniform(0.19, 0.225))
    gained = canvas.aerated - canvas.lung_field(big_heart)
    add = LUNG_DARKNESS * gained + 0.03 * np.clip(big_heart - canvas.heart, 0.0, 1.0)
    return LesionLayer(add=add, extent=big_heart > 0.5, hide_markings=big_heart)


def draw_aortic_enlargement(canvas, rng):
    """Aortic enlargement: a widened aortic knob bulging into the left upper lung (image right)."""
    radius = rng.uniform(0.048, 0.062)
    cx, cy = canvas.knob_center
    knob = canvas.disc(cx + 0.6 * (radius - canvas.knob_radius), cy, radius, edge=0.005)
    gained = canvas.aerated - canvas.lung_field(canvas.heart, extra_cover=knob)
    add = LUNG_DARKNESS * gained + 0.05 * np.clip(knob - canvas.knob, 0.0, 1.0)
    return LesionLayer(add=add, extent=knob > 0.5, hide_markings=knob)


FINDING_DRAWERS: Dict[str, Callable[[Canvas, np.random.Generator], Optional[LesionLayer]]] = {
    "Aortic enlargement": draw_aortic_enlargement,
    "Atelectasis": draw_atelectasis,
    "Calcification": draw_calcification,
    "Cardiomegaly": draw_cardiomegaly,
    "Consolidation": draw_consolidation,
    "ILD": draw_ild,
    "Infiltration": draw_infiltration,
    "Lung Opacity": draw_lung_opacity,
    "Nodule/Mass": draw_nodule,
    "Other lesion": draw_other_lesion,
    "Pleural effusion": draw_pleural_effusion,
    "Pleural thickening": draw_pleural_thickening,
    "Pneumothorax": draw_pneumothorax,
    "Pulmonary fibrosis": draw_fibrosis,
}
assert tuple(FINDING_DRAWERS) == VINDR_CXR_CLASSES

# Findings drawn first in an image (large, anatomy-bound); the others are then placed around their boxes.
_DRAW_FIRST = ("Cardiomegaly", "Aortic enlargement", "Pleural effusion", "Pneumothorax", "Pleural thickening")
# Findings that may appear more than once in an image.
_MULTI_INSTANCE = ("Nodule/Mass", "Calcification")


def _tight_box(extent: np.ndarray) -> Optional[List[int]]:
    """[x, y, w, h] in whole pixels around the True pixels of `extent`; None when there are none."""
    rows, cols = np.flatnonzero(extent.any(axis=1)), np.flatnonzero(extent.any(axis=0))
    if rows.size == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _overlap_fraction(box, others) -> float:
    """The largest fraction of `box`'s area shared with any box in `others`."""
    x, y, w, h = box
    worst = 0.0
    for ox, oy, ow, oh in others:
        iw = max(0, min(x + w, ox + ow) - max(x, ox))
        ih = max(0, min(y + h, oy + oh) - max(y, oy))
        worst = max(worst, iw * ih / float(min(w * h, ow * oh)))
    return worst


def _choose_findings(rng: np.random.Generator, primary: Optional[int]) -> List[int]:
    """The primary finding plus 0-2 distinct extra findings (and a second nodule or calcification at times)."""
    if primary is None:
        return []
    findings = [primary]
    extra_count = rng.choice(3, p=[0.5, 0.35, 0.15])
    candidates = [c for c in range(len(VINDR_CXR_CLASSES)) if c != primary]
    findings += [int(c) for c in rng.choice(candidates, size=extra_count, replace=False)]
    for c in list(findings):
        if VINDR_CXR_CLASSES[c] in _MULTI_INSTANCE and rng.random() < 0.3:
            findings.append(c)
    return findings


def _expose(attenuation: np.ndarray, exposure, noise: np.ndarray,
            tone: Sequence[Tuple[float, float]] = ()) -> np.ndarray:
    """Detector response: gain/offset/gamma, slight blur, quantum noise, the style's tone curve (if any), 8-bit
    quantisation."""
    gain, offset, gamma, blur, noise_sigma = exposure
    intensity = np.clip(attenuation / 0.72 * gain + offset, 0.0, 1.0) ** gamma
    intensity = cv2.GaussianBlur(intensity.astype(np.float32), (0, 0), blur)
    intensity = intensity + noise_sigma * noise
    if tone:
        knots_in, knots_out = zip(*tone)
        intensity = np.interp(intensity, knots_in, knots_out).astype(np.float32)
    return np.clip(intensity * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _pad_box(box: List[int], padding: Tuple[float, float], size: int, rng: np.random.Generator) -> List[int]:
    """`box` [x, y, w, h] with each side moved out by U(padding) x its width or height, clipped to the image."""
    x, y, w, h = box
    left, right = rng.uniform(*padding, size=2) * w
    top, bottom = rng.uniform(*padding, size=2) * h
    x0, y0 = max(int(round(x - left)), 0), max(int(round(y - top)), 0)
    x1, y1 = min(int(round(x + w + right)), size), min(int(round(y + h + bottom)), size)
    return [x0, y0, x1 - x0, y1 - y0]


def render_phantom_image(
    size: int, seed: int, index: int, primary: Optional[int], with_background: bool = False,
    style: str = DEFAULT_STYLE,
) -> PhantomImage:
    """Render image `index` of a split with random seed `seed`; `primary` is its main finding id (None: normal).

    With `with_background`, also renders the same image (same anatomy, exposure and noise) without any lesion.
    `style` names a PHANTOM_STYLES entry; every style draws the same anatomy and findings for the same seed.
    """
    finish = phantom_style(style)
    rng = np.random.default_rng([seed, index])
    canvas = Canvas(size, rng)
    exposure = (rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05), rng.uniform(0.8, 1.25), rng.uniform(0.4, 0.7),
                rng.uniform(0.012, 0.03))
    noise = rng.standard_normal((size, size)).astype(np.float32)
    heel = (rng.uniform(-0.04, 0.04) * (canvas.y - 0.5) + rng.uniform(-0.03, 0.03) * (canvas.x - 0.5))

    add = np.zeros((size, size), np.float32)
    hidden = np.zeros((size, size), np.float32)
    boxes: List[Tuple[int, List[int]]] = []
    unplaced: List[int] = []
    findings = _choose_findings(rng, primary)
    findings.sort(key=lambda c: VINDR_CXR_CLASSES[c] not in _DRAW_FIRST)
    for category in findings:
        name = VINDR_CXR_CLASSES[category]
        for _ in range(MAX_PLACEMENT_TRIES):
            layer = FINDING_DRAWERS[name](canvas, rng)
            box = None if layer is None else _tight_box(layer.extent)
            if box is not None and _overlap_fraction(box, [b for _, b in boxes]) <= MAX_BOX_OVERLAP:
                break
        else:
            unplaced.append(category)
            continue
        add += layer.add
        if layer.hide_markings is not None:
            hidden = np.maximum(hidden, layer.hide_markings)
        boxes.append((category, box))

    lung = canvas.aerated
    anatomy = canvas.tissue - LUNG_DARKNESS * lung + heel
    lesions = finish.lesion_gain * add  # x 1.0 leaves every value as it was: the default style is unchanged
    image = _expose(anatomy + MARKING_CONTRAST * lung * canvas.markings * (1.0 - hidden) + lesions, exposure, noise,
                    finish.tone)
    background = None
    if with_background:
        background = _expose(anatomy + MARKING_CONTRAST * lung * canvas.markings, exposure, noise, finish.tone)
    if finish.box_padding != (0.0, 0.0):
        padding_rng = np.random.default_rng([seed, index, 0xB0C5])  # own stream: the other styles' draws stay put
        boxes = [(category, _pad_box(box, finish.box_padding, size, padding_rng)) for category, box in boxes]
    boxes.sort(key=lambda item: (item[0], item[1]))
    return PhantomImage(image=image, boxes=boxes, background=background, unplaced=unplaced)
