cd /work/main && . /work/venv/bin/activate
echo "start $(date)"
/usr/bin/time -v python -c "
import time; from comfyui_sld.sld_core.acceleration import tune_cpu_allocator; tune_cpu_allocator()
from comfyui_sld.sld_core.models.checkpoint import load_checkpoint
t=time.perf_counter(); m,c,v=load_checkpoint('/root/.cache/comfyui-sld/sdxl_random_seed0.safetensors', device='cpu'); t=time.perf_counter()-t
print('load_s', round(t,2), 'unet dtype', m.dtype)
" > bench/results/cpu-2026-11-30c/sdxl-load-log.txt 2>&1
python bench/bench_sdxl.py --size 256 --steps 20 --reps 3 > bench/results/cpu-2026-11-30c/sdxl-bench-log.txt 2>&1
echo "end $(date)"
