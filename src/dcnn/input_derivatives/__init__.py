"""Derivatives of a network's outputs with respect to its inputs, for PDE residuals.

`derivatives` is the entry point (`input_jet`, `jet_and_values`): nested autograd for any
module, or a Taylor-mode pass carried forward with the values (`taylor`; `slab_layout` says where
each derivative lives). Through MLPs it is one fused pass (`fused_mlp`), whose CPU kernels are
C++ (`native`, `fused_mlp_jet.cpp`); `activation_derivatives` gives the activation terms all of
them need.
"""
