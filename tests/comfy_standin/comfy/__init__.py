"""A stand-in for the few parts of ComfyUI that `nodes/comfy_bridge.py` uses, for CI tests only.

tests/test_comfy_bridge.py puts tests/comfy_standin on sys.path for one test at a time, so the bridge's
`import comfy.samplers`, `import latent_preview` (and `folder_paths`, ComfyUI's mark of being the host)
find these modules, and takes them out of sys.modules afterwards: no other test sees a ComfyUI.

Written from ComfyUI 0.3.64's documented behaviour (shared/reference/comfyui_contract.md, A2-A3, and
its comfy/samplers.py, model_base.py and model_sampling.py read for the protocol), never copied from
it: what a guider receives and must return, the order of hooks and their keys, where the run's sigmas
are put, how conditionings become model inputs (SDXL's pooled output and sizes), what a model's output
means (ε, v, flow). Everything else ComfyUI does around sampling (model loading, weight patching,
areas, ControlNet, wrappers) is left out. A model's network is any callable (tests use diffusers'
UNets), so numbers are real. agreement.py checks the stand-in against a real ComfyUI.
"""
