"""The measuring tools behind examples/benchmark.py and `examples/estimate.py --measure`. They are not installed
with gptcore: the scripts import them from here (`python examples/benchmark.py` puts examples/ on the import path).

    benchmark.py           each part of a run (train, memory, generate, compile, int8, profile) and the whole run
    report.py              the results as a table of gptcore / transformers ratios
    timing.py              timing on CPU or an accelerator: interleaved competitors, medians, the matmul peak
    bandwidth.py           the weight-streaming limit of batch-1 decoding, from the measured read bandwidth
    profiling.py           operators by self time (torch.profiler), for --profile
    llama_cpp.py           llama.cpp's llama-bench on GGUF files of the same weights, for --llama-cpp
    memory_measurement.py  the peak memory of real training steps, beside gptcore.training.memory_estimate's estimate
"""
