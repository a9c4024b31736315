#!/usr/bin/env bash
# Testbed wrapper: builds if needed, then runs the TypeScript testbed CLI (up|down|status|exec <host> ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -f dist/scripts/testbed/cli.js ]; then
  npx --no-install tsc -p tsconfig.build.json
fi
exec node dist/scripts/testbed/cli.js "$@"
