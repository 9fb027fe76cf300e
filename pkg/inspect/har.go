package inspect

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/), the fields
// browsers' developer tools import.
type harFile struct {
	Log harLog `json:"log"`
}

type harLog struct {
	Version string     `json:"version"`
	Creator harCreator `json:"creator"`
	Entries []harEntry `json:"entries"`
}

type harCreator struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type harEntry struct {
	StartedDateTime string      `json:"startedDateTime"`
	Time            float64     `json:"time"`
	Request         harRequest  `json:"request"`
	Response        harResponse `json:"response"`
	Cache           struct{}    `json:"cache"`
	Timings         harTimings  `json:"timings"`
	Comment         string      `json:"comment,omitempty"`
}

type harNV struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type harRequest struct {
	Method      string       `json:"method"`
	URL         string       `json:"url"`
	HTTPVersion string       `json:"httpVersion"`
	Cookies     []harNV      `json:"cookies"`
	Headers     []harNV      `json:"headers"`
	QueryString []harNV      `json:"queryString"`
	PostData    *harPostData `json:"postData,omitempty"`
	HeadersSize int          `json:"headersSize"`
	BodySize    int64        `json:"bodySize"`
}

type harPostData struct {
	MimeType string `json:"mimeType"`
	Text     string `json:"text"`
	Comment  string `json:"comment,omitempty"`
}

type harResponse struct {
	Status      int        `json:"status"`
	StatusText  string     `json:"statusText"`
	HTTPVersion string     `json:"httpVersion"`
	Cookies     []harNV    `json:"cookies"`
	Headers     []harNV    `json:"headers"`
	Content     harContent `json:"content"`
	RedirectURL string     `json:"redirectURL"`
	HeadersSize int        `json:"headersSize"`
	BodySize    int64      `json:"bodySize"`
}

type harContent struct {
	Size     int64  `json:"size"`
	MimeType string `json:"mimeType"`
	Text     string `json:"text,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	Comment  string `json:"comment,omitempty"`
}

type harTimings struct {
	Send    float64 `json:"send"`
	Wait    float64 `json:"wait"`
	Receive float64 `json:"receive"`
}

func harHeaders(h http.Header) []harNV {
	out := []harNV{}
	for _, kv := range headerList(h) {
		out = append(out, harNV{kv[0], kv[1]})
	}
	return out
}

func harOf(exs []*Exchange, version string) harFile {
	f := harFile{Log: harLog{Version: "1.2", Creator: harCreator{Name: "tunnel", Version: version}, Entries: []harEntry{}}}
	for _, e := range exs {
		f.Log.Entries = append(f.Log.Entries, harEntryOf(e))
	}
	return f
}

func harEntryOf(e *Exchange) harEntry {
	scheme := "http"
	if p := e.ReqHeader.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	ms := float64(e.Duration.Microseconds()) / 1000
	en := harEntry{
		StartedDateTime: e.Start.Format(time.RFC3339Nano),
		Time:            ms,
		Timings:         harTimings{Send: 0, Wait: ms, Receive: 0},
		Comment:         e.Err,
		Request: harRequest{
			Method: e.Method, URL: scheme + "://" + e.Host + e.URL, HTTPVersion: e.Proto,
			Cookies: []harNV{}, Headers: harHeaders(e.ReqHeader), QueryString: []harNV{},
			HeadersSize: -1, BodySize: e.ReqBody.Size,
		},
		Response: harResponse{
			Status: e.Status, StatusText: http.StatusText(e.Status), HTTPVersion: e.RespProto,
			Cookies: []harNV{}, Headers: harHeaders(e.RespHeader), RedirectURL: e.RespHeader.Get("Location"),
			HeadersSize: -1, BodySize: e.RespBody.Size,
		},
	}
	if e.ReplayOf != 0 {
		en.Comment = strings.TrimSpace("replay " + en.Comment)
	}
	if u, err := url.ParseRequestURI(e.URL); err == nil {
		for k, vs := range u.Query() {
			for _, v := range vs {
				en.Request.QueryString = append(en.Request.QueryString, harNV{k, v})
			}
		}
	}
	if e.ReqBody.Size > 0 {
		data, _ := decoded(e.ReqHeader.Get("Content-Encoding"), e.ReqBody)
		en.Request.PostData = &harPostData{MimeType: e.ReqHeader.Get("Content-Type"), Text: string(data)}
		if e.ReqBody.Truncated() {
			en.Request.PostData.Comment = "truncated"
		}
	}
	if e.Status == 0 {
		en.Response.HTTPVersion = "HTTP/1.1"
	}
	c := harContent{Size: e.RespBody.Size, MimeType: e.RespHeader.Get("Content-Type")}
	if data, _ := decoded(e.RespHeader.Get("Content-Encoding"), e.RespBody); len(data) > 0 {
		c.Size = int64(len(data))
		if k := bodyKind(c.MimeType, data); k == "image" || k == "binary" {
			c.Text, c.Encoding = base64.StdEncoding.EncodeToString(data), "base64"
		} else {
			c.Text = string(data)
		}
	}
	if e.RespBody.Truncated() {
		c.Comment = "truncated"
	}
	en.Response.Content = c
	return en
}
