"""What the machine did while a row was timed: other load, clocks, memory, energy, GPU/NPU state.

    procfs.py  Linux /proc and /sys readers: pure parsers over the files' text, thin readers around them
    state.py   the row's typed `machine_state` group and the pure summaries over sampled numbers
    nvml.py    NVIDIA GPUs through NVML (nvidia-ml-py, imported only when a GPU row asks)
    npusmi.py  Ascend NPUs through `npu-smi info` (parsed when the tool is on PATH)
    watch.py   the light sampler thread and the windows of one row (timing loop, accuracy pass)
"""
