# Supervision of the dev script's long-running processes (web, worker, beat). Sourced by
# platform/dev.sh, and by tests with stand-in commands.
#
#   supervise_start NAME COMMAND...   start COMMAND in the background, known as NAME
#   supervise                         wait until one of them exits, or INT/TERM arrives; then stop
#                                     the others and return non-zero (exit 130/143 on a signal)
#
# The process list is global, not local to a function: a stop handler run from a trap after the
# function that started the processes has returned still sees every pid.

SUPERVISED_PIDS=()
SUPERVISED_NAMES=()
STOP_TIMEOUT=${STOP_TIMEOUT:-20}

supervise_log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

supervise_start() {
  local name=$1
  shift
  "$@" &
  SUPERVISED_PIDS+=("$!")
  SUPERVISED_NAMES+=("$name")
  supervise_log "$name started (pid $!)"
}

supervise_running() {  # true while every supervised process is still running
  local pid
  for pid in "${SUPERVISED_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done
}

# SIGTERM to each process still running; SIGKILL to any still there after STOP_TIMEOUT seconds.
supervise_stop() {
  [ "${#SUPERVISED_PIDS[@]}" -gt 0 ] || return 0
  local pid deadline=$((SECONDS + STOP_TIMEOUT))
  supervise_log "stopping ${SUPERVISED_NAMES[*]}"
  for pid in "${SUPERVISED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SUPERVISED_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait "${SUPERVISED_PIDS[@]}" 2>/dev/null || true
  SUPERVISED_PIDS=()
  SUPERVISED_NAMES=()
}

supervise() {
  trap 'supervise_stop; exit 130' INT
  trap 'supervise_stop; exit 143' TERM
  trap supervise_stop EXIT
  # Polled rather than `wait -n`, which misses a process that exited before it was called.
  while supervise_running; do sleep 0.2; done
  local status=0 i
  for i in "${!SUPERVISED_PIDS[@]}"; do
    if ! kill -0 "${SUPERVISED_PIDS[$i]}" 2>/dev/null; then
      wait "${SUPERVISED_PIDS[$i]}" 2>/dev/null || status=$?
      supervise_log "${SUPERVISED_NAMES[$i]} exited with status $status"
      break
    fi
  done
  supervise_stop
  trap - INT TERM EXIT
  [ "$status" -ne 0 ] || status=1
  return "$status"
}
