package clustercert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tunnelhq/tunnel/pkg/certs"
)

// maxOrderLogSize bounds the order budget's record: one entry per order
// of the last week, at most the budget (OrdersPerWeek, 40 by default) of
// them, about 150 bytes each; under etcd's default request limit of
// 1.5 MiB even for a budget of several thousand.
const maxOrderLogSize = 1 << 20

// updateAttempts bounds OrderLog.Update's retries when other nodes change
// the record at the same moment: each retry means another node's update
// went through, so a handful suffices for any cluster of a sensible size.
const updateAttempts = 16

// OrderLog is certs' order budget record in etcd, one key holding every
// node's orders of the last week as JSON, updated by compare-and-swap on
// the key's revision. Safe for concurrent use; no Close.
type OrderLog struct {
	cli *clientv3.Client
	key string
}

var _ certs.OrderLog = (*OrderLog)(nil)

// NewOrderLog returns the record stored at key. It contacts nothing.
func NewOrderLog(cli *clientv3.Client, key string) *OrderLog {
	return &OrderLog{cli: cli, key: key}
}

// Update implements certs.OrderLog.
func (l *OrderLog) Update(ctx context.Context, fn func([]certs.Order) ([]certs.Order, error)) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for range updateAttempts {
		resp, err := l.cli.Get(ctx, l.key)
		if err != nil {
			return fmt.Errorf("clustercert: order log: %w", err)
		}
		var orders []certs.Order
		var rev int64 // 0: no record yet, which a compare on ModRevision matches
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			if err := json.Unmarshal(resp.Kvs[0].Value, &orders); err != nil {
				// A record that cannot be decoded (another version's)
				// would refuse every order for good: start a new one. The
				// budget forgets this week's orders once; the CA's own
				// limit still holds.
				orders = nil
			}
		}
		out, err := fn(orders)
		if err != nil {
			return err
		}
		data, err := json.Marshal(out)
		if err != nil {
			return fmt.Errorf("clustercert: order log: %w", err)
		}
		if len(data) > maxOrderLogSize {
			return fmt.Errorf("clustercert: order log: %d bytes, more than %d", len(data), maxOrderLogSize)
		}
		txn, err := l.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(l.key), "=", rev)).
			Then(clientv3.OpPut(l.key, string(data))).Commit()
		if err != nil {
			return fmt.Errorf("clustercert: order log: %w", err)
		}
		if txn.Succeeded {
			return nil
		}
	}
	return errors.New("clustercert: order log: changed by other nodes at every attempt")
}
