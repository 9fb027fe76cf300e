#!/usr/bin/env bash
# Builds the peers make bench-peers measures beside the tunnel, from the Go
# module proxy at pinned versions, outside our go.mod: chisel and frp are not
# dependencies of ours and must not become go.mod lines.
#
#   scripts/build-peers.sh DIR    # writes DIR/chisel, DIR/frps, DIR/frpc
#
# A binary already built at the pinned version is kept (DIR/VERSIONS says
# which), so only the first run pays for the build (about 2.5 min on 2 cores).
set -euo pipefail

dir=${1:?usage: build-peers.sh DIR}
# The bench reads these versions too (bench/peers.go): change both together.
chisel=github.com/jpillora/chisel@v1.11.3 # later versions are not served by our proxy
frp=github.com/fatedier/frp@v0.70.0
want="$chisel $frp"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -x $dir/chisel && -x $dir/frps && -x $dir/frpc && "$(cat "$dir/VERSIONS" 2>/dev/null)" == "$want" ]]; then
	echo "peers: $want already built in $dir"
	exit 0
fi
rm -f "$dir/VERSIONS"

# Download each module and build inside its own directory, with its own
# go.mod: frp's has a replace directive (its yamux fork), which `go install
# pkg@version` refuses. GOFLAGS=-mod=mod lets go fetch what the module's
# go.sum names but our cache lacks; -o writes outside the read-only cache.
# Downloaded from outside any module, so that no go.mod is consulted or touched.
moddir() {
	(cd / && GOWORK=off go mod download -json "$1") | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}
export CGO_ENABLED=0 GOFLAGS=-mod=mod
src=$(moddir "$chisel")
echo "peers: building chisel from $src"
(cd "$src" && go build -trimpath -o "$dir/chisel" .)
src=$(moddir "$frp")
echo "peers: building frps and frpc from $src"
(cd "$src" && go build -trimpath -tags frps,noweb -o "$dir/frps" ./cmd/frps)
(cd "$src" && go build -trimpath -tags frpc,noweb -o "$dir/frpc" ./cmd/frpc)
echo "$want" >"$dir/VERSIONS"
