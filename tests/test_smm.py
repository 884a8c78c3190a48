"""SMM maths (runtime/legendre.py), the torch SMM, fusion and temporal model. Small and fast."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npl

from lpgb.runtime import legendre as lg
from lpgb.runtime.config import SMMConfig, preset, with_overrides
from lpgb.runtime.errors import LpgbError
from lpgb.trainer.models.fusion import BranchFusion
from lpgb.trainer.models.smm import SMM
from lpgb.trainer.models.temporal import TemporalModel

FORMS = ("summed", "per_channel")
DISCS = ("bilinear", "zoh")


def _random_weights(m: torch.nn.Module, std: float = 0.5, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)


# ---------------------------------------------------------------- runtime/legendre.py (numpy)

def test_legendre_module_is_torch_free():
    code = "import sys, lpgb.runtime.legendre; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_legt_state_is_shifted_legendre_projection_of_window():
    """Fine-step LegT (theta=1): c_n = int_0^1 u(T-1+s) sqrt(2n+1) P_n(2s-1) ds (s=1 is now)."""
    order, steps, horizon = 6, 4000, 2.0
    a, b = lg.legt_matrices(order)
    ad, bd = lg.discretise(a, b, horizon / steps, "bilinear")

    def u(t):
        return np.sin(3 * t) + 0.5 * t**2

    c = np.zeros(order)
    for k in range(1, steps + 1):
        c = ad @ c + bd * u(k * horizon / steps)
    s = np.linspace(0.0, 1.0, 4001)
    basis = np.sqrt(2 * np.arange(order) + 1)[:, None] * lg.shifted_legendre(order, s)
    proj = np.trapezoid(basis * u(horizon - 1 + s), s, axis=1)
    np.testing.assert_allclose(c, proj, atol=2e-3)


@pytest.mark.parametrize("method", DISCS)
def test_discretisations_are_stable_and_agree(method):
    a, b = lg.legt_matrices(16)
    ad, bd = lg.discretise(a, b, 0.2, method)
    assert np.abs(np.linalg.eigvals(ad)).max() < 1.0
    ad2, bd2 = lg.discretise(a, b, 1e-4, method)
    ad3, bd3 = lg.discretise(a, b, 1e-4, "zoh" if method == "bilinear" else "bilinear")
    np.testing.assert_allclose(ad2, ad3, atol=1e-6)
    np.testing.assert_allclose(bd2, bd3, rtol=1e-3)


def test_shifted_legendre_matches_numpy_and_explodes_outside():
    r = np.linspace(-0.2, 1.2, 57)
    got = lg.shifted_legendre(64, r)
    want = np.stack([npl.legval(2 * r - 1, np.eye(64)[n]) for n in range(64)])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert got[63, -1] > 1e22  # P_63(1.4): the pitfall of Eq. 6


def test_motion_components_normalised_and_raw():
    cfg = SMMConfig()  # O=64, L=5, shift=1
    g, gs = lg.motion_components(cfg)
    assert g.shape == gs.shape == (64, 5)
    assert np.abs(g).max() <= 1.0 + 1e-12 and np.abs(gs).max() <= 1.0 + 1e-12
    np.testing.assert_allclose(gs[:, -1], 1.0)  # predicted frame: every component peaks there
    np.testing.assert_allclose(g[:, -1] * lg.component_scale(cfg), 1.0)  # s = 1: P_n(1) = 1
    graw, gsraw = lg.motion_components(cfg, normalised=False)
    assert np.abs(graw).max() <= np.sqrt(127) + 1e-9  # inside the window: bounded
    assert np.abs(gsraw).max() > np.finfo(np.float16).max  # shifted raw values overflow float16
    # same shape in the window up to a per-component scale (absorbed by C)
    ratio = graw / g
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(5, axis=1))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("disc", DISCS)
def test_unrolled_operator_matches_numpy_recurrence(form, disc):
    cfg = SMMConfig(components=12, input_form=form, discretisation=disc)
    rng = np.random.default_rng(0)
    n, k, o = 20, 7, cfg.components
    ew, eb, c = rng.normal(size=(o, n)), rng.normal(size=o), rng.normal(size=(o, o))
    dw, db = rng.normal(size=(n, o)), rng.normal(size=n)
    v = rng.normal(size=(k, cfg.window, n))
    ref = lg.smm_reference(cfg, v, ew, eb, c, dw, db)
    un = lg.unrolled_operator(cfg, c)
    assert un.weight.shape == (cfg.window * o, o)
    z = v @ ew.T + eb
    got = (z.reshape(k, -1) @ un.weight) @ dw.T + db
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- torch SMM

def test_smm_init_and_shapes():
    torch.manual_seed(0)
    m = SMM(SMMConfig(), 256)
    assert m.encoder.weight.shape == (64, 256) and m.decoder.weight.shape == (256, 64) and m.C.shape == (64, 64)
    assert abs(m.encoder.weight.std().item() - 0.02) < 0.002 and abs(m.C.std().item() - 0.02) < 0.003
    assert m(torch.randn(3, 5, 256)).shape == (3, 256)
    assert m(torch.zeros(0, 5, 256)).shape == (0, 256)
    with pytest.raises(ValueError):
        m(torch.randn(3, 4, 256))
    with pytest.raises(LpgbError, match="smm.input_form must be one of summed, per_channel"):  # at construction
        with_overrides(SMMConfig(), input_form="bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("disc", DISCS)
def test_recurrent_equals_unrolled_float64(form, disc):
    cfg = SMMConfig(components=16, input_form=form, discretisation=disc)
    m = SMM(cfg, 40).double()
    _random_weights(m)
    v = torch.randn(9, cfg.window, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    un, rec = m(v), m.forward_recurrent(v)
    assert un.abs().max() > 1.0
    torch.testing.assert_close(un, rec, rtol=0, atol=1e-9)
    sd = {k: t.numpy() for k, t in m.state_dict().items()}
    ref = lg.smm_reference(cfg, v.numpy(), sd["encoder.weight"], sd["encoder.bias"], sd["C"],
                           sd["decoder.weight"], sd["decoder.bias"])
    np.testing.assert_allclose(un.detach().numpy(), ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(m.folded_weight().detach().numpy(), lg.unrolled_operator(cfg, sd["C"]).weight, atol=1e-12)
    torch.testing.assert_close(m.folded()(v), un, rtol=0, atol=1e-9)


@pytest.mark.parametrize("form", FORMS)
def test_low_precision_matches_float64(form):
    """O=64, L=5 (paper); constants folded in float64 and rounded once; weights at trained-like scale."""
    cfg = SMMConfig(input_form=form)
    n = 512
    ref_m = SMM(cfg, n).double()
    with torch.no_grad():
        ref_m.encoder.weight.normal_(0, n**-0.5)
        ref_m.decoder.weight.normal_(0, 64**-0.5)
        ref_m.C.normal_(0, 64**-0.5)
    v = torch.randn(32, 5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = ref_m.forward_recurrent(v).detach()
    tol = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
    for dt, t in tol.items():
        m = SMM(cfg, n)
        m.load_state_dict({k: x.to(dt) for k, x in ref_m.state_dict().items()})
        m.to(dt)
        assert m.ad.dtype == torch.float64  # constants stay float64 across .to()
        out = m(v.to(dt)).detach().double()
        assert torch.isfinite(out).all()
        rel = ((out - ref).abs().max() / ref.abs().max()).item()
        assert rel < t, (dt, rel)
    # the pitfall: raw (unnormalised) shifted Legendre values make float16 non-finite
    raw = lg.motion_components(cfg, normalised=False)[1][:, -1]
    m = SMM(cfg, n).half()
    m._np["g_pred"] = raw
    m.g_pred = torch.from_numpy(raw)
    assert not torch.isfinite(m(v.half())).all()


# ---------------------------------------------------------------- fusion + temporal

def test_fusion_and_temporal_shapes_and_error():
    cfg = preset("tiny")
    s, L = cfg.spatial, cfg.smm.window
    torch.manual_seed(0)
    fus = BranchFusion(cfg)
    f1, f2 = torch.randn(3, s.num_queries, s.embed_dim), torch.randn(3, s.num_queries, s.embed_dim)
    assert fus(f1, f2).shape == (3, s.feature_dim)
    tm = TemporalModel(cfg)
    for k in (0, 4):
        a = torch.randn(k, L + 1, s.num_queries, s.embed_dim)
        b = torch.randn(k, L + 1, s.num_queries, s.embed_dim)
        pred, err, _ = tm(a, b)
        assert pred.shape == (k, s.feature_dim) and err.shape == (k,)
    v = tm.fuse(a, b)
    torch.testing.assert_close(pred, tm.smm(v[:, :L]))
    torch.testing.assert_close(err, ((pred - v[:, L]) ** 2).mean(-1))
    torch.testing.assert_close(tm.for_export()(a, b)[1], err, rtol=1e-5, atol=1e-6)
    err.mean().backward()
    assert tm.fusion.q.weight.grad is not None and tm.smm.C.grad is not None
    with torch.no_grad():
        p16, e16, _ = tm.half()(a.half(), b.half())
    assert torch.isfinite(p16).all() and torch.isfinite(e16).all()
    with pytest.raises(ValueError):
        tm(a[:, :L].half(), b[:, :L].half())


# ---------------------------------------------------------------- toy AUC sanity

def _trajectories(gen, n, mix, L, kind):
    d = mix.shape[1]
    t = torch.linspace(0, 1, L + 1)
    a, b, c = (torch.randn(n, d, 1, generator=gen) for _ in range(3))
    w = 0.5 + 1.5 * torch.rand(n, d, 1, generator=gen)
    ph = 6.28 * torch.rand(n, d, 1, generator=gen)
    x = a + b * t + 0.5 * c * t**2 + 0.5 * torch.sin(w * t * 3.14 + ph)  # smooth: quadratic + slow sine
    if kind == "jump":
        x[..., L] = x[..., L] + torch.randn(n, d, generator=gen)
    elif kind == "reverse":
        x[..., L] = 2 * x[..., L - 1] - x[..., L]
    v = torch.einsum("nd,bdt->btn", mix, x)
    return v + 0.01 * torch.randn(v.shape, generator=gen)


def _auc(neg: np.ndarray, pos: np.ndarray) -> float:
    ranks = np.concatenate([neg, pos]).argsort().argsort() + 1
    return float((ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos)))


@pytest.mark.parametrize("form", FORMS)
def test_predicts_smooth_dynamics_better(form):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; shared CPU
    try:
        _toy_experiment(form)
    finally:
        torch.set_num_threads(threads)


def _toy_experiment(form):
    torch.manual_seed(0)
    n, L = 16, 5
    gen = torch.Generator().manual_seed(1)
    mix = torch.randn(n, 2, generator=gen) / 2**0.5
    m = SMM(SMMConfig(components=8, input_form=form), n)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(200):
        v = _trajectories(gen, 128, mix, L, "normal")
        loss = (m(v[:, :L]) - v[:, L]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    err = {}
    with torch.no_grad():
        for kind in ("normal", "jump", "reverse"):
            v = _trajectories(gen, 500, mix, L, kind)
            err[kind] = (m(v[:, :L]) - v[:, L]).pow(2).mean(-1).numpy()
    for kind in ("jump", "reverse"):
        assert err[kind].mean() > 1.2 * err["normal"].mean(), (form, kind, {k: e.mean() for k, e in err.items()})
        assert _auc(err["normal"], err[kind]) > (0.9 if form == "per_channel" else 0.55)
