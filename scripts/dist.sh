#!/usr/bin/env bash
# make dist VERSION=x.y.z: the release in dist/.
#
#   tunnel_VERSION_linux_ARCH.tar.gz, tunneld_VERSION_linux_ARCH.tar.gz
#       ARCH amd64, arm64, armv7, armv6: the static binary, its man page,
#       completions, systemd units and example env file
#   tunnel_VERSION_DEBARCH.deb, tunneld_VERSION_DEBARCH.deb
#       DEBARCH amd64, arm64, armhf-armv7, armhf-armv6: Debian packages, built
#       with nfpm (a go.mod tool); both ARM ones declare armhf (see README,
#       "Installing a package")
#   tunnel_VERSION.spdx.json   SPDX SBOM of every binary (scripts/sbom)
#   SHA256SUMS                 of all the above
#
# The man pages and completion scripts come from the programs themselves
# ("tunnel man", "tunnel completion bash"), so they match --help.
# SOURCE_DATE_EPOCH (the Makefile sets it) dates every file in the archives,
# so the same commit gives the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
: "${LDFLAGS:?run by make dist}"
: "${SOURCE_DATE_EPOCH:?run by make dist}"
export SOURCE_DATE_EPOCH
VERSION=${VERSION:-}
# Debian sorts "~" before anything: 1.2.0~rc1 comes before 1.2.0.
if ! [[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(~[0-9A-Za-z.]+)?$ ]]; then
	echo "dist: VERSION must be x.y.z or x.y.z~pre (got \"$VERSION\"): make dist VERSION=1.2.0" >&2
	exit 1
fi

out=dist
work=$out/.work
rm -rf "$out"
mkdir -p "$work"
mtime="@$SOURCE_DATE_EPOCH"
maintainer=${MAINTAINER:-"tunnel maintainers <https://github.com/tunnelhq/tunnel/issues>"}

# label GOARCH GOARM debian-architecture file-suffix
targets=(
	"amd64 amd64 - amd64 amd64"
	"arm64 arm64 - arm64 arm64"
	"armv7 arm 7 armhf armhf-armv7"
	"armv6 arm 6 armhf armhf-armv6"
)

build() { # dir GOARCH GOARM
	local arm=$3
	[[ $arm == - ]] && arm=
	mkdir -p "$1"
	CGO_ENABLED=0 GOOS=linux GOARCH=$2 GOARM=$arm "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$1/" ./cmd/tunnel ./cmd/tunneld
}

for t in "${targets[@]}"; do
	read -r label goarch goarm _ _ <<<"$t"
	echo "dist: build linux $label"
	build "$work/bin/linux-$label" "$goarch" "$goarm"
done

# Man pages and completions, from binaries for this machine.
host=$work/host
CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$host/" ./cmd/tunnel ./cmd/tunneld
share=$work/share
mkdir -p "$share"
for prog in tunnel tunneld; do
	section=1
	[[ $prog == tunneld ]] && section=8
	"$host/$prog" man >"$share/$prog.$section"
	gzip -n -9 <"$share/$prog.$section" >"$share/$prog.$section.gz"
	"$host/$prog" completion bash >"$share/$prog.bash"
	"$host/$prog" completion zsh >"$share/_$prog"
	"$host/$prog" completion fish >"$share/$prog.fish"
done

# The units run the binaries from /usr/local/bin when installed by hand
# (README); a package puts them in /usr/bin.
mkdir -p "$work/systemd"
for unit in deploy/systemd/*.service; do
	sed 's,/usr/local/bin/,/usr/bin/,g' "$unit" >"$work/systemd/$(basename "$unit")"
	if grep -q /usr/local/bin "$work/systemd/$(basename "$unit")"; then
		echo "dist: $unit still names /usr/local/bin" >&2
		exit 1
	fi
done

units_of() {
	case $1 in
	tunnel) echo tunnel.service tunnel@.service ;;
	tunneld) echo tunneld.service ;;
	esac
}

# Tarballs: the binary as built, with /usr/local/bin units, as README's
# "Installing by hand" expects.
for t in "${targets[@]}"; do
	read -r label _ _ _ _ <<<"$t"
	for prog in tunnel tunneld; do
		section=1
		[[ $prog == tunneld ]] && section=8
		name=${prog}_${VERSION}_linux_$label
		dir=$work/tar/$name
		mkdir -p "$dir/completion" "$dir/systemd"
		cp "$work/bin/linux-$label/$prog" "$dir/"
		cp "$share/$prog.$section" "$dir/"
		cp "$share/$prog.bash" "$share/_$prog" "$share/$prog.fish" "$dir/completion/"
		for unit in $(units_of "$prog"); do
			cp "deploy/systemd/$unit" "$dir/systemd/"
		done
		cp "deploy/env/$prog.env" "$dir/$prog.env.example"
		cp README.md "$dir/"
		tar -C "$work/tar" --sort=name --owner=0 --group=0 --numeric-owner --mtime="$mtime" \
			-cf - "$name" | gzip -n -9 >"$out/$name.tar.gz"
	done
done

# Debian packages.
nfpm=$("$GO" tool -n nfpm)
for t in "${targets[@]}"; do
	read -r label goarch goarm debarch suffix <<<"$t"
	for prog in tunnel tunneld; do
		section=1 envfile=/etc/tunnel/tunnel.env
		what="self-hosted HTTPS tunnel client: local services at NAME.DOMAIN"
		if [[ $prog == tunneld ]]; then
			section=8 envfile=/etc/tunneld/env
			what="self-hosted HTTPS tunnel server: serves NAME.DOMAIN for tunnel"
		fi
		cpu="linux/$goarch"
		[[ $goarm != - ]] && cpu="ARMv$goarm (GOARM=$goarm)"
		cfg=$work/nfpm-$prog-$label.yaml
		{
			cat <<-YAML
				name: $prog
				arch: $debarch
				platform: linux
				version: "$VERSION"
				version_schema: none
				section: net
				priority: optional
				maintainer: "$maintainer"
				homepage: https://github.com/tunnelhq/tunnel
				mtime: "$(date -u -d "$mtime" +%Y-%m-%dT%H:%M:%SZ)"
				description: |-
				  $what
				  Built for $cpu, static. Installs the systemd units but neither
				  enables nor starts them: write $envfile, then
				  systemctl enable --now (see man $prog).
				contents:
				  - src: $work/bin/linux-$label/$prog
				    dst: /usr/bin/$prog
				    file_info: {mode: 0755}
				  - src: deploy/env/$prog.env
				    dst: $envfile
				    type: config
				    file_info: {mode: 0600}
				  - src: $share/$prog.$section.gz
				    dst: /usr/share/man/man$section/$prog.$section.gz
				    file_info: {mode: 0644}
				  - src: $share/$prog.bash
				    dst: /usr/share/bash-completion/completions/$prog
				    file_info: {mode: 0644}
				  - src: $share/_$prog
				    dst: /usr/share/zsh/vendor-completions/_$prog
				    file_info: {mode: 0644}
				  - src: $share/$prog.fish
				    dst: /usr/share/fish/vendor_completions.d/$prog.fish
				    file_info: {mode: 0644}
			YAML
			for unit in $(units_of "$prog"); do
				cat <<-YAML
					  - src: $work/systemd/$unit
					    dst: /usr/lib/systemd/system/$unit
					    file_info: {mode: 0644}
				YAML
			done
			cat <<-YAML
				scripts:
				  postinstall: deploy/deb/postinst
				  preremove: deploy/deb/$prog.prerm
				  postremove: deploy/deb/$prog.postrm
			YAML
			if [[ $label == armv7 ]]; then
				echo "  preinstall: deploy/deb/preinst-armv7"
			fi
		} >"$cfg"
		"$nfpm" package --config "$cfg" --packager deb --target "$out/${prog}_${VERSION}_$suffix.deb" >/dev/null
		echo "dist: $out/${prog}_${VERSION}_$suffix.deb"
	done
done

"$GO" run ./scripts/sbom -name tunnel -version "$VERSION" -o "$out/tunnel_$VERSION.spdx.json" "$work"/bin/*/*

(cd "$out" && sha256sum -- *.tar.gz *.deb *.spdx.json >SHA256SUMS)
rm -rf "$work"
ls -l "$out"
