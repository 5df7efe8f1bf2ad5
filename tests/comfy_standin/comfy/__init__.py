"""A stand-in for the few parts of ComfyUI that `nodes/comfy_bridge.py` uses, for CI tests only.

tests/test_comfy_bridge.py puts tests/comfy_standin on sys.path for one test at a time, so the bridge's
`import comfy.samplers`, `import latent_preview` (and `folder_paths`, ComfyUI's mark of being the host)
find these modules, and takes them out of sys.modules afterwards: no other test sees a ComfyUI.

Written from ComfyUI 0.3.64's documented behaviour (shared/reference/comfyui_contract.md, A2-A3, and
its comfy/samplers.py read for the protocol), never copied from it: what a guider receives and must
return, the order of hooks and their keys, where the run's sigmas are put. Everything else ComfyUI
does around sampling (model loading and patching, areas, ControlNet, wrappers) is left out. The model
is any denoiser `denoise(x, sigma, context) -> x̂₀` (`model_base.BaseModel`), so numbers are real.
"""
