"""Conv-Adapter: parameter-efficient transfer learning for ConvNets (Chen et al., CVPRW 2024).

A frozen timm ResNet / BiT / ConvNeXt / Swin adapted by small grouped-convolution adapters in one of four
placements (convolution or residual, parallel or sequential); see README.md.
"""
