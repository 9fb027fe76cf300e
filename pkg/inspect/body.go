package inspect

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"
)

// maxDecoded bounds a decompressed body: a small gzip can inflate to
// gigabytes.
const maxDecoded = 8 << 20

// decoded returns the body as the service meant it: decompressed when its
// Content-Encoding (contentEncoding) is gzip or deflate (br and zstd are
// shown as sent), and whether it was. A truncated body decompresses as far
// as it goes.
func decoded(contentEncoding string, b Body) ([]byte, bool) {
	enc := strings.ToLower(strings.TrimSpace(contentEncoding))
	var r io.Reader
	switch enc {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b.Data))
		if err != nil {
			return b.Data, false
		}
		r = zr
	case "deflate":
		// RFC 9110's deflate is zlib; some servers send raw deflate.
		if zr, err := zlib.NewReader(bytes.NewReader(b.Data)); err == nil {
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(b.Data))
		}
	default:
		return b.Data, false
	}
	out, _ := io.ReadAll(io.LimitReader(r, maxDecoded))
	if len(out) == 0 && len(b.Data) > 0 {
		return b.Data, false
	}
	return out, true
}

// bodyJSON is a body as the API shows it.
type bodyJSON struct {
	Size        int64  `json:"size"`                // bytes, all of them
	Captured    int    `json:"captured"`            // bytes kept
	Truncated   bool   `json:"truncated,omitempty"` // captured < size
	ContentType string `json:"content_type,omitempty"`
	Encoding    string `json:"encoding,omitempty"` // Content-Encoding
	Decoded     bool   `json:"decoded,omitempty"`  // text/base64 are decompressed
	Kind        string `json:"kind"`               // json, xml, form, text, image, binary or empty
	Text        string `json:"text,omitempty"`     // the body, if it is UTF-8 text
	Base64      string `json:"base64,omitempty"`   // the body, if it is not
}

func makeBodyJSON(h http.Header, b Body) bodyJSON {
	data, dec := decoded(h.Get("Content-Encoding"), b)
	ct := h.Get("Content-Type")
	j := bodyJSON{
		Size: b.Size, Captured: len(b.Data), Truncated: b.Truncated(),
		ContentType: ct, Encoding: h.Get("Content-Encoding"), Decoded: dec,
		Kind: bodyKind(ct, data),
	}
	switch {
	case len(data) == 0:
	case j.Kind == "image" || j.Kind == "binary":
		j.Base64 = base64.StdEncoding.EncodeToString(data)
	default:
		j.Text = string(data)
	}
	return j
}

// bodyKind classifies a body for the page: how to pretty-print it.
func bodyKind(contentType string, data []byte) string {
	if len(data) == 0 {
		return ""
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case strings.HasPrefix(mt, "image/"):
		return "image"
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return "json"
	case mt == "application/xml" || mt == "text/xml" || strings.HasSuffix(mt, "+xml"):
		return "xml"
	case mt == "application/x-www-form-urlencoded":
		return "form"
	}
	if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
		return "binary"
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		return "json"
	}
	return "text"
}
