// Command etcd runs a single-member etcd cluster on loopback for skiff's kube-apiserver test
// peer: etcd's own server through its embed package, configured by a few flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "folder of the member's data (required)")
	client := flag.String("listen-client", "127.0.0.1:12379", "host:port for clients (plain HTTP)")
	peer := flag.String("listen-peer", "127.0.0.1:12380", "host:port of the peer protocol, unused by one member")
	flag.Parse()
	if err := run(*dataDir, *client, *peer); err != nil {
		log.Fatal(err)
	}
}

// run serves until SIGTERM or SIGINT, then stops etcd cleanly.
func run(dataDir, client, peer string) error {
	if dataDir == "" {
		return errors.New("--data-dir is required")
	}
	cfg := embed.NewConfig()
	cfg.Name = "skiff"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{{Scheme: "http", Host: client}}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenPeerUrls = []url.URL{{Scheme: "http", Host: peer}}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Test data is thrown away on every start; skipping fsync is what envtest does too, and
	// it keeps the API server fast on a busy disk.
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "warn"

	server, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer server.Close()

	select {
	case <-server.Server.ReadyNotify():
		log.Printf("etcd ready on http://%s", client)
	case <-time.After(60 * time.Second):
		server.Server.Stop()
		return errors.New("etcd took more than 60s to become ready")
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-server.Err():
		return fmt.Errorf("etcd failed: %w", err)
	case sig := <-stop:
		log.Printf("etcd stopping on %v", sig)
		return nil
	}
}
