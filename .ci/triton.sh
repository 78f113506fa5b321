# Where .ci/install puts Triton, for the .ci/test lines that need it (sourced by both).
# Triton stays out of site-packages: once TensorFlow is loaded, loading Triton's LLVM
# aborts the process ("Option ... registered more than once"), and torch.compile imports
# Triton whenever it can, so processes that hold TensorFlow (the Keras, CLI and bench
# suites, the docs build) must not see it. One directory per version, shared by checkouts.
TRITON_VERSION=3.9.0
TRITON_DIR=${LOCALNORM_TRITON_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/localnorm/triton-$TRITON_VERSION}
