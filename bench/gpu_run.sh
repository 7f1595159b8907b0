#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, as run on a lent H200 (one call of the device tool):
#   bash bench/gpu_run.sh OUTDIR
# Uses the machine's own torch/transformers with this checkout's src/ on PYTHONPATH.
set -euo pipefail
out=${1:-bench/results}
export PYTHONPATH=src PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
nvidia-smi -L
python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
python bench/gpu_check.py
python bench/gpu_prune.py --layers 4 --nsamples 128 --seqlen 2048 --dtype bfloat16
for shape in "llama-7b 4096 11008 32 32" "smollm2-135m 576 1536 9 3"; do
  set -- $shape
  python -c "from transformers import LlamaConfig; LlamaConfig(hidden_size=$2, intermediate_size=$3, num_attention_heads=$4, num_key_value_heads=$5, num_hidden_layers=2).save_pretrained('/tmp/shape-$1')"
  python bench/semistructured.py --model /tmp/shape-$1 --out bench/results/semistructured-$1.json --tokens 16384
done
# The workflow itself on the GPU (Snakemake, every rule kind, lm-eval): LLaMA-7B's block shape, 4 blocks,
# 128 x 2048 calibration; per-job host peaks, the device's peak and wall times (issue 24; not run yet).
timeout 480 python bench/scale.py --shape llama-7b --blocks 4 --nsamples 128 --seqlen 2048 --device cuda \
  --out bench/results/scale-gpu-llama-7b.json || echo "bench/scale.py on the GPU did not finish"
cp bench/results/scale-gpu-llama-7b.json "$out"/ 2>/dev/null || true
cp bench/results/gpu_check.json bench/results/gpu_prune.json bench/results/semistructured-*.json "$out"/ 2>/dev/null || true
