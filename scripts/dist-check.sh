#!/usr/bin/env bash
# make dist-check: checks a release made by make dist (DIR, default dist/)
# the way a user meets it. Installs this machine's packages with dpkg, so it
# needs root: without root it skips, unless CI is set (then it fails). It
# purges what it installed when it ends, whatever happens.
#
#   - SHA256SUMS matches; the SBOM names all eight binaries
#   - dpkg -i of tunnel and tunneld; --version from /usr/bin names the
#     package's version; nothing is enabled
#   - systemd-analyze verify accepts the installed units
#   - man -l renders the installed man pages without a warning
#   - bash completion offers "http" after "tunnel " and "add" after "tunneld token "
#   - dpkg -r keeps the env files (conffiles), dpkg -P removes them
#   - the ARM packages declare armhf or arm64; their binaries run under
#     qemu-user: armv6 on an ARM1176 (Pi Zero/1) CPU, where the armv7 build
#     must die (SIGILL), which shows the emulated CPU really is an ARMv6
#   - the container images (make image, with podman; skipped without podman
#     unless CI is set): user, entrypoint, volume and env as documented, no
#     file but ours (no shell); podman cannot run a container on this kind of
#     machine (crun's setrlimit is refused), so tunneld --dev is started from
#     the image's own filesystem with chroot, as the image's user and with
#     its env, and must answer HTTPS; the tunnel image's binary prints
#     --version the same way
set -euo pipefail
dir=$(cd "${1:-dist}" && pwd)

if [[ $(id -u) != 0 ]]; then
	if [[ -n ${CI:-} ]]; then
		echo "dist-check: needs root (dpkg -i), and CI is set" >&2
		exit 1
	fi
	echo "dist-check: SKIP: needs root (dpkg -i)"
	exit 0
fi

fail() {
	echo "dist-check: FAIL: $*" >&2
	exit 1
}
ok() { echo "dist-check: ok: $*"; }

arch=$(dpkg --print-architecture)
deb() { # program debian-file-suffix
	local f=("$dir/$1"_*_"$2".deb)
	[[ -f ${f[0]} ]] || fail "no $1 package for $2 in $dir"
	echo "${f[0]}"
}
version=$(dpkg-deb --field "$(deb tunnel amd64)" Version)

(cd "$dir" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match"
sbom=("$dir"/tunnel_*.spdx.json)
grep -q '"spdxVersion": "SPDX-2.3"' "${sbom[0]}" || fail "${sbom[0]} is not SPDX 2.3"
[[ $(grep -c '"SPDXID": "SPDXRef-binary-' "${sbom[0]}") == 8 ]] || fail "${sbom[0]} does not list 8 binaries"
ok "checksums and SBOM"

for prog in tunnel tunneld; do
	section=1 units=(tunnel.service tunnel@.service)
	[[ $prog == tunneld ]] && section=8 units=(tunneld.service)
	for label in amd64 arm64 armv7 armv6; do
		name=${prog}_${version}_linux_$label
		got=$(tar -tzf "$dir/$name.tar.gz" | sort | tr '\n' ' ')
		for want in "$name/$prog" "$name/$prog.$section" "$name/completion/$prog.bash" "$name/completion/_$prog" \
			"$name/completion/$prog.fish" "${units[@]/#/$name/systemd/}" "$name/$prog.env.example" "$name/README.md"; do
			[[ " $got" == *" $want"* ]] || fail "$name.tar.gz lacks $want: $got"
		done
	done
done
ok "tarballs hold the binary, man page, completions, units and example env file"

for pkg in tunnel tunneld; do
	if dpkg-query -W "$pkg" >/dev/null 2>&1; then
		fail "$pkg is installed already: this check would replace it (dpkg -P $pkg first)"
	fi
done
tmp=$(mktemp -d)
cleanup() {
	dpkg -P tunnel tunneld >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# Container images often keep dpkg from installing man pages
# (path-exclude=/usr/share/man/*): let ours through.
dpkg --path-include='/usr/share/man/*' -i "$(deb tunnel "$arch")" "$(deb tunneld "$arch")" >"$tmp/dpkg.log" 2>&1 ||
	{ cat "$tmp/dpkg.log"; fail "dpkg -i"; }
ok "dpkg -i tunnel tunneld ($arch)"

for prog in tunnel tunneld; do
	out=$("/usr/bin/$prog" --version) || fail "/usr/bin/$prog --version"
	[[ $out == "$prog version $version"$'\n'commit:\ * ]] || fail "/usr/bin/$prog --version printed: $out"
	grep -q '^built:  [0-9]' <<<"$out" || fail "/usr/bin/$prog --version has no build date: $out"
done
ok "--version from /usr/bin names $version"

if compgen -G '/etc/systemd/system/*.wants/tunnel*' >/dev/null; then
	fail "installing enabled a unit: $(ls /etc/systemd/system/*.wants/tunnel*)"
fi
units=/usr/lib/systemd/system
# A template is verified through an instance of it.
cp "$units/tunnel@.service" "$tmp/tunnel@check.service"
for unit in "$units/tunneld.service" "$units/tunnel.service" "$tmp/tunnel@check.service"; do
	systemd-analyze verify "$unit" >"$tmp/verify.log" 2>&1 || { cat "$tmp/verify.log"; fail "systemd-analyze verify $unit"; }
	if grep -v -e '^$' "$tmp/verify.log" | grep -q .; then
		cat "$tmp/verify.log"
		fail "systemd-analyze verify $unit warned"
	fi
done
ok "systemd-analyze verify: tunneld.service tunnel.service tunnel@.service"

for page in /usr/share/man/man1/tunnel.1.gz /usr/share/man/man8/tunneld.8.gz; do
	[[ -f $page ]] || fail "$page is not installed"
	MANWIDTH=80 man -l "$page" >"$tmp/man.txt" 2>"$tmp/man.err" || fail "man -l $page"
	[[ -s $tmp/man.err ]] && { cat "$tmp/man.err"; fail "man -l $page warned"; }
	grep -q '^ENVIRONMENT' "$tmp/man.txt" || fail "man -l $page has no ENVIRONMENT section"
done
ok "man -l renders tunnel(1) and tunneld(8)"

complete_bash() { # words... : what the installed bash completion offers after them
	local prog=$1
	# shellcheck disable=SC2016
	bash --norc --noprofile -c '
		source "/usr/share/bash-completion/completions/$1"
		COMP_WORDS=("$@" "")
		COMP_CWORD=$(($# ))
		"_$1_complete"
		printf "%s\n" "${COMPREPLY[@]}"' bash "$@"
}
complete_bash tunnel | grep -qx http || fail "bash completion does not offer http after \"tunnel \": $(complete_bash tunnel)"
complete_bash tunneld token | grep -qx add || fail "bash completion does not offer add after \"tunneld token \""
ok "bash completion: tunnel <TAB> offers http, tunneld token <TAB> offers add"
for f in /usr/share/zsh/vendor-completions/_tunnel /usr/share/fish/vendor_completions.d/tunnel.fish; do
	[[ -s $f ]] || fail "$f is not installed"
done

echo 'TUNNEL_SERVER=kept.example.com:443' >>/etc/tunnel/tunnel.env
dpkg -r tunnel tunneld >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg -r"; }
[[ ! -e /usr/bin/tunnel && ! -e /usr/bin/tunneld ]] || fail "dpkg -r left a binary"
grep -q kept.example.com /etc/tunnel/tunnel.env || fail "dpkg -r removed the edited /etc/tunnel/tunnel.env"
[[ -f /etc/tunneld/env ]] || fail "dpkg -r removed /etc/tunneld/env"
dpkg -P tunnel tunneld >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg -P"; }
[[ ! -e /etc/tunnel/tunnel.env && ! -e /etc/tunneld/env ]] || fail "dpkg -P left an env file"
ok "dpkg -r keeps the env files, dpkg -P removes them"

for t in "arm64 arm64 qemu-aarch64-static" "armhf-armv7 armhf qemu-arm-static" "armhf-armv6 armhf qemu-arm-static"; do
	read -r suffix want qemu <<<"$t"
	for prog in tunnel tunneld; do
		f=$(deb "$prog" "$suffix")
		got=$(dpkg-deb --field "$f" Architecture)
		[[ $got == "$want" ]] || fail "$(basename "$f") declares $got, want $want"
		rm -rf "$tmp/x" && dpkg-deb -x "$f" "$tmp/x"
		cpu=()
		[[ $suffix == armhf-armv6 ]] && cpu=(-cpu arm1176)
		out=$("$qemu" "${cpu[@]}" "$tmp/x/usr/bin/$prog" --version) || fail "$prog from $(basename "$f") does not run under $qemu ${cpu[*]}"
		[[ $out == "$prog version $version"* ]] || fail "$prog from $(basename "$f") printed: $out"
		if [[ $suffix == armhf-armv7 ]] && sh -c 'qemu-arm-static -cpu arm1176 "$1" --version >/dev/null 2>&1; exit $?' sh "$tmp/x/usr/bin/$prog" 2>/dev/null; then
			fail "the armv7 $prog runs on an emulated ARM1176: that CPU is no ARMv6 check"
		fi
	done
done
ok "arm64 and armhf packages: architecture, and the binaries run (armv6 on -cpu arm1176)"

# The armv7 packages refuse an ARMv6 CPU before dpkg unpacks anything: their
# preinst, run with a uname that says what a Pi Zero says.
mkdir -p "$tmp/fake"
printf '#!/bin/sh\necho "$FAKE_MACHINE"\n' >"$tmp/fake/uname"
chmod +x "$tmp/fake/uname"
for prog in tunnel tunneld; do
	rm -rf "$tmp/ctrl" && dpkg-deb -e "$(deb "$prog" armhf-armv7)" "$tmp/ctrl"
	[[ -x $tmp/ctrl/preinst ]] || fail "the armv7 $prog package has no preinst"
	FAKE_MACHINE=armv6l PATH="$tmp/fake:$PATH" "$tmp/ctrl/preinst" install 2>/dev/null &&
		fail "the armv7 $prog package installs on an armv6l machine"
	FAKE_MACHINE=armv7l PATH="$tmp/fake:$PATH" "$tmp/ctrl/preinst" install || fail "the armv7 $prog package refuses armv7l"
	rm -rf "$tmp/ctrl6" && dpkg-deb -e "$(deb "$prog" armhf-armv6)" "$tmp/ctrl6"
	[[ ! -e $tmp/ctrl6/preinst ]] || fail "the armv6 $prog package has a preinst"
done
ok "the armv7 packages refuse an armv6l machine, the armv6 ones have no such check"
if ! command -v podman >/dev/null; then
	[[ -n ${CI:-} ]] && fail "podman is missing (apt-get install podman), and CI is set"
	echo "dist-check: SKIP: container images: no podman"
	echo "dist-check: all passed but the images"
	exit 0
fi
"$(dirname "$0")/image.sh" "$dir" >"$tmp/image.log" 2>&1 || { cat "$tmp/image.log"; fail "make image"; }
tag=${version//\~/-}
want_files() {
	case $1 in
	tunneld) printf '%s\n' ./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/bin/tunneld ./var/lib/tunneld ;;
	tunnel) printf '%s\n' ./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/bin/tunnel ;;
	esac
}
containers=()
cleanup() {
	for c in "${containers[@]}"; do
		podman umount "$c" >/dev/null 2>&1 || true
		podman rm -f "$c" >/dev/null 2>&1 || true
	done
	dpkg -P tunnel tunneld >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
for prog in tunneld tunnel; do
	image=localhost/$prog:$tag
	cfg=$(podman image inspect "$image" --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Volumes}}')
	want='65532:65532|["/usr/bin/'$prog'"]|'
	[[ $prog == tunneld ]] && want+='{"/var/lib/tunneld":{}}' || want+='null'
	[[ $cfg == "$want" ]] || fail "$image: user|entrypoint|volumes are $cfg, want $want"
	c=$(podman create "$image")
	containers+=("$c")
	root=$(podman mount "$c")
	got=$(cd "$root" && find . -mindepth 1 \( -type f -o -type d -empty \) | sort)
	[[ $got == "$(want_files "$prog")" ]] || fail "$image holds: $got"
	mapfile -t env < <(podman image inspect "$image" --format '{{range .Config.Env}}{{println .}}{{end}}' | grep .)
	if [[ $prog == tunnel ]]; then
		out=$(env -i "${env[@]}" chroot --userspec=65532:65532 "$root" /usr/bin/tunnel --version) || fail "$image: tunnel --version"
		[[ $out == "tunnel version $version"* ]] || fail "$image: tunnel --version printed: $out"
		continue
	fi
	[[ " ${env[*]} " == *" STATE_DIRECTORY=/var/lib/tunneld "* ]] || fail "$image: env lacks STATE_DIRECTORY: ${env[*]}"
	# tunneld --dev as the container would start it, but on a free loopback
	# port and without the plain-HTTP port, since it shares this machine's
	# network. Its "serving" log line names the address.
	mkfifo "$tmp/log"
	env -i "${env[@]}" chroot --userspec=65532:65532 "$root" /usr/bin/tunneld --dev \
		--listen 127.0.0.1:0 --http-listen "" 2>"$tmp/log" &
	pid=$!
	exec 3<"$tmp/log"
	addr=
	while IFS= read -r -t 20 line <&3; do
		echo "$line" >>"$tmp/tunneld.log"
		if [[ $line == *'"message":"serving"'* ]]; then
			addr=$(sed -E 's/.*"addr":"([^"]+)".*/\1/' <<<"$line")
			break
		fi
	done
	cat <&3 >>"$tmp/tunneld.log" &
	drain=$!
	[[ -n $addr ]] || { kill "$pid" 2>/dev/null; cat "$tmp/tunneld.log"; fail "$image: tunneld --dev did not serve"; }
	port=${addr##*:}
	code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$root/var/lib/tunneld/dev-certs/ca.pem" \
		--resolve "nobody.localhost:$port:127.0.0.1" "https://nobody.localhost:$port/") || code="curl failed"
	kill -TERM "$pid"
	wait "$pid" || fail "$image: tunneld exited $? on SIGTERM"
	wait "$drain" || true
	exec 3<&-
	# No tunnel is named "nobody": tunneld's own 404, over TLS from its dev CA.
	[[ $code == 404 ]] || { cat "$tmp/tunneld.log"; fail "$image: https://nobody.localhost answered $code, want 404"; }
	[[ $(stat -c %u "$root/var/lib/tunneld/dev-certs/ca.pem") == 65532 ]] || fail "$image: the dev CA is not the image user's"
done
ok "images localhost/tunneld:$tag and localhost/tunnel:$tag: user 65532, entrypoint, volume, no shell; tunneld --dev from the image's filesystem answers HTTPS"
echo "dist-check: all passed"
