#!/usr/bin/env bash
# The README's first command: set up .venv, make a tiny SD1.5-layout model, train a LoRA on the
# shipped demo dataset (kohya folders + reg folder) with samples, checkpoints, a state and the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1
out=output/demo
model="$out/tiny_sd15.safetensors"
mkdir -p "$out"
if [ ! -f "$model" ]; then
  .venv/bin/python tools/make_tiny_model.py --family sd1 --out "$model"
fi
.venv/bin/python train_network.py --config_file presets/demo.toml \
  --pretrained_model_name_or_path "$model" \
  --train_data_dir examples/demo/img --reg_data_dir examples/demo/reg \
  --sample_prompts examples/demo/prompts.txt --logging_dir "$out/logs" "$@"
echo
echo "Demo finished. Files in $out/:"
echo "  LoRA (loads in ComfyUI / A1111 / diffusers): $out/demo_lora.safetensors"
echo "  checkpoints every 20 steps:                  $out/demo_lora-step*.safetensors (+ *-state folders for --resume)"
echo "  sample images:                               $out/sample/"
echo "  report (loss curve + samples per checkpoint): $out/demo_lora_report.html"
echo "  TensorBoard logs:                            $out/logs/  (tensorboard --logdir $out/logs)"
