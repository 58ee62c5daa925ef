"""ST-Adapter: parameter-efficient image-to-video transfer learning (Pan et al., NeurIPS 2022).

A frozen CLIP image ViT made a video classifier by small spatio-temporal adapters; see README.md.
"""
