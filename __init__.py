"""comfyui-sld: Safe Latent Diffusion as ComfyUI nodes.

ComfyUI imports this folder under a path-derived module name, so only relative imports are used here.
Only the SLD nodes are exported; the headless re-implementations of ComfyUI's core nodes never are.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
