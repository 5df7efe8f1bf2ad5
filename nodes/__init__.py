"""Thin node classes (ComfyUI V1 contract) over sld_core. The SLD nodes land with the nodes issue."""

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
