"""What `sld serve` tells clients about itself: /object_info, /system_stats, /models, /features.

Shapes are ComfyUI's (server.py `node_info`, `system_stats`), plus an `sld` entry that carries the
safety policy in force, so a client can see what the server will refuse.
"""
import os
import sys

from ...nodes import NODE_CLASS_MAPPINGS

SENSITIVE_OPTIONS = ("--auth-token",)
# ComfyUI's python_module of the core nodes we re-implement that do not live in its nodes.py; the web
# app badges a node as a custom node pack's unless the module is ComfyUI's own.
CORE_MODULES = {"ModelSamplingDiscrete": "comfy_extras.nodes_model_advanced",
                "CLIPTextEncodeSDXL": "comfy_extras.nodes_clip_sdxl", "CLIPTextEncodeSDXLRefiner": "comfy_extras.nodes_clip_sdxl"}


def node_info(name, cls, display_names):
    """One node class as ComfyUI's GET /object_info describes it (needs the runtime active)."""
    spec = cls.INPUT_TYPES()
    outputs = list(cls.RETURN_TYPES)
    info = {
        "input": spec,
        "input_order": {section: list(values) for section, values in spec.items()},
        "output": outputs,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
        "name": name,
        "display_name": display_names.get(name, name),
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": "custom_nodes.comfyui-sld" if name in NODE_CLASS_MAPPINGS else CORE_MODULES.get(name, "nodes"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    return info


def redacted_argv(argv):
    """sys.argv as /system_stats shows it, with the auth token's value hidden."""
    out, hide = [], False
    for arg in argv:
        if hide:
            out.append("***")
            hide = False
        elif arg in SENSITIVE_OPTIONS:
            out.append(arg)
            hide = True
        elif any(arg.startswith(option + "=") for option in SENSITIVE_OPTIONS):
            out.append(arg.split("=", 1)[0] + "=***")
        else:
            out.append(arg)
    return out


def system_stats(device, version, policy):
    import torch

    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        free = os.sysconf("SC_AVPHYS_PAGES") * size
        total = pages * size
    except (ValueError, OSError, AttributeError):
        total = free = 0
    entry = {"name": str(device), "type": device.type, "index": device.index,
             "vram_total": 0, "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0}
    if device.type == "cuda":
        free_vram, total_vram = torch.cuda.mem_get_info(device)
        entry.update(name=torch.cuda.get_device_name(device), vram_total=total_vram, vram_free=free_vram,
                     torch_vram_total=torch.cuda.memory_reserved(device),
                     torch_vram_free=torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return {
        "system": {"os": os.name, "ram_total": total, "ram_free": free, "comfyui_version": f"sld-serve {version}",
                   "python_version": sys.version, "pytorch_version": torch.__version__,
                   # ComfyUI's flag for "no API nodes, no calls to comfy.org": true of sld serve, and the
                   # web app (--frontend) reads it only from here, so it does not ask comfy.org for releases
                   "embedded_python": False, "argv": redacted_argv(sys.argv) + ["--disable-api-nodes"]},
        "devices": [entry],
        "sld": {"version": version, "policy": policy.describe()},
    }


def features(max_upload, policy):
    return {"supports_preview_metadata": False, "max_upload_size": max_upload, "sld_policy": policy.describe()}
