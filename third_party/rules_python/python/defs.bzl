"""Offline stand-in for rules_python's python/defs.bzl: Bazel's native Python rules.

rules_python is fetched from the network, which these machines cannot reach; the native rules of
the Bazel in Debian's bazel-bootstrap do the same for this repository's BUILD file."""

py_library = native.py_library
py_test = native.py_test
py_binary = native.py_binary
