"""comfyui-sld: Safe Latent Diffusion as ComfyUI nodes.

ComfyUI imports this folder under a path-derived module name, so only relative imports are used here.
Only the SLD nodes are exported; the headless re-implementations of ComfyUI's core nodes never are.
"""
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # imported as a lone file, not as a package (pytest collecting the repository root)
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
