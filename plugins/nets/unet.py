"""The DDPM / improved-diffusion U-Net for images [B, C, H, W], conditioned on the step t.

Ho et al. 2020 (appendix B), with the changes of Nichol & Dhariwal 2021 ("improved DDPM"):
residual blocks with group norm and a time-embedding injection (optionally AdaGN, the
"scale-shift norm"), self-attention at chosen resolutions, zero-initialised output layers.

    x -> conv_in ------------------------------------------------------------ skip
      -> level 0: num_res_blocks x (ResBlock [+ Attention]) -> Downsample --- skip after each
      -> ...
      -> level L-1 (no Downsample)
      -> middle: ResBlock -> Attention -> ResBlock
      -> level L-1: (num_res_blocks + 1) x (concat skip -> ResBlock [+ Attention]) -> Upsample
      -> ...
      -> level 0 (no Upsample) -> GroupNorm -> SiLU -> conv_out (zeroed) -> [B, out_channels, H, W]

The layout is the one of diffusers' UNet2DModel (down blocks, a res-attn-res mid block, up
blocks of num_res_blocks + 1 res blocks that each take one skip): with scale_shift off, a
UNet2DModel with the same widths and attention levels has the same parameters and, its weights
copied in, computes the same function (tests/test_backbones.py checks it). Only the
initialisation differs: the last layer of every residual branch is zeroed here.

Built with `num_classes = K`, a learned embedding of the label y in 0..K (K: "no label") is
added to the time embedding before its SiLU (improved-diffusion's `label_emb`; diffusers'
`class_embedding` of UNet2DModel with num_class_embeds = K + 1), and the model is `model(x_t, t, y)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from workbench.plugins.nets.layers import TimeEmbedding, null_labels, zero_init


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> + time -> GroupNorm -> SiLU -> dropout -> conv (zeroed), plus a skip.

    With `scale_shift` the time embedding modulates the second norm, AdaGN:
    norm(h) * (1 + scale) + shift (Nichol & Dhariwal 2021, `use_scale_shift_norm`); without it
    the embedding is added before the norm, as in DDPM.
    """

    def __init__(
        self, in_channels: int, out_channels: int, embed_dim: int, groups: int, dropout: float, scale_shift: bool
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(embed_dim, 2 * out_channels if scale_shift else out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x [B, in, H, W]; emb [B, embed_dim], the time embedding already passed through SiLU."""
        h = self.conv1(F.silu(self.norm1(x)))
        emb = self.emb_proj(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = emb.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        else:
            h = self.norm2(h + emb)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, added to the input (output projection zeroed)."""

    def __init__(self, channels: int, num_heads: int, groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        # [B, C, H, W] -> [B, H*W, C]: a view, without a copy, when x is channels_last.
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).unflatten(-1, (3, self.num_heads, C // self.num_heads)).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, H*W, C/heads]
        h = self.proj(h.transpose(1, 2).flatten(2))  # [B, H*W, C]
        return x + h.transpose(1, 2).unflatten(2, (H, W))


class Downsample(nn.Module):
    """Halve H and W: a 3x3 convolution with stride 2, or a 2x2 average pool."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownLevel(nn.Module):
    """One resolution of the encoder: res blocks (each followed by attention or not), then Downsample."""

    def __init__(self, resnets: list[ResBlock], attentions: list[nn.Module], downsample: Downsample | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)
        self.downsample = downsample

    def forward(self, h: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Runs the level and appends each block's output to `skips` for the decoder."""
        for resnet, attention in zip(self.resnets, self.attentions):
            h = attention(resnet(h, emb))
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h)
            skips.append(h)
        return h


class UpLevel(nn.Module):
    """One resolution of the decoder: res blocks on [h, skip] concatenated (each + attention or not), then Upsample."""

    def __init__(self, resnets: list[ResBlock], attentions: list[nn.Module], upsample: Upsample | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)
        self.upsample = upsample

    def forward(self, h: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Runs the level, taking its skips from the end of `skips` (last in, first out)."""
        for resnet, attention in zip(self.resnets, self.attentions):
            h = attention(resnet(torch.cat([h, skips.pop()], dim=1), emb))
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class MidBlock(nn.Module):
    """ResBlock -> Attention -> ResBlock at the lowest resolution."""

    def __init__(self, channels: int, embed_dim: int, attention: nn.Module, **block: object) -> None:
        super().__init__()
        self.resnet_1 = ResBlock(channels, channels, embed_dim, **block)
        self.attention = attention
        self.resnet_2 = ResBlock(channels, channels, embed_dim, **block)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.resnet_2(self.attention(self.resnet_1(h, emb)), emb)


class UNet(nn.Module):
    """model(x_t [B, C, H, W], t [B]) -> [B, out_channels, H, W].

    Level i works at H / 2^i with channels * channel_mult[i] channels; `attention_levels` are
    the indices of the levels whose res blocks are each followed by self-attention. Each attention
    has `num_heads` heads, or width // head_channels heads when head_channels is given. H and W
    must be divisible by 2^(len(channel_mult) - 1); the Backbone component checks the options.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (),
        mid_attention: bool = True,
        num_heads: int = 4,
        head_channels: int | None = None,
        dropout: float = 0.0,
        scale_shift: bool = True,
        groups: int = 32,
        conv_downsample: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        embed_dim = 4 * channels
        self.num_classes = num_classes
        widths = [channels * m for m in channel_mult]
        block = dict(groups=groups, dropout=dropout, scale_shift=scale_shift)

        def attention(width: int, wanted: bool) -> nn.Module:
            if not wanted:
                return nn.Identity()
            heads = width // head_channels if head_channels else num_heads
            return Attention(width, heads, groups)

        self.time_embed = TimeEmbedding(channels, embed_dim)
        self.label_embed = nn.Embedding(num_classes + 1, embed_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)

        # Encoder: remember the width of every skip it leaves for the decoder.
        self.down = nn.ModuleList()
        skip_widths = [widths[0]]
        width = widths[0]
        for level, level_width in enumerate(widths):
            resnets, attentions = [], []
            for _ in range(num_res_blocks):
                resnets.append(ResBlock(width, level_width, embed_dim, **block))
                attentions.append(attention(level_width, level in attention_levels))
                width = level_width
                skip_widths.append(width)
            last = level == len(widths) - 1
            self.down.append(DownLevel(resnets, attentions, None if last else Downsample(width, conv_downsample)))
            if not last:
                skip_widths.append(width)

        self.mid = MidBlock(width, embed_dim, attention(width, mid_attention), **block)

        # Decoder: the mirror image, one more res block per level, each eating one skip.
        self.up = nn.ModuleList()
        for level, level_width in reversed(list(enumerate(widths))):
            resnets, attentions = [], []
            for _ in range(num_res_blocks + 1):
                resnets.append(ResBlock(width + skip_widths.pop(), level_width, embed_dim, **block))
                attentions.append(attention(level_width, level in attention_levels))
                width = level_width
            self.up.append(UpLevel(resnets, attentions, Upsample(width) if level > 0 else None))

        self.norm_out = nn.GroupNorm(groups, width)
        self.conv_out = zero_init(nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(t, x.shape[0])
        if self.label_embed is not None:
            emb = emb + self.label_embed(null_labels(y, self.num_classes, x) if y is None else y)
        emb = F.silu(emb)  # every res block's projection starts with SiLU
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            h = level(h, emb, skips)
        h = self.mid(h, emb)
        for level in self.up:
            h = level(h, emb, skips)
        return self.conv_out(F.silu(self.norm_out(h)))
