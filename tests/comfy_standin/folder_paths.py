"""Stand-in for ComfyUI's folder_paths. Its presence in sys.modules (with comfy.utils) is how
`nodes.context.in_comfyui()` knows ComfyUI is the host; the bridge tests need nothing else of it."""
