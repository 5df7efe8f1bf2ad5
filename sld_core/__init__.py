"""sld_core: the SLD math and the sampling runtime. Pure torch + diffusers/transformers; never imports ComfyUI."""
