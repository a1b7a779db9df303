# Sourced by the GPU check scripts: the results folder ($OUT, else outputs/gpu) in $out, and the machine's card,
# driver and versions in $out/machine.txt.
out=${OUT:-outputs/gpu}
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, transformers; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'transformers', transformers.__version__)"
} > "$out/machine.txt" 2>&1
