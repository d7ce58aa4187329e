package agent

import (
	"crypto/tls"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/agent/tlsutil"
	"github.com/trellismesh/trellis/raftstore"
)

// tlsConfigs holds the TLS of the cluster traffic; its methods return nil
// when TLS is not configured (and work on a nil receiver).
type tlsConfigs struct {
	conf           *tlsutil.Configurator
	verifyIncoming bool
}

func newTLSConfigs(cfg config.TLSConfig, dc string, logger hclog.Logger) (*tlsConfigs, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	c, err := tlsutil.NewConfigurator(tlsutil.Config{
		CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile,
		VerifyIncoming: cfg.VerifyIncoming, VerifyOutgoing: cfg.VerifyOutgoing, Datacenter: dc,
	}, logger)
	if err != nil {
		return nil, err
	}
	return &tlsConfigs{conf: c, verifyIncoming: cfg.VerifyIncoming}, nil
}

// outgoing is the TLS for dialing servers.
func (t *tlsConfigs) outgoing() *tls.Config {
	if t == nil {
		return nil
	}
	return t.conf.OutgoingConfig()
}

// server is the TLS of a server's port.
func (t *tlsConfigs) server() *raftstore.TLSConfig {
	if t == nil {
		return nil
	}
	return &raftstore.TLSConfig{Incoming: t.conf.IncomingConfig(), Outgoing: t.conf.OutgoingConfig(), RequireIncoming: t.verifyIncoming}
}
