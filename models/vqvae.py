"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning"), one file.

    x (B, C, H, W) in [-1, 1]
      -> Encoder: stride-2 convs + residual stack -> z_e (B, D, H/f, W/f), f = 2**downsample
      -> VectorQuantizer: nearest of K codes -> z_q, straight-through gradient to z_e
      -> Decoder: residual stack + stride-2 transposed convs -> x_hat (B, C, H, W)
    loss = MSE(x_hat, x) + commitment * MSE(z_e, sg(z_q))

The codebook is not trained by gradients but by exponential moving averages of the
encoder outputs assigned to each code (the paper's appendix A.1): per code, the
EMA of its assignment count N_k and of the sum of its assigned vectors m_k; the code
is m_k / N_k with N_k Laplace-smoothed so that no code divides by zero. A code no
batch has used for ``restart_after`` training batches is "dead": it is re-initialised
from a random encoder output of the current batch (the usual fix for codebook
collapse). Perplexity exp(H(p)) of the code histogram p measures codebook usage:
K when all codes are used equally, 1 when one code takes everything.

The code indices (B, H/f, W/f) are the tokens of the first stage of the two-stage
recipe (VQ-VAE-2, VQGAN): :func:`models.vq_tokens.export_vq_tokens` writes them as
a records/ dataset that :class:`models.lm.DecoderLM` can train on.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from models.vqvae_config import VQVAEConfig

__all__ = ["VQVAE", "VQVAEConfig", "VectorQuantizer", "perplexity", "psnr"]


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of a code histogram ``counts`` (K,): K = uniform use, 1 = one code."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())


def psnr(mse: torch.Tensor | float, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of a mean squared error (default range: [-1, 1])."""
    mse = torch.as_tensor(mse, dtype=torch.float32)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


class VectorQuantizer(nn.Module):
    """Nearest-code quantization with an EMA-updated codebook and dead-code restarts.

    The codebook and its statistics are buffers (no optimizer touches them); they are
    updated in ``forward`` when the module is in training mode. Under
    ``torch.distributed`` the batch statistics are summed over ranks and restarted codes
    come from rank 0's batch, so every rank keeps the same codebook.

    Args:
        codebook_size: K codes.
        dim: D, width of a code.
        decay: EMA decay of the statistics.
        eps: Laplace smoothing of the cluster sizes.
        restart_after: training batches without an assignment after which a code is
            re-initialised from a random input vector of the batch; 0 = never (and then
            the codebook keeps its N(0, 1) init instead of starting from the first batch).
    """

    def __init__(self, codebook_size: int, dim: int, *, decay: float = 0.99, eps: float = 1e-5,
                 restart_after: int = 100) -> None:
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.eps, self.restart_after = decay, eps, restart_after
        embed = torch.randn(codebook_size, dim)
        self.register_buffer("embed", embed)  # (K, D) the codebook
        # Every code starts as if assigned once to itself, so that embed_avg / cluster_size
        # is the code (a zero count would blow up unused codes on the first update).
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # (K,) EMA of N_k
        self.register_buffer("embed_avg", embed.clone())  # (K, D) EMA of m_k
        # Training batches since each code was last chosen. Codes start out dead, so the first
        # training batch re-initialises every code it did not choose from its own encoder
        # outputs: a data-dependent init (random codes far from z_e would all go unused).
        self.register_buffer("unused", torch.full((codebook_size,), restart_after))  # (K,)
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # incl. that init

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared L2) of each row of ``flat`` (N, D) -> (N,)."""
        embed = self.embed
        dist2 = (flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ embed.t()
                 + embed.pow(2).sum(1)[None, :])  # (N, K)
        return dist2.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor]:
        """Quantizes ``z`` (B, D, h, w).

        Returns:
            ``(z_q, commitment_loss, indices, counts)``: ``z_q`` (B, D, h, w) equals the
            nearest codes in value and passes gradients to ``z`` unchanged (straight-through
            estimator); ``commitment_loss`` = mean (z - sg(z_q))^2; ``indices`` (B, h, w);
            ``counts`` (K,) how often each code was chosen in this batch (this rank).

        Raises:
            ValueError: ``z`` does not have D channels.
        """
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape (B, {self.dim}, h, w), got {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):  # distances and EMA in fp32
            z = z.float()
            B, D, h, w = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # (N, D), N = B*h*w
            idx = self.nearest(flat.detach())  # (N,)
            z_q = F.embedding(idx, self.embed).view(B, h, w, D).permute(0, 3, 1, 2)  # (B, D, h, w)
            # (K,) uses per code; scatter_add_ keeps a static shape (bincount breaks compile)
            counts = torch.zeros(self.codebook_size, dtype=torch.long, device=idx.device)
            counts.scatter_add_(0, idx, torch.ones_like(idx))
            if self.training:
                self._ema_update(flat.detach(), idx, counts)
            commitment = F.mse_loss(z, z_q.detach())
            z_q = z + (z_q - z).detach()  # straight-through: d z_q / d z = identity
        return z_q, commitment, idx.view(B, h, w), counts

    @torch.compiler.disable  # in-place buffer updates and a collective: keep out of graphs
    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """One EMA step of the codebook from a batch ``flat`` (N, D) assigned to ``idx`` (N,)."""
        n = counts.float()  # (K,) assignments per code in this batch
        sums = torch.zeros_like(self.embed).index_add_(0, idx, flat)  # (K, D) sum of assigned
        ddp = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if ddp:
            dist.all_reduce(n)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(n, alpha=1.0 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        self.unused.copy_(torch.where(n > 0, torch.zeros_like(self.unused), self.unused + 1))
        if self.restart_after:
            # Static shapes (no nonzero()): draw a candidate for every code, keep the dead ones.
            dead = self.unused >= self.restart_after  # (K,)
            pick = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
            fresh = flat[pick]  # (K, D)
            if ddp:
                dist.broadcast(fresh, src=0)  # rank 0's picks: every rank's codebook stays equal
            self.embed.copy_(torch.where(dead[:, None], fresh, self.embed))
            self.embed_avg.copy_(torch.where(dead[:, None], fresh, self.embed_avg))
            self.cluster_size.copy_(torch.where(dead, torch.ones_like(n), self.cluster_size))
            self.unused.masked_fill_(dead, 0)
            self.restarts.add_(dead.sum())


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), as in the paper."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, D, H/f, W/f)."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        c, layers = cfg.in_channels, []
        for _ in range(cfg.downsample):
            layers += [nn.Conv2d(c, cfg.hidden_channels, 4, stride=2, padding=1), nn.ReLU()]
            c = cfg.hidden_channels
        layers.append(nn.Conv2d(c, cfg.hidden_channels, 3, padding=1))
        layers += [ResBlock(cfg.hidden_channels, cfg.res_channels) for _ in range(cfg.res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(cfg.hidden_channels, cfg.embedding_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, D, h, w) -> (B, C, h*f, w*f), unbounded (the target lies in [-1, 1])."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        hid = cfg.hidden_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.embedding_dim, hid, 3, padding=1)]
        layers += [ResBlock(hid, cfg.res_channels) for _ in range(cfg.res_blocks)]
        layers.append(nn.ReLU())
        for i in range(cfg.downsample):
            last = i == cfg.downsample - 1
            layers.append(nn.ConvTranspose2d(hid, cfg.in_channels if last else hid, 4, stride=2,
                                             padding=1))
            if not last:
                layers.append(nn.ReLU())
        if cfg.downsample == 0:
            layers.append(nn.Conv2d(hid, cfg.in_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VQVAE(nn.Module):
    """Encoder, EMA vector quantizer, decoder; images normalized to [-1, 1]."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = VectorQuantizer(config.codebook_size, config.embedding_dim,
                                         decay=config.decay, eps=config.eps,
                                         restart_after=config.restart_after)
        self.decoder = Decoder(config)

    def num_params(self) -> int:
        """Trainable parameters (the codebook is a buffer, not counted)."""
        return sum(p.numel() for p in self.parameters())

    def _check(self, x: torch.Tensor) -> None:
        f, c = self.config.factor, self.config.in_channels
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"expected images (B, {c}, H, W) with H and W divisible by {f}, "
                             f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstructs ``x`` (B, C, H, W) in [-1, 1]; updates the codebook when training.

        Returns:
            ``(x_hat, loss, stats)``: ``x_hat`` (B, C, H, W); ``loss`` = MSE + beta *
            commitment; ``stats``: detached scalars ``mse``, ``psnr`` (dB), ``perplexity``
            and ``usage`` (share of codes used in the batch).

        Raises:
            ValueError: wrong channels, or a side not divisible by ``2**downsample``.
        """
        self._check(x)
        z_e = self.encoder(x)  # (B, D, h, w)
        z_q, commitment, _, counts = self.quantizer(z_e)  # (B, D, h, w), fp32
        x_hat = self.decoder(z_q)  # (B, C, H, W)
        mse = F.mse_loss(x_hat.float(), x.float())
        loss = mse + self.config.commitment * commitment
        stats = {
            "mse": mse.detach(),
            "psnr": psnr(mse.detach()),
            "perplexity": perplexity(counts),
            "usage": (counts > 0).float().mean(),
        }
        return x_hat, loss, stats

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H/f, W/f) of images ``x`` (B, C, H, W) in [-1, 1] (no EMA update)."""
        self._check(x)
        z_e = self.encoder(x).float()  # (B, D, h, w)
        B, D, h, w = z_e.shape
        return self.quantizer.nearest(z_e.permute(0, 2, 3, 1).reshape(-1, D)).view(B, h, w)

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images (B, C, h*f, w*f) from code indices (B, h, w)."""
        if indices.dim() != 3:
            raise ValueError(f"expected indices (B, h, w), got {tuple(indices.shape)}")
        z_q = F.embedding(indices, self.quantizer.embed).permute(0, 3, 1, 2)  # (B, D, h, w)
        return self.decoder(z_q.to(next(self.decoder.parameters()).dtype))
