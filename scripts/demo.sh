#!/usr/bin/env bash
# The demo behind "make demo": starts bin/tunneld --dev, the built-in demo
# page (bin/demo-page) and bin/tunnel exposing it as https://demo.localhost:8443,
# prints the URL and a curl line to try, and stops all three on Ctrl-C.
# Logs go to a temporary directory whose path is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

# DEMO_BIN and DEMO_CERTS let a test run the demo on its own binaries and
# certificates; tunneld's address comes from its log, so TUNNELD_LISTEN
# may move it (127.0.0.1:0 in tests).
bin=${DEMO_BIN:-bin}
certs=${DEMO_CERTS:-certs}
logs=$(mktemp -d "${TMPDIR:-/tmp}/tunnel-demo.XXXXXX")
pids=()

stop() {
	trap - EXIT INT TERM
	if ((${#pids[@]})); then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
	echo "demo: stopped; logs are in $logs" >&2
}
trap stop EXIT
trap 'exit 0' INT TERM

# wait_for FILE REGEX PID LOG: wait up to 20 s for a line matching REGEX in
# FILE; if PID exits first, show LOG (its stderr) and fail.
wait_for() {
	local file=$1 re=$2 pid=$3 log=$4 i
	for ((i = 0; i < 200; i++)); do
		if grep -qE "$re" "$file" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "demo: $(basename "$log" .log) exited early:" >&2
			cat "$log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "demo: timed out waiting for /$re/ in $file" >&2
	exit 1
}

"$bin/tunneld" --dev --certs-dir "$certs" --log-format json 2>"$logs/tunneld.log" &
pids+=($!)
wait_for "$logs/tunneld.log" '"message":"serving"' $! "$logs/tunneld.log"
server=$(grep -m1 '"message":"serving"' "$logs/tunneld.log" | sed -E 's/.*"addr":"([^"]*)".*/\1/')

"$bin/demo-page" >"$logs/demo-page.out" 2>"$logs/demo-page.log" &
pids+=($!)
wait_for "$logs/demo-page.out" ':[0-9]+$' $! "$logs/demo-page.log"
page=$(head -n 1 "$logs/demo-page.out")

"$bin/tunnel" --dev --server "$server" --certs-dir "$certs" --log-format json http --name demo "$page" \
	>"$logs/tunnel.out" 2>"$logs/tunnel.log" &
pids+=($!)
wait_for "$logs/tunnel.out" '^https://' $! "$logs/tunnel.log"
url=$(head -n 1 "$logs/tunnel.out")

cat <<MSG

  local page:  http://$page
  public URL:  $url
  try:         curl --cacert $certs/ca.pem $url/
  (a browser must trust $certs/ca.pem first; logs: $logs)

Press Ctrl-C to stop.
MSG

# Returns when one of the three exits. Each exits 0 only when a signal told
# it to stop: without a terminal (a script, CI, "kill -INT" to the process
# group), this shell started with SIGINT ignored and cannot trap it, while
# the Go programs still take it; so an exit 0 is a requested stop, not a
# failure. Anything else is a crash, and says so.
status=0
wait -n "${pids[@]}" || status=$?
if ((status == 0)); then
	exit 0
fi
echo "demo: a process stopped unexpectedly (exit $status); see the logs in $logs" >&2
exit 1
