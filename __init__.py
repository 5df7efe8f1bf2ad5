"""comfyui-sld: Safe Latent Diffusion as ComfyUI nodes.

ComfyUI imports this folder under a path-derived module name, so only relative imports are used here.
Only the SLD nodes are exported; the headless re-implementations of ComfyUI's core nodes never are.
"""
import sys

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

if not __package__:  # imported as a lone file, not as a package (pytest collecting the repository root)
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
elif "folder_paths" in sys.modules and "comfy.utils" in sys.modules:  # ComfyUI is the host: load the nodes now
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    def __getattr__(name):
        """The node mappings, imported on first use: the `sld` command (`sld --help`) must not pay for
        torch, which every node module imports."""
        if name in __all__:
            try:
                from . import nodes
            except AttributeError as error:  # hasattr() would read it as "no such attribute": say it failed
                raise ImportError(f"the nodes of {__name__} failed to import: {error}") from error
            return getattr(nodes, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
