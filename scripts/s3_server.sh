#!/usr/bin/env bash
# An S3-compatible server for the artifact store's tests: s3s-fs (a real S3 server over a
# directory, with SigV4 authentication), built once from crates.io and pinned. Prints the
# binary's path.
exec bash "$(dirname "$0")/cargo_tool.sh" s3s-fs 0.14.1 s3s-fs --features binary
