// Command beats-server is skiff's stand-in for a Logstash Beats input: a lumberjack v2 server
// built on Elastic's own protocol library (github.com/elastic/go-lumber), so the agent's
// Logstash output is tested against the same code that Beats' tests use.
//
// Every event of a batch is appended to the output file as one NDJSON line, the file is
// fsynced, and only then is the batch acknowledged: the file holds exactly what the client was
// told is safe, which is what an at-least-once test needs to check.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/elastic/go-lumber/lj"
	v2 "github.com/elastic/go-lumber/server/v2"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:15044", "address to accept lumberjack v2 clients on")
	output := flag.String("output", "events.ndjson", "NDJSON file that acknowledged events are appended to")
	certFile := flag.String("tls-cert", "", "PEM server certificate; with -tls-key, serve TLS instead of plain TCP")
	keyFile := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()

	if err := run(*listen, *output, *certFile, *keyFile); err != nil {
		log.Fatal(err)
	}
}

func run(listen, output, certFile, keyFile string) error {
	out, err := os.OpenFile(output, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()

	opts := []v2.Option{v2.JSONDecoder(compactJSON)}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("loading TLS key pair: %w", err)
		}
		opts = append(opts, v2.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
	}

	server, err := v2.ListenAndServe(listen, opts...)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", listen, err)
	}
	defer server.Close()
	log.Printf("lumberjack v2 server on %s (tls: %t), writing %s", listen, certFile != "", output)

	// One receiver: batches from all connections are written one after another, never interleaved.
	for batch := range server.ReceiveChan() {
		if err := write(out, batch); err != nil {
			return fmt.Errorf("writing %s: %w", output, err)
		}
		batch.ACK()
	}
	return nil
}

// write appends every event of batch as one line and syncs the file before it returns.
func write(out *os.File, batch *lj.Batch) error {
	var lines bytes.Buffer
	for _, event := range batch.Events {
		lines.Write(event.([]byte))
		lines.WriteByte('\n')
	}
	if _, err := out.Write(lines.Bytes()); err != nil {
		return err
	}
	return out.Sync()
}

// compactJSON keeps an event as the client's own JSON, only made one line, instead of the
// library's default json.Unmarshal: decoding into interface{} would turn integers into float64
// and reorder keys. It also rejects invalid JSON, as Logstash does.
func compactJSON(data []byte, event interface{}) error {
	var line bytes.Buffer
	if err := json.Compact(&line, data); err != nil {
		return err
	}
	*event.(*interface{}) = line.Bytes()
	return nil
}
