#!/bin/sh
# Starts `agentlab run` with the secrets of agentlab.env (mode 600, next to this
# folder): launchd plists cannot read an environment file themselves, and the
# token must not live in the plist. `exec` keeps the pid launchd watches.
set -eu
cd "$(dirname "$0")/.."
if [ -f ./agentlab.env ]; then
    set -a
    . ./agentlab.env
    set +a
fi
exec ./agentlab run --config ./agentlab.toml
