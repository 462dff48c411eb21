"""Offline stand-in for rules_java's java/defs.bzl: the native Java rules of Bazel 4, which is all
that Bazel's own tools load from it (the repository itself is downloaded from GitHub otherwise)."""

java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_runtime = native.java_runtime
java_toolchain = native.java_toolchain
