"""Triton kernels, one module per kernel (kernel, launcher, configs). Import the module you need;
this package imports nothing so that ``import fp4mm`` never needs triton."""
