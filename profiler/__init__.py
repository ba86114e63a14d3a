"""The torch side of attncost: modules, FLOP counters, timing harness and the profiling runs."""
