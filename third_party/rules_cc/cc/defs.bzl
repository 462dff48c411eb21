"""Offline stand-in for rules_cc's cc/defs.bzl: the native C++ rules of Bazel 4, which is all that
Bazel's own tools load from it (the repository itself is downloaded from GitHub otherwise)."""

cc_library = native.cc_library
cc_binary = native.cc_binary
cc_test = native.cc_test
cc_import = native.cc_import
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
