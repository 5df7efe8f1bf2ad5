"""Headless graph execution of ComfyUI workflow files, and the `sld` command line."""
