"""The local sandbox the demo and the tests run on: a real control plane built from package registries."""
