"""HiPPO-LegT maths for the State Machine Module (paper 3.3), numpy float64 only.

Torch-free on purpose: the torch model (`lpgb.trainer.models.smm`), the exporter and the runtime all
take their constants from here, so every part folds exactly the same numbers. The derivation and the
measured choices (positions, normalisation of the extrapolated components) are in `docs/smm.md`.

Conventions
-----------
* Components are indexed n = 0..O-1 (Legendre degree n); the paper's o = n + 1.
* Continuous LegT with window theta = 1:  dc/dt = A c + B u,
  ``A[n,k] = -sqrt((2n+1)(2k+1)) * (1 if n >= k else (-1)**(n-k))``, ``B[n] = sqrt(2n+1)``.
  The state then holds the projection of the last theta time units onto the orthonormal shifted
  Legendre basis: ``c_n(t) = int_0^1 u(t-1+s) sqrt(2n+1) P_n(2s-1) ds`` and
  ``u(t-1+s) ~ sum_n c_n sqrt(2n+1) P_n(2s-1)``, s in [0, 1], s = 1 is "now" (checked numerically
  in tests/test_smm.py).
* One frame is dt = 1/L, so after L steps from c = 0 the window [0, 1] covers the L frames; frame
  j = 1..L sits at position s_j = j / L and the prediction Delta t frames ahead at (j + Delta t) / L.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import scipy.linalg

from lpgb.runtime.config import SMMConfig

Method = Literal["bilinear", "zoh"]


def legt_matrices(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous HiPPO-LegT (theta = 1): A (order, order), B (order,), float64."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    n = np.arange(order, dtype=np.float64)
    r = np.sqrt(2.0 * n + 1.0)
    sign = np.where(n[:, None] >= n[None, :], 1.0, (-1.0) ** (n[:, None] - n[None, :]))
    a = -np.outer(r, r) * sign
    return a, r.copy()


def discretise(a: np.ndarray, b: np.ndarray, dt: float, method: Method = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Discrete (Ad, Bd) for step dt: c[k] = Ad c[k-1] + Bd u[k].

    bilinear: Ad = (I - dt/2 A)^-1 (I + dt/2 A), Bd = (I - dt/2 A)^-1 dt B
    zoh:      Ad = expm(dt A),                  Bd = A^-1 (Ad - I) B
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    eye = np.eye(a.shape[0])
    if method == "bilinear":
        left = eye - (dt / 2.0) * a
        return np.linalg.solve(left, eye + (dt / 2.0) * a), np.linalg.solve(left, dt * b)
    if method == "zoh":
        ad = scipy.linalg.expm(dt * a)
        return ad, np.linalg.solve(a, (ad - eye) @ b)
    raise ValueError(f"unknown discretisation {method!r}; choose bilinear or zoh")


def shifted_legendre(order: int, positions: np.ndarray) -> np.ndarray:
    """Raw values P_n(2r - 1), n = 0..order-1, shape (order, len(positions)), float64.

    Bonnet's three-term recurrence (forward recurrence is stable for P_n, the dominant solution).
    Outside r in [0, 1] the values grow like (x + sqrt(x^2-1))^n: P_63 at r = 1.2 (x = 1.4) is ~4e22.
    """
    x = 2.0 * np.asarray(positions, dtype=np.float64).reshape(-1) - 1.0
    out = np.empty((order, x.size), dtype=np.float64)
    out[0] = 1.0
    if order > 1:
        out[1] = x
    for n in range(1, order - 1):
        out[n + 1] = ((2 * n + 1) * x * out[n] - n * out[n - 1]) / (n + 1)
    return out


def window_positions(cfg: SMMConfig) -> tuple[np.ndarray, np.ndarray]:
    """Positions s in the LegT window of the L frames (j/L) and of the shifted frames ((j + shift)/L)."""
    j = np.arange(1, cfg.window + 1, dtype=np.float64)
    return j / cfg.window, (j + cfg.shift) / cfg.window


def component_scale(cfg: SMMConfig) -> np.ndarray:
    """Per-component normaliser d_n = max |P_n(2s-1)| over all positions used (window and shifted).

    |P_n| <= 1 on [-1, 1] and |P_n| is monotone outside, so the maximum over the hull of the positions
    is at an end point or 1 (attained inside the window at s = 1).
    """
    pos, shifted = window_positions(cfg)
    ends = np.array([0.0, 1.0, min(pos.min(), shifted.min()), max(pos.max(), shifted.max())])
    return np.maximum(1.0, np.abs(shifted_legendre(cfg.components, ends)).max(axis=1))


def motion_components(cfg: SMMConfig, normalised: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Motion components g (O, L) at the window frames and shifted g (O, L) at frames + shift (Eq. 6).

    normalised=True (what the model uses): g_n(s) = P_n(2s-1) / d_n, so |g| <= 1 everywhere it is
    evaluated and float16 stays finite; for shift > 0 the shifted value at the last frame is exactly 1.
    normalised=False: the LegT reconstruction basis sqrt(2n+1) P_n(2s-1) (reference for docs/tests;
    its shifted values reach ~5e23 at O = 64, L = 5, shift = 1).
    The two differ by a fixed diagonal scale per component, which the learnable C absorbs
    (docs/smm.md), so the choice changes conditioning and precision, not what the SMM can express.
    """
    pos, shifted = window_positions(cfg)
    g = shifted_legendre(cfg.components, pos)
    gs = shifted_legendre(cfg.components, shifted)
    if normalised:
        d = component_scale(cfg)[:, None]
        return g / d, gs / d
    r = np.sqrt(2.0 * np.arange(cfg.components) + 1.0)[:, None]
    return g * r, gs * r


def state_matrices(cfg: SMMConfig) -> tuple[np.ndarray, np.ndarray]:
    """(Ad, Bd) for O = cfg.components, dt = 1/L, cfg.discretisation."""
    a, b = legt_matrices(cfg.components)
    return discretise(a, b, 1.0 / cfg.window, cfg.discretisation)


def state_kernels(cfg: SMMConfig) -> np.ndarray:
    """K (L, O): K[j] = Ad^(L-1-j) Bd, j = 0..L-1 oldest first, so c(L) = sum_j K[j] * input[j] from c(0)=0."""
    ad, bd = state_matrices(cfg)
    out = np.empty((cfg.window, cfg.components), dtype=np.float64)
    k = bd.copy()
    for j in range(cfg.window - 1, -1, -1):
        out[j] = k
        k = ad @ k
    return out


class Unrolled(NamedTuple):
    """The SMM core with the recurrence folded (what the exported graph multiplies by).

    kernels (L, O): Ad^(L-1-j) Bd;  g_pred (O,): shifted components at the predicted frame;
    weight (L*O, O): u_hat = z.reshape(K, L*O) @ weight, z (K, L, O) the encoder outputs, frames oldest
    first. taps (L,): per_channel only, weight = kron(taps, I_O); None for summed.
    """

    kernels: np.ndarray
    g_pred: np.ndarray
    weight: np.ndarray
    taps: np.ndarray | None


def unrolled_operator(cfg: SMMConfig, c: np.ndarray) -> Unrolled:
    """Fold Eqs. 3-6 for a given C (O, O) into one (L*O, O) matrix.

    summed:      u_hat[o] = g_pred[o] * sum_j (C K[j])[o] * sum_m z[j, m]
                 -> weight[(j, m), o] = g_pred[o] * (C K[j])[o]   (same for every m)
    per_channel: u_hat[m] = sum_j taps[j] z[j, m],  taps[j] = g_pred . (C K[j])
                 -> weight = kron(taps[:, None], I_O)
    """
    c = np.asarray(c, dtype=np.float64)
    o, l = cfg.components, cfg.window
    if c.shape != (o, o):
        raise ValueError(f"C must be ({o}, {o}), got {c.shape}")
    kern = state_kernels(cfg)
    g_pred = motion_components(cfg)[1][:, -1]
    ck = kern @ c.T  # (L, O): row j = C K[j]
    if cfg.input_form == "summed":
        m = ck * g_pred[None, :]
        weight = np.repeat(m, o, axis=0)  # row j*O + m' = m[j]
        return Unrolled(kern, g_pred, weight, None)
    if cfg.input_form == "per_channel":
        taps = ck @ g_pred
        return Unrolled(kern, g_pred, np.kron(taps[:, None], np.eye(o)), taps)
    raise ValueError(f"unknown input_form {cfg.input_form!r}; choose summed or per_channel")


def smm_reference(cfg: SMMConfig, v: np.ndarray, enc_w: np.ndarray, enc_b: np.ndarray, c: np.ndarray,
                  dec_w: np.ndarray, dec_b: np.ndarray) -> np.ndarray:
    """float64 recurrent reference of the whole SMM: v (K, L, N) -> v_hat (K, N). For parity checks."""
    v = np.asarray(v, dtype=np.float64)
    ad, bd = state_matrices(cfg)
    g_pred = motion_components(cfg)[1][:, -1]
    z = v @ enc_w.T + enc_b  # (K, L, O)
    o = cfg.components
    if cfg.input_form == "summed":
        state = np.zeros((v.shape[0], o))
        for j in range(cfg.window):
            state = state @ ad.T + z[:, j].sum(-1, keepdims=True) * bd
        u_hat = (state @ c.T) * g_pred
    else:
        state = np.zeros((v.shape[0], o, o))
        for j in range(cfg.window):
            state = state @ ad.T + z[:, j, :, None] * bd
        u_hat = (state @ c.T) @ g_pred
    return u_hat @ dec_w.T + dec_b


__all__ = [
    "legt_matrices", "discretise", "shifted_legendre", "window_positions", "component_scale",
    "motion_components", "state_matrices", "state_kernels", "Unrolled", "unrolled_operator", "smm_reference",
]
