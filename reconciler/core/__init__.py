"""The pure core: values in, values out — manifest kinds, the diff, the plan, policy; no I/O."""
