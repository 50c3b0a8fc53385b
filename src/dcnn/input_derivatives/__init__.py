"""Derivatives of a network's outputs with respect to its inputs, for PDE residuals.

`derivatives` is the entry point (`input_jet`, `jet_and_values`): nested autograd for any
module, or a Taylor-mode pass carried forward with the values through MLPs (`taylor`), whose CPU
kernels are C++ (`native`, `fused_mlp_jet.cpp`); `activation_derivatives` gives the activation
terms both need.
"""
