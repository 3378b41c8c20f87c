#!/usr/bin/env bash
# Starts a Docker engine for the docker sandbox backend when none answers, idempotently.
# Never fails: without an engine agentgym falls back to bubblewrap sandboxes, so this only says why.
set -u

LOG=${AGENTGYM_DOCKERD_LOG:-/var/log/agentgym-dockerd.log}
WAIT_S=${AGENTGYM_DOCKERD_WAIT_S:-20}

if ! command -v docker >/dev/null 2>&1; then
  echo "start-dockerd: no docker client installed (apt-get install docker.io); sandboxes will use bubblewrap"
  exit 0
fi
if docker info >/dev/null 2>&1; then
  echo "start-dockerd: the Docker engine is already running"
  exit 0
fi
DOCKERD=$(command -v dockerd || true)
[ -z "$DOCKERD" ] && [ -x /usr/sbin/dockerd ] && DOCKERD=/usr/sbin/dockerd
if [ -z "$DOCKERD" ]; then
  echo "start-dockerd: no dockerd installed (apt-get install docker.io); sandboxes will use bubblewrap"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "start-dockerd: dockerd must be started as root (sudo $0); sandboxes will use bubblewrap"
  exit 0
fi

# A log under /var/log when it is writable, else under the cache directory.
if ! { mkdir -p "$(dirname "$LOG")" && touch "$LOG"; } 2>/dev/null; then
  LOG="${AGENTGYM_CACHE:-$HOME/.cache/agentgym}/dockerd.log"
  mkdir -p "$(dirname "$LOG")"
fi

# No bridge and no iptables: these machines have neither, and sandboxes run with no network anyway.
nohup "$DOCKERD" --bridge=none --iptables=false >>"$LOG" 2>&1 </dev/null &
pid=$!

for _ in $(seq 1 $((WAIT_S * 4))); do
  if docker info >/dev/null 2>&1; then
    echo "start-dockerd: started dockerd (pid $pid, log $LOG)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start-dockerd: dockerd exited at start: $(tail -n 1 "$LOG"); sandboxes will use bubblewrap"
    exit 0
  fi
  sleep 0.25
done
echo "start-dockerd: dockerd (pid $pid) did not answer within ${WAIT_S}s (see $LOG); sandboxes will use bubblewrap"
exit 0
