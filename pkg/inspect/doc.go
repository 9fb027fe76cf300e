// Package inspect is the client's request inspector: it reads the HTTP/1.1
// that flows through each stream of an HTTP tunnel, records every exchange
// (request, response, bodies up to a cap) in a memory bounded store, and
// serves a page and a JSON API to list, search, replay and export them.
//
// Why in the client: the client sits next to the local service, so a
// developer sees what their service received and answered whatever tunneld
// they use, and Replay can send a request again to the local service
// without asking the visitor (a webhook provider, usually) to resend it.
//
// How it reads a stream without changing it: mux pipes each stream through
// a StreamCopier (Inspector.Copier). Each direction reads through a
// bufio.Reader over an io.TeeReader, so every byte is written on, unchanged,
// the moment it is read, and the HTTP parser only watches. The parser is
// the package's own (parse.go), framing bodies by net/http's rules
// (FuzzHeadReader_AsNetHTTP holds it to them), because net/http's
// ReadRequest and ReadResponse allocate a request, a URL and a header map
// for every exchange. Requests are matched to responses in order (HTTP/1.1
// answers in order on a connection). When the parser meets what it cannot
// follow (an upgrade such as a WebSocket after its 101, a malformed
// message, HTTP/2 prior knowledge) the rest of the stream is copied raw, as
// without the inspector.
//
// Memory: every captured byte, bodies and headers, is reserved against
// Config.MaxMemory before it is kept, in flight or stored; the oldest
// exchanges are forgotten to make room. A body is captured up to
// Config.MaxBody; the rest is counted and dropped. So a 1 GiB download
// through the inspector costs its copy buffers and at most MaxBody.
//
// Once the store is full, every exchange evicts one, and the client's
// soft memory limit (the cap plus a little) makes the collector run often
// over a heap that is mostly recordings. So the recording is cheap for the
// collector: a stored exchange is a record, one string holding its fields
// and headers (decoded only for the page and the API), and its bodies'
// bytes, none of which the collector scans; the copier builds no maps or
// strings per header.
//
// Security: the page shows everything visitors sent, tokens included. The
// server answers only a Host that is localhost or an IP address (a web
// page the user visits cannot reach it by DNS rebinding), and with
// Config.Token set it wants that token as a bearer token (or ?token= for
// the page and its event stream, which a browser cannot give headers). The
// command (cmd/tunnel) sets a token whenever it binds off loopback.
//
// The package is client side: it must not import server code (pkg/edge,
// pkg/admin, pkg/token, pkg/limit, pkg/metrics, pkg/certs).
package inspect
