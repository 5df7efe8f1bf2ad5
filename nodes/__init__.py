"""Thin node classes (ComfyUI's V1 contract) over sld_core.

`NODE_CLASS_MAPPINGS` holds only the SLD nodes: it is what the package registers in ComfyUI.
`CORE_NODE_CLASS_MAPPINGS` re-implements the ComfyUI core nodes that shared workflows use, with
ComfyUI's names, inputs and outputs, for the headless runner only. It is never exported to ComfyUI
(which would drop them anyway: a pack cannot override a core node).
"""
from .conditioning import CLIPTextEncode, SLDSafetyConcept
from .conditioning_ops import (ConditioningAverage, ConditioningCombine, ConditioningConcat, ConditioningSetArea,
                               ConditioningSetAreaPercentage, ConditioningSetTimestepRange, ConditioningZeroOut)
from .custom_sampling import (BasicGuider, BasicScheduler, CFGGuider, DisableNoise, KarrasScheduler, KSamplerAdvanced,
                              KSamplerSelect, RandomNoise, SamplerCustom, SamplerCustomAdvanced, SDTurboScheduler,
                              SLDGuider, SplitSigmas)
from .image import (ImageBatch, ImageScale, ImageScaleBy, InvertMask, LoadImage, PreviewImage, SaveImage,
                    SLDImageGrid)
from .latent import (EmptyLatentImage, LatentFromBatch, LatentUpscale, LatentUpscaleBy, RepeatLatentBatch,
                     SetLatentNoiseMask, VAEDecode, VAEEncode, VAEEncodeForInpaint)
from .loaders import CheckpointLoaderSimple, SLDCheckpointLoader, VAELoader
from .model_patches import CLIPSetLastLayer, LoraLoader, LoraLoaderModelOnly
from .model_sampling import ModelSamplingDiscrete
from .sdxl_conditioning import CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner
from .safety import SLDSafetyChecker, SLDSafetyCheckerLoader
from .sampling import KSampler, SLDKSampler, SLDKSamplerAdvanced

NODE_CLASS_MAPPINGS = {
    "SLDKSampler": SLDKSampler,
    "SLDKSamplerAdvanced": SLDKSamplerAdvanced,
    "SLDSafetyConcept": SLDSafetyConcept,
    "SLDCheckpointLoader": SLDCheckpointLoader,
    "SLDImageGrid": SLDImageGrid,
    "SLDSafetyCheckerLoader": SLDSafetyCheckerLoader,
    "SLDSafetyChecker": SLDSafetyChecker,
    "SLDGuider": SLDGuider,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SLDKSampler": "KSampler (Safe Latent Diffusion)",
    "SLDKSamplerAdvanced": "KSampler Advanced (Safe Latent Diffusion)",
    "SLDSafetyConcept": "SLD Safety Concept",
    "SLDCheckpointLoader": "Load Checkpoint (SLD)",
    "SLDImageGrid": "Image Grid (SLD)",
    "SLDSafetyCheckerLoader": "Load Safety Checker (SLD)",
    "SLDSafetyChecker": "Safety Checker (SLD)",
    "SLDGuider": "SLD Guider (Safe Latent Diffusion)",
}

CORE_NODE_CLASS_MAPPINGS = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "CLIPTextEncode": CLIPTextEncode,
    "EmptyLatentImage": EmptyLatentImage,
    "KSampler": KSampler,
    "VAEDecode": VAEDecode,
    "VAEEncode": VAEEncode,
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "ImageBatch": ImageBatch,
    "LatentUpscale": LatentUpscale,
    "LatentUpscaleBy": LatentUpscaleBy,
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "RepeatLatentBatch": RepeatLatentBatch,
    "LatentFromBatch": LatentFromBatch,
    "SetLatentNoiseMask": SetLatentNoiseMask,
    "VAEEncodeForInpaint": VAEEncodeForInpaint,
    "InvertMask": InvertMask,
    "ModelSamplingDiscrete": ModelSamplingDiscrete,
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
    "CLIPSetLastLayer": CLIPSetLastLayer,
    "VAELoader": VAELoader,
    "CLIPTextEncodeSDXL": CLIPTextEncodeSDXL,
    "CLIPTextEncodeSDXLRefiner": CLIPTextEncodeSDXLRefiner,
    "KSamplerAdvanced": KSamplerAdvanced,
    "SamplerCustom": SamplerCustom,
    "SamplerCustomAdvanced": SamplerCustomAdvanced,
    "KSamplerSelect": KSamplerSelect,
    "BasicScheduler": BasicScheduler,
    "KarrasScheduler": KarrasScheduler,
    "SDTurboScheduler": SDTurboScheduler,
    "SplitSigmas": SplitSigmas,
    "RandomNoise": RandomNoise,
    "DisableNoise": DisableNoise,
    "CFGGuider": CFGGuider,
    "BasicGuider": BasicGuider,
    "ConditioningCombine": ConditioningCombine,
    "ConditioningConcat": ConditioningConcat,
    "ConditioningAverage": ConditioningAverage,
    "ConditioningSetArea": ConditioningSetArea,
    "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
    "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
    "ConditioningZeroOut": ConditioningZeroOut,
}

HEADLESS_NODE_CLASS_MAPPINGS = {**CORE_NODE_CLASS_MAPPINGS, **NODE_CLASS_MAPPINGS}
