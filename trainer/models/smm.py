"""State Machine Module (paper 3.3, Eqs. 2-6) with HiPPO-LegT constants from `lpgb.runtime.legendre`.

v (K, L, N) past features of K tubes, oldest first -> v_hat (K, N), the predicted next feature.

* `forward` (default, traced by export): encoder -> one folded (L*O, O) matmul -> decoder.
* `forward_recurrent`: the same maths as an explicit loop over the L frames (reference).
* `folded()`: an `FoldedSMM` with the folded matrix frozen as a buffer (plain Linear/matmul graph).

The fixed constants (Ad, Bd, kernels, shifted components) are kept in float64 whatever dtype the module
is cast to; the folded matrix is computed in float64 from them and C, then rounded once to the input
dtype, so float32/float16 runs see exactly-rounded constants. See docs/smm.md for the derivation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lpgb.runtime import legendre
from lpgb.runtime.config import SMMConfig

_CONSTANTS = ("ad", "bd", "kernels", "g_pred")


def _const_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class SMM(nn.Module):
    """SMM(cfg, feature_dim): Linear(N -> O) encoder, LegT state over L frames, learnable C, decoder."""

    def __init__(self, cfg: SMMConfig, feature_dim: int):
        super().__init__()
        if cfg.input_form not in ("summed", "per_channel"):
            raise ValueError(f"unknown input_form {cfg.input_form!r}; choose summed or per_channel")
        if cfg.window < 1 or cfg.components < 1:
            raise ValueError("SMM needs window >= 1 and components >= 1")
        self.cfg = cfg
        self.feature_dim = int(feature_dim)
        o = cfg.components
        self.encoder = nn.Linear(self.feature_dim, o)  # Object Feature Encoder
        self.decoder = nn.Linear(o, self.feature_dim)  # Object Feature Decoder
        self.C = nn.Parameter(torch.empty(o, o))
        ad, bd = legendre.state_matrices(cfg)
        self._np = {
            "ad": ad,
            "bd": bd,
            "kernels": legendre.state_kernels(cfg),
            "g_pred": legendre.motion_components(cfg)[1][:, -1].copy(),
        }
        for name in _CONSTANTS:
            self.register_buffer(name, torch.from_numpy(self._np[name]), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for lin in (self.encoder, self.decoder):
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.C, 0.0, std)

    def _apply(self, fn, recurse=True):  # keep the LegT constants in float64 across .float()/.half()/.to()
        super()._apply(fn, recurse)
        for name in _CONSTANTS:
            buf = self._buffers[name]
            want = _const_dtype(buf.device)
            if buf.dtype != want:
                self._buffers[name] = torch.as_tensor(self._np[name], dtype=want, device=buf.device)
        return self

    # -- the folded constant ---------------------------------------------------------------------
    def folded_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(L*O, O) matrix W with u_hat = z.flatten(1) @ W (see legendre.unrolled_operator)."""
        cdt = self.kernels.dtype
        ck = self.kernels @ self.C.to(cdt).t()  # (L, O): row j = C K[j]
        o = self.cfg.components
        if self.cfg.input_form == "summed":
            m = ck * self.g_pred  # (L, O)
            w = m[:, None, :].expand(-1, o, -1).reshape(-1, o)  # row j*O + m' = m[j]
        else:
            taps = ck @ self.g_pred  # (L,)
            eye = torch.eye(o, dtype=cdt, device=ck.device)
            w = (taps[:, None, None] * eye).reshape(-1, o)  # kron(taps, I_O) (aten::kron does not export)
        return w.to(dtype if dtype is not None else self.C.dtype)

    def _check(self, v: torch.Tensor) -> None:
        if v.dim() != 3 or v.shape[1] != self.cfg.window or v.shape[2] != self.feature_dim:
            raise ValueError(
                f"SMM expects (K, {self.cfg.window}, {self.feature_dim}) features, got {tuple(v.shape)}"
            )

    # -- unrolled (default) ------------------------------------------------------------------------
    def forward(self, v: torch.Tensor) -> torch.Tensor:
        self._check(v)
        z = self.encoder(v)  # (K, L, O)
        u_hat = z.flatten(1) @ self.folded_weight(z.dtype)  # (K, O)
        return self.decoder(u_hat)

    # -- explicit recurrence (reference) -----------------------------------------------------------
    def forward_recurrent(self, v: torch.Tensor) -> torch.Tensor:
        """Eqs. 3-6 step by step: c(j) = Ad c(j-1) + Bd * input(j), x = C c(L), u_hat via Eq. 6."""
        self._check(v)
        dt = v.dtype
        ad, bd, g = self.ad.to(dt), self.bd.to(dt), self.g_pred.to(dt)
        k, o = v.shape[0], self.cfg.components
        summed = self.cfg.input_form == "summed"
        state = v.new_zeros((k, o) if summed else (k, o, o))
        for j in range(self.cfg.window):
            z = self.encoder(v[:, j])  # (K, O): u(tau) of Eq. 2 (channels)
            if summed:  # Eq. 3 literally: one number per frame
                state = state @ ad.t() + z.sum(-1, keepdim=True) * bd
            else:  # every encoder channel has its own LegT state of O components
                state = state @ ad.t() + z[..., None] * bd
        x = state @ self.C.t()  # Eq. 4 (per channel: C mixes the components of every channel)
        if summed:
            u_hat = x * g  # Eq. 6 at the predicted frame: O weighted shifted components
        else:
            u_hat = x @ g  # Eq. 6 summed over components: each channel's extrapolated value
        return self.decoder(u_hat)

    def folded(self) -> "FoldedSMM":
        """A frozen copy for export: encoder, one constant (L*O, O) matrix, decoder."""
        return FoldedSMM(self)


class FoldedSMM(nn.Module):
    """Inference-only SMM with the recurrence and C folded into one buffer (what ONNX should contain)."""

    def __init__(self, smm: SMM):
        super().__init__()
        self.window = smm.cfg.window
        self.feature_dim = smm.feature_dim
        self.encoder = copy.deepcopy(smm.encoder).requires_grad_(False)
        self.decoder = copy.deepcopy(smm.decoder).requires_grad_(False)
        with torch.no_grad():
            self.register_buffer("weight", smm.folded_weight(smm.C.dtype).detach().clone())

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        z = self.encoder(v)
        return self.decoder(z.flatten(1) @ self.weight)


__all__ = ["SMM", "FoldedSMM"]
