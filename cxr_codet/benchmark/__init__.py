"""Benchmarks behind tools/benchmark.py: speed and peak memory of training, inference and data loading.

tasks: what is measured (BENCHMARK_TASKS); data_path: the VinDr conversion and loader at full size; memory: peak
memory of a block; runner: one config, or two alternating; report: tables and the machine; cli: the command line.
"""
