"""The demo `make demo` runs: the operator and real sidecars on the local sandbox."""
