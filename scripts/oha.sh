#!/usr/bin/env bash
# oha, the HTTP load generator the analytics bench measures the read API with (a second process
# sending requests at a fixed rate), built once from crates.io and pinned. Prints its path.
exec bash "$(dirname "$0")/cargo_tool.sh" oha 1.16.0 oha
