// Command sbom writes the software bill of materials of a release: an SPDX
// 2.3 JSON document listing each binary given (with its SHA-256) and every
// Go module linked into it, with the Go toolchain that built it.
//
//	go run ./scripts/sbom -name tunnel -version 1.2.0 -o tunnel_1.2.0.spdx.json dist/bin/*/*
//
// It reads the module list the Go linker embeds in each binary
// (debug/buildinfo, what "go version -m" prints), so the SBOM names what
// was really linked, not the wider module graph of go.mod (which also holds
// test and tool dependencies), and it needs nothing beyond the standard
// library, where a CycloneDX or SPDX generator would add a few dozen modules
// to go.mod. make dist runs it (scripts/dist.sh).
package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"
)

func main() {
	name := flag.String("name", "tunnel", "name of the release")
	version := flag.String("version", "", "version of the release")
	out := flag.String("o", "", "output file (default stdout)")
	flag.Parse()
	if err := run(*name, *version, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "sbom:", err)
		os.Exit(1)
	}
}

func run(name, version, out string, bins []string) error {
	if version == "" || len(bins) == 0 {
		return errors.New("want -version and at least one binary: sbom -version VERSION [-name NAME] [-o FILE] BINARY [BINARY]")
	}
	created := time.Now().UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		created = time.Unix(sec, 0).UTC()
	}
	doc, err := build(name, version, created, bins)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	b = append(b, '\n')
	if out == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(out, b, 0o644)
}

// The SPDX 2.3 JSON fields used; see https://spdx.github.io/spdx-spec/v2.3/.
type document struct {
	SPDXVersion       string         `json:"spdxVersion"`
	DataLicense       string         `json:"dataLicense"`
	SPDXID            string         `json:"SPDXID"`
	Name              string         `json:"name"`
	DocumentNamespace string         `json:"documentNamespace"`
	CreationInfo      creationInfo   `json:"creationInfo"`
	Packages          []pkg          `json:"packages"`
	Relationships     []relationship `json:"relationships"`
}

type creationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type pkg struct {
	Name             string        `json:"name"`
	SPDXID           string        `json:"SPDXID"`
	VersionInfo      string        `json:"versionInfo,omitempty"`
	PackageFileName  string        `json:"packageFileName,omitempty"`
	DownloadLocation string        `json:"downloadLocation"`
	FilesAnalyzed    bool          `json:"filesAnalyzed"`
	LicenseConcluded string        `json:"licenseConcluded"`
	LicenseDeclared  string        `json:"licenseDeclared"`
	CopyrightText    string        `json:"copyrightText"`
	Checksums        []checksum    `json:"checksums,omitempty"`
	ExternalRefs     []externalRef `json:"externalRefs,omitempty"`
	Comment          string        `json:"comment,omitempty"`
}

type checksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type externalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type relationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

var idUnsafe = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// spdxID makes an SPDX identifier (letters, digits, "." and "-") from parts.
func spdxID(parts ...string) string {
	id := "SPDXRef"
	for _, p := range parts {
		id += "-" + idUnsafe.ReplaceAllString(p, "-")
	}
	return id
}

func build(name, version string, created time.Time, bins []string) (*document, error) {
	doc := &document{
		SPDXVersion: "SPDX-2.3",
		DataLicense: "CC0-1.0",
		SPDXID:      "SPDXRef-DOCUMENT",
		Name:        name + "-" + version,
		CreationInfo: creationInfo{
			Created:  created.Format(time.RFC3339),
			Creators: []string{"Tool: " + name + "-scripts-sbom"},
		},
	}
	modules := map[string]pkg{} // by SPDX id: one entry for a module every binary links
	sums := sha256.New()
	for _, path := range bins {
		info, err := buildinfo.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read build info of %s: %w", path, err)
		}
		sum, err := fileSHA256(path)
		if err != nil {
			return nil, err
		}
		sums.Write([]byte(sum))
		file := filepath.Base(path)
		if dir := filepath.Base(filepath.Dir(path)); dir != "." {
			file = dir + "/" + file // dist/bin/linux-armv6/tunnel: "linux-armv6/tunnel"
		}
		binID := spdxID("binary", file)
		doc.Packages = append(doc.Packages, pkg{
			Name:             info.Path,
			SPDXID:           binID,
			VersionInfo:      version,
			PackageFileName:  file,
			DownloadLocation: "NOASSERTION",
			LicenseConcluded: "NOASSERTION",
			LicenseDeclared:  "NOASSERTION",
			CopyrightText:    "NOASSERTION",
			Checksums:        []checksum{{"SHA256", sum}},
			ExternalRefs:     []externalRef{purl(info.Main.Path, "v"+version)},
			Comment:          "built with " + info.GoVersion + " " + settings(info),
		})
		doc.Relationships = append(doc.Relationships, relationship{"SPDXRef-DOCUMENT", "DESCRIBES", binID})

		goID := spdxID("go", info.GoVersion)
		modules[goID] = pkg{
			Name: "go", SPDXID: goID, VersionInfo: info.GoVersion,
			DownloadLocation: "https://go.dev/dl/", LicenseConcluded: "NOASSERTION", LicenseDeclared: "BSD-3-Clause",
			CopyrightText: "NOASSERTION", ExternalRefs: []externalRef{purl("stdlib", info.GoVersion)},
			Comment: "the Go toolchain and standard library",
		}
		doc.Relationships = append(doc.Relationships, relationship{binID, "CONTAINS", goID})
		for _, m := range info.Deps {
			if m.Replace != nil {
				m = m.Replace
			}
			id := spdxID("module", m.Path, m.Version)
			modules[id] = pkg{
				Name: m.Path, SPDXID: id, VersionInfo: m.Version,
				DownloadLocation: "https://proxy.golang.org/" + m.Path + "/@v/" + m.Version + ".zip",
				LicenseConcluded: "NOASSERTION", LicenseDeclared: "NOASSERTION", CopyrightText: "NOASSERTION",
				ExternalRefs: []externalRef{purl(m.Path, m.Version)},
				Comment:      "go.sum hash " + m.Sum,
			}
			doc.Relationships = append(doc.Relationships, relationship{binID, "CONTAINS", id})
		}
	}
	ids := make([]string, 0, len(modules))
	for id := range modules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		doc.Packages = append(doc.Packages, modules[id])
	}
	// Unique per release and the same for the same binaries.
	doc.DocumentNamespace = "https://github.com/tunnelhq/tunnel/spdx/" + name + "-" + version + "-" + hex.EncodeToString(sums.Sum(nil))[:16]
	return doc, nil
}

// purl is a package URL for a Go module, or for the standard library
// (path "stdlib").
func purl(path, version string) externalRef {
	return externalRef{"PACKAGE-MANAGER", "purl", "pkg:golang/" + path + "@" + version}
}

// settings names the build's target ("GOOS=linux GOARCH=arm GOARM=6").
func settings(info *buildinfo.BuildInfo) string {
	var s string
	for _, kv := range info.Settings {
		switch kv.Key {
		case "GOOS", "GOARCH", "GOARM", "GOAMD64", "CGO_ENABLED":
			if s != "" {
				s += " "
			}
			s += kv.Key + "=" + kv.Value
		}
	}
	return s
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
