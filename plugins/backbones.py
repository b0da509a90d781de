"""Built-in backbones: `mlp` for vectors, `unet` for images.

Each component only checks its options against the data and builds the network;
the networks live in `workbench.plugins.nets` and are imported inside `build()`,
so that `wb list` never imports torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt, model_validator

from workbench import Backbone, ConfigError, hookimpl

if TYPE_CHECKING:
    import torch


class MLPBackbone(Backbone):
    """Residual MLP with a sinusoidal time embedding, for vector data such as the 2-D toy sets."""

    name = "mlp"

    width: int = Field(128, ge=1, description="width of the hidden layers and of the time embedding")
    depth: int = Field(3, ge=1, description="number of residual blocks")
    time_embed_dim: int = Field(128, ge=1, description="size of the sinusoidal embedding of t")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability inside each residual block")
    layer_norm: bool = Field(True, description="LayerNorm at the start of each residual block (false: no norm)")
    fourier_features: int = Field(
        0,
        ge=0,
        le=16,
        description="L > 0 also feeds sin and cos of pi 2^j x, j < L, of each coordinate to the first layer "
        "(for data in [-1, 1]: lets the MLP fit thin shapes); 0: x only",
    )

    def build(self, data_shape: tuple[int, ...], out_channels: int, num_classes: int | None = None) -> torch.nn.Module:
        if len(data_shape) != 1:
            raise ConfigError(
                f"backbone 'mlp' is for vector data (one example of shape (D,)), "
                f"but this dataset's examples have shape {tuple(data_shape)}",
                hint="for images [C, H, W] use backbone = { name = \"unet\" }",
            )
        from workbench.plugins.nets.mlp import MLP

        return MLP(
            data_shape[0],
            out_channels,
            width=self.width,
            depth=self.depth,
            time_embed_dim=self.time_embed_dim,
            dropout=self.dropout,
            layer_norm=self.layer_norm,
            fourier_features=self.fourier_features,
            num_classes=num_classes,
        )


class UNetBackbone(Backbone):
    """The DDPM / improved-diffusion U-Net: residual blocks, group norm, self-attention at chosen sizes."""

    name = "unet"

    channels: int = Field(64, ge=1, description="channels of the first level (the time embedding has 4x)")
    channel_mult: list[PositiveInt] = Field(
        default_factory=lambda: [1, 2, 2],
        min_length=1,
        description="channels of each level as a multiple of `channels`; the image is halved between levels",
    )
    num_res_blocks: int = Field(
        2, ge=1, description="residual blocks per level in the encoder (the decoder has one more)"
    )
    attention_resolutions: list[PositiveInt] = Field(
        default_factory=list,
        description="feature-map sizes (heights) whose levels get self-attention after each residual block, e.g. [16]",
    )
    mid_attention: bool = Field(True, description="self-attention in the middle block, at the lowest resolution")
    num_heads: int = Field(4, ge=1, description="attention heads (unless head_channels is set)")
    head_channels: int | None = Field(
        None, ge=1, description="channels per attention head; when set, each attention has width // head_channels heads"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability inside each residual block")
    scale_shift: bool = Field(
        True, description="AdaGN: t scales and shifts the group norm (improved DDPM); false adds t (DDPM)"
    )
    groups: int = Field(32, ge=1, description="groups of every GroupNorm; must divide every level's channels")
    downsample: Literal["conv", "avgpool"] = Field(
        "conv", description="how levels are halved: a strided 3x3 conv or a 2x2 average pool"
    )

    @model_validator(mode="after")
    def _groups_divide_widths(self) -> UNetBackbone:
        for mult in self.channel_mult:
            width = self.channels * mult
            if width % self.groups:
                widths = sorted(set(self.widths()))
                common = math.gcd(*widths)
                fits = max(d for d in range(1, self.groups + 1) if common % d == 0)
                raise ValueError(
                    f"groups = {self.groups} does not divide the width {width} (channels {self.channels} x "
                    f"channel_mult {mult}); GroupNorm splits every width into `groups` equal groups: "
                    f"set groups = {fits} (divides every width: {', '.join(map(str, widths))}) "
                    f"or make channels a multiple of {self.groups}"
                )
        return self

    def widths(self) -> list[int]:
        """Channels of each level."""
        return [self.channels * m for m in self.channel_mult]

    def attention_levels(self, data_shape: tuple[int, ...]) -> list[int]:
        """Indices of the levels that get attention for data of `data_shape`; ConfigError when it cannot work."""
        if len(data_shape) != 3:
            raise ConfigError(
                f"backbone 'unet' is for images (one example of shape (C, H, W)), "
                f"but this dataset's examples have shape {tuple(data_shape)}",
                hint="for vector data use backbone = { name = \"mlp\" }",
            )
        _, height, width = data_shape
        halvings = len(self.channel_mult) - 1
        factor = 2**halvings
        if height % factor or width % factor:
            # The most levels these sides allow: one more than the times both can be halved exactly.
            possible = min((side & -side).bit_length() for side in (height, width))
            raise ConfigError(
                f"backbone 'unet': images of {height}x{width} cannot be halved {halvings} times: "
                f"channel_mult {self.channel_mult} has {len(self.channel_mult)} levels, so height and width "
                f"must be divisible by {factor}",
                hint=f"use a channel_mult with at most {possible} levels for {height}x{width} images, "
                f"or images whose sides are multiples of {factor}",
            )
        sizes = [height // 2**level for level in range(len(self.channel_mult))]
        unknown = [r for r in self.attention_resolutions if r not in sizes]
        if unknown:
            raise ConfigError(
                f"backbone 'unet': attention_resolutions {self.attention_resolutions}: no level has feature maps "
                f"of height {', '.join(map(str, unknown))}; for {height}x{width} images and channel_mult "
                f"{self.channel_mult} the levels have heights {', '.join(map(str, sizes))}",
                hint=f"pick sizes from {sizes}, or [] for attention only in the middle block",
            )
        levels = [level for level, size in enumerate(sizes) if size in self.attention_resolutions]
        attended = [(self.widths()[level], f"the {sizes[level]}x{width // 2**level} level") for level in levels]
        if self.mid_attention:
            attended.append((self.widths()[-1], "the middle block"))
        for channels, where in attended:
            if self.head_channels is not None and channels % self.head_channels:
                raise ConfigError(
                    f"backbone 'unet': head_channels = {self.head_channels} does not divide the width {channels} "
                    f"of the attention in {where}",
                    hint="choose head_channels dividing the width of every level with attention",
                )
            if self.head_channels is None and channels % self.num_heads:
                raise ConfigError(
                    f"backbone 'unet': num_heads = {self.num_heads} does not divide the width {channels} "
                    f"of the attention in {where}",
                    hint="choose num_heads dividing the width of every level with attention, or set head_channels",
                )
        return levels

    def diffusers_config(
        self, data_shape: tuple[int, ...], out_channels: int, num_classes: int | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for diffusers' UNet2DModel that build this same network.

        Both have the same layers under other names (the layout of
        plugins/nets/unet.py), so the same parameter count and, with the weights
        copied across, the same function (tests/test_backbones.py checks both).
        It is how the benchmarks put the two side by side. Raises ConfigError for
        options UNet2DModel cannot express: average-pool downsampling, or a head
        count that gives attentions of different widths different head sizes
        (diffusers takes one size per head).
        """
        levels = self.attention_levels(data_shape)
        widths = self.widths()
        attended = [widths[level] for level in levels] + ([widths[-1]] if self.mid_attention else [])
        head_sizes = {self.head_channels or width // self.num_heads for width in attended} or {8}
        if self.downsample != "conv" or len(head_sizes) > 1:
            raise ConfigError(
                "backbone 'unet': diffusers' UNet2DModel has no twin of this network "
                f"(downsample = {self.downsample!r}, attention head sizes {sorted(head_sizes)})",
                hint="use downsample = \"conv\", and head_channels instead of num_heads",
            )
        return dict(
            sample_size=data_shape[1],
            in_channels=data_shape[0],
            out_channels=out_channels,
            block_out_channels=tuple(widths),
            down_block_types=tuple("AttnDownBlock2D" if i in levels else "DownBlock2D" for i in range(len(widths))),
            up_block_types=tuple("AttnUpBlock2D" if i in levels else "UpBlock2D" for i in reversed(range(len(widths)))),
            layers_per_block=self.num_res_blocks,
            attention_head_dim=head_sizes.pop(),
            norm_num_groups=self.groups,
            attn_norm_num_groups=self.groups,  # without it, "scale_shift" drops the middle attention's norm
            resnet_time_scale_shift="scale_shift" if self.scale_shift else "default",
            add_attention=self.mid_attention,
            dropout=self.dropout,
            # K classes and the "no label" index K: diffusers' class_embedding, added to the time embedding.
            num_class_embeds=num_classes + 1 if num_classes else None,
        )

    def build(self, data_shape: tuple[int, ...], out_channels: int, num_classes: int | None = None) -> torch.nn.Module:
        levels = self.attention_levels(data_shape)
        from workbench.plugins.nets.unet import UNet

        return UNet(
            data_shape[0],
            out_channels,
            channels=self.channels,
            channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks,
            attention_levels=levels,
            mid_attention=self.mid_attention,
            num_heads=self.num_heads,
            head_channels=self.head_channels,
            dropout=self.dropout,
            scale_shift=self.scale_shift,
            groups=self.groups,
            conv_downsample=self.downsample == "conv",
            num_classes=num_classes,
        )


@hookimpl
def register_backbones(register):
    for cls in (MLPBackbone, UNetBackbone):
        register(cls)
