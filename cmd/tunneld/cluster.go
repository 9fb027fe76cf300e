package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/certpool"
	"github.com/tunnelhq/tunnel/pkg/cluster"
	"github.com/tunnelhq/tunnel/pkg/clustercert"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/peer"
)

func clusterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "cluster-etcd", EnvVars: []string{"TUNNELD_CLUSTER_ETCD"},
			Usage: "etcd client URLs (comma-separated or repeated): run as one node of a cluster sharing its names in etcd; without it tunneld is a single node and uses no etcd"},
		&cli.StringFlag{Name: "cluster-etcd-ca", EnvVars: []string{"TUNNELD_CLUSTER_ETCD_CA"},
			Usage: "PEM CA that signed the etcd servers' certificates (turns on TLS to etcd)"},
		&cli.StringFlag{Name: "cluster-etcd-cert", EnvVars: []string{"TUNNELD_CLUSTER_ETCD_CERT"},
			Usage: "PEM client certificate for etcd, with --cluster-etcd-key"},
		&cli.StringFlag{Name: "cluster-etcd-key", EnvVars: []string{"TUNNELD_CLUSTER_ETCD_KEY"},
			Usage: "PEM private key of --cluster-etcd-cert"},
		&cli.StringFlag{Name: "cluster-node", EnvVars: []string{"TUNNELD_CLUSTER_NODE"}, DefaultText: "the host name",
			Usage: "this node's name, unique in the cluster"},
		&cli.StringFlag{Name: "cluster-advertise", EnvVars: []string{"TUNNELD_CLUSTER_ADVERTISE"}, DefaultText: "--cluster-listen, if it names a host",
			Usage: "host:port other nodes dial to reach this node's --cluster-listen"},
		&cli.StringFlag{Name: "cluster-listen", EnvVars: []string{"TUNNELD_CLUSTER_LISTEN"},
			Usage: "address of the node port other nodes forward visitors through, host:port (open it to the other nodes only)"},
		&cli.StringFlag{Name: "cluster-ca", EnvVars: []string{"TUNNELD_CLUSTER_CA"},
			Usage: "PEM cluster CA: nodes then also show each other certificates it signed (--cluster-cert) on the node port, checked before the secret"},
		&cli.StringFlag{Name: "cluster-cert", EnvVars: []string{"TUNNELD_CLUSTER_CERT"},
			Usage: "PEM certificate of this node, signed by --cluster-ca, with --cluster-key"},
		&cli.StringFlag{Name: "cluster-key", EnvVars: []string{"TUNNELD_CLUSTER_KEY"},
			Usage: "PEM private key of --cluster-cert"},
		&cli.StringFlag{Name: "cluster-secret-file", EnvVars: []string{"TUNNELD_CLUSTER_SECRET_FILE"},
			Usage: "file holding the secret every node of the cluster shares, proved on the node port (required with --cluster-etcd; at least 32 bytes, e.g. \"head -c 32 /dev/urandom | base64\"; not readable by other users)"},
	}
}

// clusterSetup is what the cluster flags configure: the cluster's Config,
// the node port and the nodes' shared secret.
type clusterSetup struct {
	Config cluster.Config
	Listen string
	Secret []byte
	// CA and Cert, both or neither: the node port's mutual TLS.
	CA   *x509.CertPool
	Cert *tls.Certificate
}

// clusterConfig reads the cluster flags; nil without --cluster-etcd, in
// which case the other cluster flags must not be set either.
func clusterConfig(c *cli.Context, log zerolog.Logger, hold time.Duration) (*clusterSetup, error) {
	var endpoints []string
	for _, v := range c.StringSlice("cluster-etcd") {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				endpoints = append(endpoints, u)
			}
		}
	}
	if len(endpoints) == 0 {
		for _, f := range []string{"cluster-etcd-ca", "cluster-etcd-cert", "cluster-etcd-key", "cluster-node",
			"cluster-advertise", "cluster-listen", "cluster-secret-file", "cluster-ca", "cluster-cert", "cluster-key"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s needs --cluster-etcd", f)
			}
		}
		return nil, nil
	}
	cs := &clusterSetup{Config: cluster.Config{Endpoints: endpoints, Hold: hold, Log: log}}
	tlsCfg, err := etcdTLS(c.String("cluster-etcd-ca"), c.String("cluster-etcd-cert"), c.String("cluster-etcd-key"))
	if err != nil {
		return nil, err
	}
	cs.Config.TLS = tlsCfg
	cs.Config.Node = c.String("cluster-node")
	if cs.Config.Node == "" {
		if cs.Config.Node, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("--cluster-node: no host name to default to: %w", err)
		}
	}
	cs.Listen = c.String("cluster-listen")
	if cs.Listen == "" {
		return nil, errors.New("--cluster-listen is required with --cluster-etcd: the node port other nodes forward visitors through")
	}
	if err := checkHostPort(cs.Listen, true); err != nil {
		return nil, fmt.Errorf("--cluster-listen: %w", err)
	}
	cs.Config.Addr = c.String("cluster-advertise")
	if cs.Config.Addr == "" {
		if host, _, _ := net.SplitHostPort(cs.Listen); host != "" && !net.ParseIP(host).IsUnspecified() {
			cs.Config.Addr = cs.Listen
		} else {
			return nil, errors.New("--cluster-advertise is required when --cluster-listen names no host: the address other nodes dial")
		}
	}
	if err := checkHostPort(cs.Config.Addr, false); err != nil {
		return nil, fmt.Errorf("--cluster-advertise: %w", err)
	}
	if strings.Contains(cs.Config.Node, "/") {
		return nil, fmt.Errorf("--cluster-node %q: a node name cannot hold '/'", cs.Config.Node)
	}
	f := c.String("cluster-secret-file")
	if f == "" {
		return nil, errors.New("--cluster-secret-file is required with --cluster-etcd: the secret the nodes prove to each other on the node port")
	}
	if cs.Secret, err = peer.ReadSecret(f); err != nil {
		return nil, fmt.Errorf("--cluster-secret-file: %w", err)
	}
	if cs.CA, cs.Cert, err = nodeTLS(c.String("cluster-ca"), c.String("cluster-cert"), c.String("cluster-key")); err != nil {
		return nil, err
	}
	return cs, nil
}

// nodeTLS reads the node port's cluster CA and this node's certificate;
// nil, nil without them.
func nodeTLS(ca, cert, key string) (*x509.CertPool, *tls.Certificate, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil, nil
	}
	if ca == "" || cert == "" || key == "" {
		return nil, nil, errors.New("--cluster-ca, --cluster-cert and --cluster-key go together")
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, nil, fmt.Errorf("--cluster-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("--cluster-ca %s: no PEM certificate in it", ca)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, nil, fmt.Errorf("--cluster-cert/--cluster-key: %w", err)
	}
	return pool, &pair, nil
}

// checkHostPort checks a host:port; listen allows an empty host (all
// interfaces).
func checkHostPort(s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("%q: port must be 1 to 65535", s)
	}
	if host == "" && !listen {
		return fmt.Errorf("%q: no host", s)
	}
	return nil
}

// etcdTLS builds the etcd client's TLS config from the flags; nil (plain)
// when none is set.
func etcdTLS(ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("--cluster-etcd-cert and --cluster-etcd-key go together")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pool, err := certpool.WithFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--cluster-etcd-ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--cluster-etcd-cert/--cluster-etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// clusterJoinTimeout bounds joining the cluster at startup: etcd must
// answer by then, or tunneld exits (its supervisor restarts it).
const clusterJoinTimeout = 15 * time.Second

// clusterNode is this tunneld's part of a cluster: its place in etcd's
// name table, its links to the other nodes and the node port they come in
// on, and with ACME the certificate store the nodes share.
type clusterNode struct {
	cl     *cluster.Cluster
	links  *peer.Links
	ln     net.Listener
	store  *clustercert.Store // nil without ACME
	served chan error         // the node port's Serve, once started
}

// startClusterNode binds the node port, joins the cluster and points cfg
// at it: the registry becomes the cluster's, forwarding through the node
// links, and ACME keeps its account, certificates and challenges in etcd.
// open serves the streams other nodes forward here; the node port accepts
// nothing until serve.
func startClusterNode(ctx context.Context, cs *clusterSetup, cfg *edge.Config, log zerolog.Logger, open peer.OpenFunc) (*clusterNode, error) {
	ln, err := net.Listen("tcp", cs.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (--cluster-listen): %w", cs.Listen, err)
	}
	jctx, cancel := context.WithTimeout(ctx, clusterJoinTimeout)
	defer cancel()
	cl, err := cluster.Open(jctx, cs.Config)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("--cluster-etcd: %w", err)
	}
	n := &clusterNode{cl: cl, ln: ln}
	pc := peer.DefaultConfig()
	pc.Node = cs.Config.Node
	pc.Secret = cs.Secret
	pc.CA, pc.Certificate = cs.CA, cs.Cert
	pc.Logger = log
	pc.Open = open
	if n.links, err = peer.New(pc); err != nil {
		n.Close()
		return nil, err
	}
	cfg.Registry = edge.NewClusterRegistry(cl, n.links, log)
	if cfg.ACME != nil {
		if n.store, err = clustercert.New(clustercert.Config{Client: cl.Client()}); err != nil {
			n.Close()
			return nil, err
		}
		n.store.Configure(cfg.ACME)
	}
	log.Info().Str("node", cs.Config.Node).Str("addr", ln.Addr().String()).Str("advertise", cs.Config.Addr).Msg("cluster node port serving")
	return n, nil
}

// serve serves the node port until ctx ends or it fails. The links stay
// up after ctx ends, for the requests in flight through them during the
// edge's graceful shutdown; Close ends them.
func (n *clusterNode) serve(ctx context.Context) error {
	n.served = make(chan error, 1)
	go func() { n.served <- n.links.Serve(n.ln) }()
	select {
	case err := <-n.served:
		n.served <- err // for Close
		if err != nil {
			return fmt.Errorf("--cluster-listen: %w", err)
		}
		return nil
	case <-ctx.Done():
		return nil
	}
}

// Close leaves the cluster: the node links end (and with them the node
// port), the certificate store lets go of its locks, and the lease is
// revoked, which puts this node's names on hold for their owners. Safe to
// call twice.
func (n *clusterNode) Close() error {
	if n.links != nil {
		n.links.Close()
		if n.served != nil {
			<-n.served
			n.served <- nil
		}
	} else {
		n.ln.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
	return n.cl.Close()
}
