#!/usr/bin/env bash
# make image: container images of tunneld and tunnel, built with podman
# from the binaries in a make dist release (DIR, default dist/), so that an
# image holds the released bytes. IMAGE_PLATFORM picks the platform
# (linux/amd64, linux/arm64, linux/arm/v7 or linux/arm/v6; default this
# machine's). The images are tagged localhost/tunneld:VERSION and
# localhost/tunnel:VERSION; podman save exports them.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-dist}
platform=${IMAGE_PLATFORM:-linux/$(go env GOARCH)}
variant= # podman sets TARGETVARIANT only for arm, and warns when it is unset
case $platform in
linux/amd64) label=amd64 ;;
linux/arm64) label=arm64 ;;
linux/arm/v7) label=armv7 variant=v7 ;;
linux/arm/v6) label=armv6 variant=v6 ;;
*)
	echo "image: IMAGE_PLATFORM $platform: want linux/amd64, linux/arm64, linux/arm/v7 or linux/arm/v6" >&2
	exit 1
	;;
esac
command -v podman >/dev/null || { echo "image: needs podman (apt-get install podman)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin/$label" "$ctx/state"
version=
for prog in tunneld tunnel; do
	tarball=("$dir/${prog}"_*_linux_"$label".tar.gz)
	[[ -f ${tarball[0]} ]] || { echo "image: no $dir/${prog}_*_linux_$label.tar.gz: run make dist first" >&2; exit 1; }
	name=$(basename "${tarball[0]}" .tar.gz)
	version=${name#"${prog}"_}
	version=${version%_linux_*}
	tar -xzf "${tarball[0]}" -C "$ctx" "$name/$prog"
	mv "$ctx/$name/$prog" "$ctx/bin/$label/$prog"
done
cp deploy/container/passwd deploy/container/group "$ctx/"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/" # Debian's ca-certificates
revision=$(git rev-parse HEAD 2>/dev/null || true)
for prog in tunneld tunnel; do
	podman build --quiet --platform "$platform" --build-arg "TARGETVARIANT=$variant" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
		-f "deploy/container/$prog.Containerfile" -t "localhost/$prog:${version//\~/-}" "$ctx"
	echo "image: localhost/$prog:${version//\~/-} ($platform)"
done
