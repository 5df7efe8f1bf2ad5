"""ComfyUI's sampler and scheduler names, in the order of its KSampler lists (the first scheduler is its
fallback). Torch-free, so that validating a workflow or listing the nodes needs no torch; `samplers` and
`schedules` implement one function per name (tests/test_samplers.py holds them to these lists).
"""
SAMPLER_NAMES = [
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal"]
